"""Stopping the study: SIGTERM, Ctrl-C or kill -9 of ``python -m swavnb.study`` leaves no step
running and no folder locked, so the same command can run again at once.

The study runs as ``python -m swavnb.study`` with one stand-in step: a headless step, started as
every headless step is, that holds its folder's lock and sleeps (a real step takes minutes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import json, runpy, sys
from pathlib import Path
from typing import Any
from swavnb.study import plan, scheduler

folder, runs = sys.argv[1], sys.argv[2]
step = scheduler.Step(
    "sleep", "stand-in step", {"folder": folder}, Path(folder) / "step.ipynb", lambda: False,
    headless_only=True,
)
plan.plan = lambda *args, **kwargs: [step]
worker = '''
import sys, time
from swavnb.base import cli, folder_lock
from swavnb.study import headless

def sleep(parameters):
    with folder_lock.locked(parameters["folder"], "stand-in step folder"):
        time.sleep(120)

headless.STEPS["sleep"] = sleep
cli.run(headless.main, sys.argv[1:])
'''
scheduler._worker_command = lambda step: [
    sys.executable, "-c", worker, step.notebook, json.dumps(step.parameters)
]
sys.argv = ["python -m swavnb.study", "--preset", "smoke", "--headless", "--runs_dir", runs]
runpy.run_module("swavnb.study", run_name="__main__")
"""


def _start(tmp_path: Path, processes: Any) -> tuple[subprocess.Popen, int]:
    """The study, and the pid of its step's process once that holds its folder."""
    folder, runs = tmp_path / "step", tmp_path / "runs"
    study = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(folder), str(runs)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the holder takes the flock, then writes its record into the file: wait for both
    held = lambda: (
        (folder / ".lock").exists() and processes.held(folder) and (folder / ".lock").read_text()
    )
    if (
        not processes.wait_until(lambda: held() or study.poll() is not None, timeout_s=120)
        or not held()
    ):
        study.kill()
        pytest.fail(f"the stand-in step never started: {study.communicate()}")
    return study, json.loads((folder / ".lock").read_text())["pid"]


def _free(tmp_path: Path, processes: Any) -> bool:
    return not processes.held(tmp_path / "step") and not processes.held(tmp_path / "runs" / "smoke")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopping_the_study_ends_its_steps_frees_their_folders_and_says_so_in_one_line(
    tmp_path, signum, status, processes
):
    study, step = _start(tmp_path, processes)
    try:
        assert processes.held(tmp_path / "runs" / "smoke")  # the study's own lock
        study.send_signal(signum)  # to the study alone, as `kill PID` sends it
        out, err = study.communicate(timeout=60)
        assert study.returncode == status, err
        assert "Traceback" not in err and err.strip().splitlines() == [
            "stopped: the running steps were ended; finished results are kept, rerun the same "
            "command to continue"
        ]
        assert processes.gone(step) and _free(
            tmp_path, processes
        )  # an immediate rerun is not refused:
        again, step = _start(tmp_path, processes)  # its step starts and holds the same folder
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=60)
        assert again.returncode == 143 and processes.gone(step) and _free(tmp_path, processes)
    finally:
        study.kill()
        if not processes.gone(step):
            os.kill(step, signal.SIGKILL)


def test_a_step_stops_when_the_study_is_killed(tmp_path, processes):
    study, step = _start(tmp_path, processes)
    try:
        study.kill()  # kill -9: the study ends nothing itself
        study.communicate(timeout=60)
        assert processes.wait_until(lambda: processes.gone(step), timeout_s=30), (
            "the orphaned step runs on"
        )
        assert _free(tmp_path, processes)
    finally:
        if not processes.gone(step):
            os.kill(step, signal.SIGKILL)

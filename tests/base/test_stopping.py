"""Stopping: SIGTERM is handled as Ctrl-C is, in one line and the status a shell expects, and a
child stops when its parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# a command that holds a folder's lock (swavnb.base.folder_lock) until it is stopped
COMMAND = """
import sys, time
from swavnb.base import cli, folder_lock

def main(argv):
    with folder_lock.locked(sys.argv[1], "test folder"):
        print("holding", flush=True)
        time.sleep(120)

cli.run(main)
"""

# a parent that starts a child told to stop with it (swavnb.base.stopping), then waits
PARENT = """
import os, subprocess, sys, time
child = '''
import os, sys, time
from swavnb.base import cli, folder_lock
from swavnb.base.stopping import stop_with_parent

def main(argv):
    platform = sys.platform
    if sys.argv[2] == "portable":
        sys.platform = "darwin"  # no parent-death signal: the check of os.getppid() alone
    stop_with_parent(int(os.environ["PARENT"]))
    sys.platform = platform
    with folder_lock.locked(sys.argv[1], "test folder"):
        print("holding", flush=True)
        time.sleep(120)

cli.run(main)
'''
env = {**os.environ, "PARENT": str(os.getpid())}
started = subprocess.Popen([sys.executable, "-c", child, *sys.argv[1:]], env=env)
print(started.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_stop_a_command_in_one_line_and_free_its_folder(
    tmp_path, signum, status, processes
):
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert command.stdout.readline().strip() == "holding"
    assert processes.held(tmp_path)
    command.send_signal(signum)
    _, err = command.communicate(timeout=60)
    assert command.returncode == status, err
    assert err.strip() == "interrupted: rerun the same command to resume from the last checkpoint"
    assert not processes.held(tmp_path)


@pytest.mark.parametrize("how", ["parent-death signal", "portable"])
def test_a_child_stops_when_its_parent_is_killed(tmp_path, how, processes):
    if how != "portable" and not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), how.split()[0]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    try:
        assert processes.wait_until(
            lambda: (tmp_path / ".lock").exists() and processes.held(tmp_path)
        )
        parent.kill()  # kill -9: the parent runs no clean-up of its own
        parent.wait()
        assert processes.wait_until(lambda: processes.gone(child), timeout_s=30), (
            "the orphaned child runs on"
        )
        assert not processes.held(tmp_path)
    finally:
        parent.kill()
        if not processes.gone(child):
            os.kill(child, signal.SIGKILL)

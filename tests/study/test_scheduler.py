"""The scheduler: skipping, --force, steps side by side in dependency order, failures and
--keep_going."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from swavnb.base import device
from swavnb.study import scheduler
from swavnb.study.scheduler import Step, StepFailed, run


def _fake_study(tmp_path: Path, executed: list[str], monkeypatch: pytest.MonkeyPatch) -> list[Step]:
    """Three steps whose 'results' are marker files, and an execute that writes them."""

    def fake_execute(step: Step) -> None:
        executed.append(step.name)
        (tmp_path / step.name).write_text("done")

    monkeypatch.setattr(scheduler, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    stale = tmp_path / "old-features.pt"
    stale.write_text("stale")
    return [
        Step("pretrain", "a", {}, tmp_path / "a.ipynb", done("a"), [stale]),
        Step("finetune", "b", {}, tmp_path / "b.ipynb", done("b")),
        Step("results", "c", {}, tmp_path / "c.ipynb", done("c"), refresh=True),
    ]


def test_finished_steps_are_skipped_and_results_refresh_after_any_change(tmp_path, monkeypatch):
    executed: list[str] = []
    steps = _fake_study(tmp_path, executed, monkeypatch)
    lines: list[str] = []
    assert run(steps, log=lines.append) == 3
    assert run(steps, log=lines.append) == 0
    assert sum("skipped" in line for line in lines) == 3
    (tmp_path / "b").unlink()
    assert run(steps, log=lines.append) == 2
    assert executed == ["a", "b", "c", "b", "c"]
    assert (tmp_path / "old-features.pt").is_file()  # only --force removes what a step would reuse


def test_force_redoes_every_step_and_removes_its_stale_files(tmp_path, monkeypatch):
    executed: list[str] = []
    steps = _fake_study(tmp_path, executed, monkeypatch)
    run(steps, log=lambda line: None)
    assert run(steps, force=True, log=lambda line: None) == 3
    assert executed == ["a", "b", "c"] * 2
    assert not (tmp_path / "old-features.pt").exists()


def test_force_evaluations_keeps_the_pretrainings_and_redoes_the_rest(tmp_path, monkeypatch):
    executed: list[str] = []
    steps = _fake_study(tmp_path, executed, monkeypatch)
    evaluation_cache = tmp_path / "features.pt"
    steps[1].stale = [evaluation_cache]
    steps[2].stale = [evaluation_cache]  # listed twice: deleted once, before the first reader
    run(steps, log=lambda line: None)
    evaluation_cache.write_text("extracted before")
    deleted_before = {}
    original = scheduler.execute

    def note_the_cache(step: Step) -> None:
        deleted_before[step.name] = not evaluation_cache.exists()
        original(step)
        evaluation_cache.write_text(f"extracted by {step.name}")

    monkeypatch.setattr(scheduler, "execute", note_the_cache)
    assert run(steps, force="evaluations", log=lambda line: None) == 2
    assert executed == ["a", "b", "c", "b", "c"]
    assert (tmp_path / "old-features.pt").is_file()  # the pretraining's stale files stay
    assert deleted_before == {"b": True, "c": False}  # c reads what b wrote, not a gap
    assert evaluation_cache.read_text() == "extracted by c"
    with pytest.raises(ValueError, match="unknown force 'pretrainings'; choose one of all, eval"):
        run(steps, force="pretrainings", log=lambda line: None)


def test_jobs_run_independent_steps_side_by_side_and_respect_what_each_reads(tmp_path, monkeypatch):
    import threading

    lock, active, peak, order = threading.Lock(), [0], [0], []

    def fake_execute(step: Step) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            order.append(("start", step.name))
        time.sleep(0.05)
        (tmp_path / step.name).write_text("done")
        with lock:
            active[0] -= 1
            order.append(("end", step.name))

    monkeypatch.setattr(scheduler, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    steps = [
        Step("pretrain", "pretrain a", {}, tmp_path / "1", done("pretrain a")),
        Step("pretrain", "pretrain b", {}, tmp_path / "2", done("pretrain b")),
        Step("finetune", "eval a", {}, tmp_path / "3", done("eval a"), after=["pretrain a"]),
        Step("finetune", "eval scratch", {}, tmp_path / "4", done("eval scratch")),
        Step(
            "results",
            "results",
            {},
            tmp_path / "5",
            done("results"),
            refresh=True,
            after=["pretrain a", "pretrain b", "eval a", "eval scratch"],
        ),
    ]
    assert run(steps, jobs=2, log=lambda line: None) == 5
    assert peak[0] == 2  # two at a time, never more
    position = {event: i for i, event in enumerate(order)}
    assert position[("end", "pretrain a")] < position[("start", "eval a")]
    assert all(
        position[("end", name)] < position[("start", "results")]
        for name in steps[3].after + ["eval scratch"]
    )


def test_a_failing_step_stops_new_ones_and_is_reported_after_the_running_finish(
    tmp_path, monkeypatch
):
    def fake_execute(step: Step) -> None:
        if step.name == "bad":
            raise StepFailed("bad failed in notebooks/x.ipynb")
        time.sleep(0.05)
        (tmp_path / step.name).write_text("done")

    monkeypatch.setattr(scheduler, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    steps = [
        Step("pretrain", "bad", {}, tmp_path / "1", done("bad")),
        Step("pretrain", "slow", {}, tmp_path / "2", done("slow")),
        Step("finetune", "later", {}, tmp_path / "3", done("later"), after=["slow"]),
    ]
    with pytest.raises(StepFailed, match="bad failed"):
        run(steps, jobs=2, log=lambda line: None)
    assert (tmp_path / "slow").is_file() and not (tmp_path / "later").exists()


def test_keep_going_leaves_out_only_what_reads_a_failed_step(tmp_path, monkeypatch):
    def fake_execute(step: Step) -> None:
        if step.name == "pretrain bad":
            raise StepFailed("pretrain bad failed in notebooks/pretrain.ipynb")
        if step.name == "eval broken":
            raise StepFailed("eval broken failed in notebooks/finetune.ipynb")
        (tmp_path / step.name).write_text("done")

    monkeypatch.setattr(scheduler, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    steps = [
        Step("pretrain", "pretrain bad", {}, tmp_path / "1", done("pretrain bad")),
        Step("pretrain", "pretrain good", {}, tmp_path / "2", done("pretrain good")),
        Step("finetune", "eval bad", {}, tmp_path / "3", done("eval bad"), after=["pretrain bad"]),
        Step(
            "finetune", "eval good", {}, tmp_path / "4", done("eval good"), after=["pretrain good"]
        ),
        Step("finetune", "eval broken", {}, tmp_path / "5", done("eval broken")),
        Step(
            "results",
            "results",
            {},
            tmp_path / "6",
            done("results"),
            after=["eval bad", "eval good"],
        ),
    ]
    lines = []
    with pytest.raises(StepFailed, match="2 steps failed") as failure:
        run(steps, jobs=2, log=lines.append, keep_going=True)
    assert "pretrain bad failed" in str(failure.value) and "eval broken failed" in str(
        failure.value
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval good", "pretrain good"]
    left_out = [line for line in lines if "left out" in line]
    assert len(left_out) == 2 and left_out[0].endswith("eval bad: left out, needs pretrain bad")
    assert left_out[1].endswith("results: left out, needs eval bad")  # and down the line
    # without keep_going the first failure stops every new step, as before
    for path in tmp_path.iterdir():
        path.unlink()
    lines.clear()
    with pytest.raises(StepFailed, match="pretrain bad failed"):
        run(steps, jobs=1, log=lines.append)
    assert not list(tmp_path.iterdir())
    assert not any("left out" in line for line in lines)
    assert lines[-1] == "5 steps not started after the failure; rerun the same command to go on"


def test_a_dead_kernel_or_a_failed_export_is_a_failure_like_any_other(tmp_path, monkeypatch):
    def fake_execute(step: Step) -> None:
        if step.name == "dies":
            raise RuntimeError("Kernel died before replying to kernel_info")  # papermill's kind
        (tmp_path / step.name).write_text("done")

    def export(step: Step) -> None:
        if step.name == "exported":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(scheduler, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    steps = [
        Step("finetune", name, {}, tmp_path / name, done(name)) for name in ("dies", "exported")
    ]
    steps.append(Step("finetune", "last", {}, tmp_path / "z", done("last")))
    with pytest.raises(StepFailed) as failure:
        run(steps, log=lambda line: None, on_done=export, keep_going=True)
    message = str(failure.value)
    assert message.startswith("2 steps failed")
    assert "dies failed: RuntimeError: Kernel died" in message
    assert "the export after exported failed: OSError" in message
    assert (tmp_path / "exported").is_file() and (tmp_path / "last").is_file()  # results kept


def test_each_job_gets_its_share_of_the_cores_for_threads_and_compile_workers(
    tmp_path, monkeypatch
):
    """Inductor sizes its compile workers from the affinity mask, not OMP_NUM_THREADS: without
    TORCHINDUCTOR_COMPILE_THREADS 4 jobs on 16 cores would start up to 64."""
    import os

    monkeypatch.setattr(device, "available_cores", lambda: 16)  # threads_per_job reads it
    assert scheduler.job_environment(1) == {}
    shared = {
        "OMP_NUM_THREADS": "4",
        "TORCHINDUCTOR_COMPILE_THREADS": "4",
        "SWAVNB_SHARED_WITH_JOBS": "4",  # what a pretraining records: its img/s is time-shared
    }
    assert scheduler.job_environment(4) == shared
    children = []

    class Child:  # the headless step's process
        def __init__(self, command, env, **kwargs):
            children.append(env)
            self.pid = None

        def wait(self):
            return 0

    monkeypatch.setattr(scheduler.subprocess, "Popen", Child)
    steps = [Step("finetune", n, {}, tmp_path / f"{n}.ipynb", lambda: False) for n in "abcd"]
    assert run(steps, jobs=4, headless=True, log=lambda line: None) == 4
    assert len(children) == 4 and all(env.items() >= shared.items() for env in children)
    # and the study's pid, so that it stops when the study dies (swavnb.base.stopping)
    assert all(env["SWAVNB_PARENT_PID"] == str(os.getpid()) for env in children)
    # a notebook's kernel inherits the study's environment: the same, for the run's duration
    seen = []
    monkeypatch.setattr(scheduler, "execute", lambda step: seen.append(dict(os.environ)))
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    assert run(steps, jobs=4, log=lambda line: None) == 4
    assert all(env.items() >= shared.items() for env in seen)
    assert "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ  # and put back afterwards

"""The study's steps and how they run: each is one notebook, executed by papermill or, headless,
through the package's functions in a process of its own; up to N at a time, in plan order, each
after the steps whose results it reads."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from swavnb.base.device import JOBS_ENV, threads_per_job
from swavnb.base.layout import notebooks_folder, project_root, shown
from swavnb.base.stopping import PARENT_ENV, child_processes, end_processes

# the Python running the study (jupyter_client starts python3 as sys.executable), so a study runs
# whether or not `make setup` installed the `swavnb` kernel the notebooks name (swavnb.study.lab)
KERNEL = "python3"
_WORKERS: set[subprocess.Popen] = set()  # the headless steps' processes running now


@dataclass
class Step:
    """One notebook execution of the study."""

    notebook: str  # pretrain | finetune | probes | results
    name: str  # shown in the progress lines
    parameters: dict[str, Any]
    output: Path  # the executed notebook
    done: Callable[[], bool]  # its results already exist
    stale: list[Path] = field(
        default_factory=list
    )  # files --force deletes first, because the step would reuse them
    refresh: bool = False  # rerun whenever an earlier step ran: it gathers their results
    after: list[str] = field(
        default_factory=list
    )  # names of the steps whose results this one reads
    # its notebook draws figures a headless run does not: run the notebook once results exist
    draws: bool = False
    # no notebook of its own (a batch of short evaluations in one process): always headless
    headless_only: bool = False

    @property
    def log_file(self) -> Path:
        """Where a headless run of the step writes its output, beside the executed notebook."""
        return self.output.with_suffix(".log")

    def without_notebook(self, headless: bool) -> bool:
        return headless or self.headless_only

    def have(self, headless: bool) -> bool:
        """Whether its results exist, and its executed notebook where it draws figures (results
        that came from a headless run are drawn by running the notebook)."""
        return self.done() and (
            self.without_notebook(headless) or not self.draws or self.output.is_file()
        )

    def written(self, headless: bool) -> Path:
        """What a run of the step writes as it goes: its log, or its executed notebook."""
        return self.log_file if self.without_notebook(headless) else self.output

    def run(self, environment: dict[str, str], headless: bool) -> None:
        """Run the step: in a process of its own (:func:`execute_headless`, with ``environment``),
        or its notebook by papermill (:func:`execute`)."""
        if self.without_notebook(headless):
            execute_headless(self, environment)
        else:
            execute(self)


# what --force redoes: every step, or all but the pretrainings (the costly part, and the encoders
# every evaluation reads), for evaluation code or settings that changed
FORCE_ALL, FORCE_EVALUATIONS = "all", "evaluations"
FORCE_SCOPES = (FORCE_ALL, FORCE_EVALUATIONS)


def forced(step: Step, force: bool | str) -> bool:
    """Whether ``force`` (False / True / one of :data:`FORCE_SCOPES`) redoes ``step``; raises
    ValueError for any other ``force``."""
    if force not in (False, True, *FORCE_SCOPES):
        raise ValueError(f"unknown force {force!r}; choose one of {', '.join(FORCE_SCOPES)}")
    if force == FORCE_EVALUATIONS:
        return step.notebook != "pretrain"
    return bool(force)


class StepFailed(RuntimeError):
    """A notebook raised: the message names the step, notebook, cell and error."""


def execute(step: Step) -> None:
    """Run one step's notebook with papermill; a raising cell becomes a :class:`StepFailed`."""
    import papermill  # imported here: a headless study (an offline GPU node) has no papermill
    from papermill.exceptions import PapermillExecutionError

    step.output.parent.mkdir(parents=True, exist_ok=True)
    source = notebooks_folder() / f"{step.notebook}.ipynb"
    try:
        papermill.execute_notebook(
            str(source),
            str(step.output),
            parameters=step.parameters,
            kernel_name=KERNEL,
            cwd=str(project_root()),
            progress_bar=False,
            # the kernel's own log would bury the progress lines: start-up warnings (plain-TCP
            # sockets) and the "KeyboardInterrupt caught" that jupyter_client's interrupt before
            # every shutdown makes now and then; a cell's error reaches us through papermill
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    except PapermillExecutionError as error:
        lines = [line.strip() for line in error.source.splitlines() if line.strip()]
        code = [line for line in lines if not line.startswith(("#", "%"))] or lines or [""]
        raise StepFailed(
            f"{step.name} failed in {shown(source)}, cell [{error.exec_count}] ({code[0]!r}): "
            f"{error.ename}: {error.evalue}\nthe executed notebook with the full traceback: "
            f"{step.output}"
        ) from error


def job_environment(jobs: int) -> dict[str, str]:
    """What each of ``jobs`` steps side by side gets in its environment: its share of the cores
    for torch's threads and for Inductor's compile workers (which it would otherwise size from the
    whole affinity mask: 4 jobs on 16 cores would start up to 64), and the count, which a
    pretraining records because its throughput is then time-shared. Nothing for one job."""
    if jobs <= 1:
        return {}
    threads = str(threads_per_job(jobs))
    return {
        "OMP_NUM_THREADS": threads,
        "TORCHINDUCTOR_COMPILE_THREADS": threads,
        JOBS_ENV: str(jobs),
    }


def execute_headless(step: Step, environment: dict[str, str] | None = None) -> None:
    """Run one step through the package's functions (:mod:`swavnb.study.headless`) in a process of
    its
    own, with ``environment`` added to this process's (:func:`job_environment`).

    Its own process gives each concurrent step its own memory and CUDA context; its output goes to
    ``<step output>.log``, whose last lines a failure quotes.
    """
    log_file = step.log_file
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(environment or {}), PARENT_ENV: str(os.getpid())}
    with open(log_file, "w") as out:  # a stream, not a result: written as the step runs
        worker = subprocess.Popen(
            _worker_command(step), cwd=project_root(), env=env, stdout=out, stderr=subprocess.STDOUT
        )
        _WORKERS.add(worker)
        try:
            code = worker.wait()
        finally:
            _WORKERS.discard(worker)
    if code != 0:
        tail = log_file.read_text().strip().splitlines()[-1:] or [""]
        raise StepFailed(
            f"{step.name} failed (headless, exit {code}): {tail[0]}\nits log: {log_file}"
        )


def _worker_command(step: Step) -> list[str]:
    """The command of a headless step's process (:mod:`swavnb.study.headless`)."""
    return [
        sys.executable,
        "-m",
        "swavnb.study.headless",
        step.notebook,
        json.dumps(step.parameters),
    ]


def run(
    steps: Sequence[Step],
    force: bool | str = False,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    headless: bool = False,
    on_done: Callable[[Step], None] = lambda step: None,
    keep_going: bool = False,
) -> int:
    """Execute the steps, skipping those already done (unless :func:`forced`), up to ``jobs`` at a
    time.

    A step starts once the steps it comes ``after`` are finished, in plan order; a ``refresh``
    step (results) also reruns whenever an earlier one ran, so the tables are current. In notebook
    mode a step that ``draws`` also runs when its results exist but its executed notebook does not
    (results that came from a headless run). ``on_done`` is called after each executed step (the
    export). After a failure no new step starts, unless ``keep_going``: then only the steps that
    read the failed one's results are left out (``make -k``), for a run that gets one chance. The
    running steps finish, then the failures are raised together.

    Returns:
        How many steps were executed.
    """
    schedule = _Schedule(steps, force, log, keep_going, headless)
    environment = job_environment(jobs)
    # each step is a process of its own (kernel or worker); a kernel inherits this process's
    # environment, as papermill passes it none
    kernels_inherit = _environment_added({} if headless else environment)
    before = child_processes()
    with kernels_inherit, ThreadPoolExecutor(max_workers=jobs) as pool, _ending_steps(before):
        while (schedule.pending and not schedule.stopped()) or schedule.running:
            schedule.leave_out_blocked()
            while len(schedule.running) < jobs and (step := schedule.next_to_run()):
                schedule.running[pool.submit(step.run, environment, headless)] = (
                    step,
                    time.perf_counter(),
                )
            if schedule.running:
                schedule.collect(wait(schedule.running, return_when=FIRST_COMPLETED).done, on_done)
            elif schedule.pending and not schedule.stopped():
                names = [s.name for s in schedule.pending]
                raise RuntimeError(f"steps {names} wait for steps that are not planned")
    return schedule.end()


class _Schedule:
    """Where a run of the steps stands: what is pending, running, finished and failed, said in
    one numbered line a step."""

    def __init__(
        self,
        steps: Sequence[Step],
        force: bool | str,
        log: Callable[[str], None],
        keep_going: bool,
        headless: bool,
    ) -> None:
        self.force, self.log, self.keep_going, self.headless = force, log, keep_going, headless
        self.start, self.executed = time.perf_counter(), 0
        self.numbered = {step.name: f"[{i}/{len(steps)}]" for i, step in enumerate(steps, 1)}
        self.pending: list[Step] = list(steps)
        self.running: dict[Future, tuple[Step, float]] = {}
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.failures: list[StepFailed] = []
        self.removed: set[Path] = set()  # stale files deleted once per run

    def say(self, step: Step, what: str) -> None:
        elapsed = timedelta(seconds=round(time.perf_counter() - self.start))
        self.log(f"{self.numbered[step.name]} {elapsed} {step.name}{what}")

    def stopped(self) -> bool:
        return bool(self.failures) and not self.keep_going

    def leave_out_blocked(self) -> None:
        """With ``keep_going``, leave out the steps that read a failed one's results, in plan
        order, and so on down the line."""
        while self.keep_going and (
            blocked := [s for s in self.pending if self.failed.intersection(s.after)]
        ):
            for step in blocked:
                self.pending.remove(step)
                needs = ", ".join(sorted(self.failed.intersection(step.after)))
                self.failed.add(step.name)
                self.say(step, f": left out, needs {needs}")

    def next_to_run(self) -> Step | None:
        """The first ready step in plan order that is to run, its stale files deleted where it is
        forced; the ready steps before it whose results exist are skipped."""
        while not self.stopped():
            ready = (s for s in self.pending if all(n in self.finished for n in s.after))
            step = next(ready, None)
            if step is None:
                return None
            self.pending.remove(step)
            have, redo = step.have(self.headless), forced(step, self.force)
            if not redo and not (step.refresh and self.executed) and have:
                self.say(step, ": skipped, results exist")
                self.finished.add(step.name)
                continue
            self.say(step, f" -> {shown(step.written(self.headless))}")
            if redo:
                # once per run: a later step listing the same file would delete what an earlier
                # forced step just rewrote
                for path in set(step.stale) - self.removed:
                    path.unlink(missing_ok=True)
                    self.removed.add(path)
            return step
        return None

    def collect(self, done: set[Future], on_done: Callable[[Step], None]) -> None:
        """The finished steps of ``done``: each a failure, or a step done and then ``on_done``."""
        for future in done:
            step, tic = self.running.pop(future)
            if (error := future.exception()) is not None:
                self.failures.append(_as_step_failure(error, step.name))
                self.failed.add(step.name)
                self.say(step, ": FAILED")
                continue
            self.executed += 1
            self.finished.add(step.name)
            self.say(step, f": done in {time.perf_counter() - tic:.0f} s")
            try:
                on_done(step)
            except Exception as error:  # the export: the step's results stay where they are
                self.failures.append(_as_step_failure(error, f"the export after {step.name}"))
                elapsed = timedelta(seconds=round(time.perf_counter() - self.start))
                self.log(
                    f"{self.numbered[step.name]} {elapsed} the export after {step.name}: FAILED"
                )

    def end(self) -> int:
        """The number of steps executed; raises the failures, together."""
        if self.pending:
            self.log(
                f"{len(self.pending)} steps not started after the failure; rerun the same command "
                "to go on"
            )
        if len(self.failures) == 1:
            raise self.failures[0]
        if self.failures:
            raise StepFailed(
                f"{len(self.failures)} steps failed:\n" + "\n".join(map(str, self.failures))
            )
        return self.executed


@contextlib.contextmanager
def _ending_steps(before: set[int]) -> Iterator[None]:
    """On Ctrl-C or SIGTERM (:class:`swavnb.base.stopping.Terminated`), end the processes the
    steps started (kernels, headless workers; not the ``before`` children) before their threads
    are joined: none runs on unseen, holding its folder's lock."""
    try:
        yield
    except KeyboardInterrupt:
        # the kernels about to end are ours to end: papermill's "Kernel died" lines are noise
        logging.getLogger("papermill").setLevel(logging.CRITICAL)
        workers = {worker.pid for worker in list(_WORKERS)}
        end_processes((child_processes() | workers) - before)
        raise


@contextlib.contextmanager
def _environment_added(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the duration, then what was there before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _as_step_failure(error: BaseException, what: str) -> StepFailed:
    """A step's error as a :class:`StepFailed`: a kernel that died or an OSError is its failure
    too."""
    if isinstance(error, StepFailed):
        return error
    failure = StepFailed(f"{what} failed: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure

"""The whole study, run by executing the notebooks with papermill.

``python -m swavnb.study --preset P [--force] [--augs jitter,flip,swav] [--fractions 0.01,0.1,...]
[--data_root DIR] [--publish]``

Pretrains every aug, evaluates every encoder (random init included) on every label
fraction in both modes, runs the probes, then gathers the tables and figures. Each step
is one executed notebook under ``runs/<preset>/notebooks/``; steps whose results exist
are skipped, so an interrupted study continues where it stopped. Relative paths are taken
from the project root (:mod:`swavnb.layout`), wherever the command runs.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from swavnb.augment import AUGMENTATIONS
from swavnb.checkpoint import CheckpointError, load_checkpoint
from swavnb.config import FRACTIONS, MODES, PRESETS
from swavnb.data import check_fraction
from swavnb.device import hardware
from swavnb.layout import (
    CHECKPOINT,
    KNN,
    METRICS,
    NO_CHECKPOINT,
    RESULT,
    SCRATCH,
    evaluation_folder,
    probes_folder,
    project_root,
    resolve,
    run_folder,
    shown,
)

STUDY_AUGS = ("jitter", "flip", "swav")  # the seed's two strategies, then SwAV's recipe
KERNEL = "python3"
# the run whose executed notebooks --publish copies into notebooks/
PUBLISHED = {
    "pretrain": "pretrain-swav",
    "finetune": "finetune-swav-finetune-0.1",
    "probes": "probes-swav",
    "results": "results",
}


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


def _finished(checkpoint: Path) -> bool:
    try:
        return bool(load_checkpoint(checkpoint)["finished"])
    except CheckpointError:
        return False


def notebooks_folder() -> Path:
    """The study's source notebooks."""
    return project_root() / "notebooks"


def plan(
    preset: str,
    augs: Sequence[str] = STUDY_AUGS,
    fractions: Sequence[float] = FRACTIONS,
    data_root: str = "",
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    figures_dir: str | Path = "figures",
    modes: Sequence[str] = MODES,
) -> list[Step]:
    """Every step of the study in order: pretrain, then finetune / linear, then probes, then
    results.

    Each encoder's evaluations and probes come after its pretraining (``after``), the random-init
    encoder's need none, and results come after everything: what ``--jobs`` may run side by side.

    Relative folders are taken from the project root; notebooks get them relative to it when inside
    it.
    """
    data_root = shown(data_root) if data_root else ""
    run_dir = resolve(runs_dir) / preset
    executed = run_dir / "notebooks"
    steps = []
    for aug in augs:
        out = run_folder(preset, aug, runs_dir)
        steps.append(
            Step(
                "pretrain",
                f"pretrain {aug}",
                {
                    "preset": preset,
                    "aug": aug,
                    "out_dir": shown(out),
                    "data_root": data_root,
                    "figures_dir": shown(figures_dir),
                },
                executed / f"pretrain-{aug}.ipynb",
                lambda out=out: _finished(out / CHECKPOINT),
                # features cached under a checkpoint's path would outlive the weights they came from
                [out / CHECKPOINT, out / METRICS, *out.glob("features-*.pt")],
            )
        )
    encoders = [(aug, shown(run_folder(preset, aug, runs_dir) / CHECKPOINT)) for aug in augs]
    encoders.append((SCRATCH, NO_CHECKPOINT))
    for aug, checkpoint in encoders:
        needs = [] if aug == SCRATCH else [f"pretrain {aug}"]
        for mode in modes:
            for fraction in fractions:
                out = evaluation_folder(run_folder(preset, aug, runs_dir), mode, fraction)
                steps.append(
                    Step(
                        "finetune",
                        f"{mode} {aug} {100 * fraction:g}% labels",
                        {
                            "checkpoint": checkpoint,
                            "fraction": fraction,
                            "mode": mode,
                            "preset": preset,
                            "out_dir": shown(out),
                            "cache_dir": shown(run_folder(preset, aug, runs_dir)),
                            "data_root": data_root,
                        },
                        executed / f"finetune-{aug}-{mode}-{fraction:g}.ipynb",
                        lambda out=out: (out / RESULT).is_file(),
                        after=needs,
                    )
                )
    for aug, checkpoint in encoders:
        out = probes_folder(run_folder(preset, aug, runs_dir))
        steps.append(
            Step(
                "probes",
                f"probes {aug}",
                {
                    "checkpoint": checkpoint,
                    "preset": preset,
                    "out_dir": shown(out),
                    "cache_dir": shown(run_folder(preset, aug, runs_dir)),
                    "data_root": data_root,
                    "figures_dir": shown(figures_dir),
                },
                executed / f"probes-{aug}.ipynb",
                lambda out=out: (out / KNN).is_file(),
                after=[] if aug == SCRATCH else [f"pretrain {aug}"],
                draws=True,
            )
        )
    csv = resolve(results_dir) / preset / "results.csv"
    steps.append(
        Step(
            "results",
            "results",
            {
                "preset": preset,
                "runs_dir": shown(runs_dir),
                "results_dir": shown(results_dir),
                "figures_dir": shown(figures_dir),
            },
            executed / "results.ipynb",
            csv.is_file,
            refresh=True,
            after=[step.name for step in steps],
            draws=True,
        )
    )
    return steps


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
            # the kernel's start-up warnings (plain-TCP sockets) would bury the progress lines
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except PapermillExecutionError as error:
        lines = [line.strip() for line in error.source.splitlines() if line.strip()]
        code = [line for line in lines if not line.startswith(("#", "%"))] or lines or [""]
        raise StepFailed(
            f"{step.name} failed in {shown(source)}, cell [{error.exec_count}] ({code[0]!r}): "
            f"{error.ename}: {error.evalue}\nthe executed notebook with the full traceback: "
            f"{step.output}"
        ) from error


def execute_headless(step: Step, threads: int = 0) -> None:
    """Run one step through the package's functions (:mod:`swavnb.headless`) in a process of its
    own.

    Its own process gives each concurrent step its own memory and CUDA context; its output goes to
    ``<step output>.log``, whose last lines a failure quotes.
    """
    log_file = step.output.with_suffix(".log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    command = [sys.executable, "-m", "swavnb.headless", step.notebook, json.dumps(step.parameters)]
    with open(log_file, "w") as out:
        code = subprocess.run(
            command, cwd=project_root(), env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if code != 0:
        tail = log_file.read_text().strip().splitlines()[-1:] or [""]
        raise StepFailed(
            f"{step.name} failed (headless, exit {code}): {tail[0]}\nits log: {log_file}"
        )


def run(
    steps: Sequence[Step],
    force: bool = False,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    headless: bool = False,
    on_done: Callable[[Step], None] = lambda step: None,
    keep_going: bool = False,
) -> int:
    """Execute the steps, skipping those already done (unless ``force``), up to ``jobs`` at a time.

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
    start, executed, finished, failed = time.perf_counter(), 0, set(), set()
    elapsed = lambda: str(timedelta(seconds=round(time.perf_counter() - start)))
    threads = max(1, available_cores() // jobs) if jobs > 1 else 0
    work = (lambda step: execute_headless(step, threads)) if headless else execute
    numbered = {step.name: f"[{index}/{len(steps)}]" for index, step in enumerate(steps, 1)}
    pending, running, failures = list(steps), {}, []
    stopped = lambda: bool(failures) and not keep_going
    with ThreadPoolExecutor(
        max_workers=jobs
    ) as pool:  # each step is a process of its own (kernel or worker)
        while (pending and not stopped()) or running:
            while blocked := [s for s in pending if failed.intersection(s.after)]:
                for step in blocked:  # in plan order, and so on down the line
                    pending.remove(step)
                    needs = ", ".join(sorted(failed.intersection(step.after)))
                    failed.add(step.name)
                    log(f"{numbered[step.name]} {elapsed()} {step.name}: left out, needs {needs}")
            while not stopped() and len(running) < jobs:
                # the first ready step in plan order, again and again
                step = next((s for s in pending if all(name in finished for name in s.after)), None)
                if step is None:
                    break
                pending.remove(step)
                have = step.done() and (headless or not step.draws or step.output.is_file())
                if not force and not (step.refresh and executed) and have:
                    log(f"{numbered[step.name]} {elapsed()} {step.name}: skipped, results exist")
                    finished.add(step.name)
                    continue
                log(f"{numbered[step.name]} {elapsed()} {step.name} -> {shown(step.output)}")
                if force:
                    for path in step.stale:
                        path.unlink(missing_ok=True)
                running[pool.submit(work, step)] = (step, time.perf_counter())
            if not running:
                if pending and not stopped():
                    raise RuntimeError(
                        f"steps {[s.name for s in pending]} wait for steps that are not planned"
                    )
                continue
            for future in wait(running, return_when=FIRST_COMPLETED).done:
                step, tic = running.pop(future)
                try:
                    future.result()
                except StepFailed as error:
                    failures.append(error)
                    failed.add(step.name)
                    log(f"{numbered[step.name]} {elapsed()} {step.name}: FAILED")
                    continue
                executed += 1
                finished.add(step.name)
                on_done(step)
                log(
                    f"{numbered[step.name]} {elapsed()} {step.name}: "
                    f"done in {time.perf_counter() - tic:.0f} s"
                )
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise StepFailed(f"{len(failures)} steps failed:\n" + "\n".join(map(str, failures)))
    return executed


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, as a container or job scheduler sets
    it), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def bake_parameters(notebook: Any) -> Any:
    """Fold papermill's injected-parameters cell into the ``parameters`` cell and drop it.

    A published notebook's parameters cell then holds the values its outputs came from, so what a
    reader sees is what ran, and what a JupyterLab user edits there is what runs (an injected cell
    below it would override every edit). Only the values change; types and help comments stay.
    """
    cells = notebook.cells
    tags = [cell.get("metadata", {}).get("tags", []) for cell in cells]
    injected = [i for i, t in enumerate(tags) if "injected-parameters" in t]
    declared = [i for i, t in enumerate(tags) if "parameters" in t]
    if not injected:
        return notebook
    if not declared:
        raise ValueError(
            "the notebook has injected parameters but no cell tagged 'parameters' to fold them into"
        )
    values = {}
    for node in ast.parse(cells[injected[0]].source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            values[node.targets[0].id] = ast.get_source_segment(
                cells[injected[0]].source, node.value
            )
    lines = cells[declared[0]].source.split("\n")
    for node in ast.parse(cells[declared[0]].source).body:
        target = (
            node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        )
        if isinstance(target, ast.Name) and target.id in values and node.value is not None:
            row, value = node.lineno - 1, node.value
            if value.end_lineno != node.lineno:
                raise ValueError(
                    f"parameter {target.id!r} spans lines; keep parameters on one line each"
                )
            line = lines[row]
            lines[row] = (
                line[: value.col_offset] + values.pop(target.id) + line[value.end_col_offset :]
            )
    if values:
        raise ValueError(
            f"injected parameters {sorted(values)} are not declared in the parameters cell"
        )
    cells[declared[0]].source = "\n".join(lines)
    del cells[injected[0]]
    return notebook


def publish(
    runs_dir: str | Path,
    preset: str,
    dest: str | Path | None = None,
    sources: dict[str, str] | None = None,
) -> list[Path]:
    """Copy one representative run's executed notebooks over the study's notebooks.

    The injected parameters are folded into each notebook's parameters cell
    (:func:`bake_parameters`).

    Args:
        dest: default the project's ``notebooks/``.
        sources: {notebook: executed notebook name under ``runs_dir/<preset>/notebooks``};
            default :data:`PUBLISHED` (aug swav, fine-tuned on 10 % of the labels).

    Returns:
        The written notebooks.
    """
    import nbformat

    executed = resolve(runs_dir) / preset / "notebooks"
    sources = sources or PUBLISHED
    missing = [name for name in sources.values() if not (executed / f"{name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"cannot publish: {', '.join(missing)} not executed under '{executed}'; "
            "run the study with the swav aug and the 0.1 fraction first"
        )
    written = []
    for notebook, name in sources.items():
        target = resolve(dest or notebooks_folder()) / f"{notebook}.ipynb"
        nbformat.write(
            bake_parameters(nbformat.read(executed / f"{name}.ipynb", as_version=4)), target
        )
        written.append(target)
    return written


def _augs(text: str) -> list[str]:
    augs = [aug.strip() for aug in text.split(",") if aug.strip()]
    unknown = [aug for aug in augs if aug not in AUGMENTATIONS]
    if unknown or not augs:
        raise argparse.ArgumentTypeError(
            f"unknown aug(s) {unknown or text!r}; choose from {', '.join(STUDY_AUGS)}"
        )
    return augs


def _fractions(text: str) -> list[float]:
    try:
        return [check_fraction(float(value)) for value in text.split(",") if value.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _modes(text: str) -> list[str]:
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        raise argparse.ArgumentTypeError(
            f"unknown mode(s) in {text!r}; choose from {', '.join(MODES)}"
        )
    return modes


def _exporter(args: argparse.Namespace) -> Callable[[Step], None]:
    """After each finished step: the results archive again, and a pretraining's model."""
    from swavnb import transfer

    def export(step: Step) -> None:
        if step.notebook == "pretrain":
            transfer.export_model(
                resolve(step.parameters["out_dir"]) / CHECKPOINT,
                args.export,
                step.parameters["aug"],
            )
        transfer.export_results(args.runs_dir, args.preset, args.export)

    return export


def benchmark(runs_dir: str | Path, preset: str, timeout: int = 300) -> Path:
    """Time the training step first (``swavnb.bench``, flip at batch 256) into
    ``runs_dir/<preset>/bench.json``."""
    out = resolve(runs_dir) / preset / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "swavnb.bench",
        "--augs",
        "flip",
        "--batches",
        "256",
        "--json",
        str(out),
    ]
    subprocess.run(command, cwd=project_root(), check=True, timeout=timeout)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swavnb.study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--preset",
        default="quick",
        choices=PRESETS,
        help="size preset of every run (default quick)",
    )
    parser.add_argument(
        "--augs",
        type=_augs,
        default=list(STUDY_AUGS),
        help="comma-separated view strategies, in the order they run "
        f"(default {','.join(STUDY_AUGS)})",
    )
    parser.add_argument(
        "--fractions",
        type=_fractions,
        default=list(FRACTIONS),
        help=f"comma-separated label fractions (default {','.join(f'{f:g}' for f in FRACTIONS)})",
    )
    parser.add_argument(
        "--modes",
        type=_modes,
        default=list(MODES),
        help="evaluation modes (default finetune,linear; finetune alone is the seed's protocol)",
    )
    parser.add_argument(
        "--data_root", default="", help="folder holding cifar-100-python/ (default $SWAVNB_DATA)"
    )
    parser.add_argument("--force", action="store_true", help="redo steps whose results exist")
    parser.add_argument(
        "--keep_going",
        action="store_true",
        help="after a failed step, go on with every step that does not read its results "
        "(for a run that gets one chance); the failures are reported at the end",
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="run the steps through the package's functions, without Jupyter or papermill (figures "
        "are drawn later by the notebooks, after --import)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="steps run side by side as processes (pretrainings, then evaluations of finished "
        "encoders); for a GPU one ResNet-18 cannot fill (default 1)",
    )
    parser.add_argument(
        "--bench", action="store_true", help="first time the training step (swavnb.bench, ~1 min)"
    )
    parser.add_argument(
        "--export",
        default="",
        metavar="DIR",
        help="after every finished step, write the results archive and each model's bf16 parts "
        "here",
    )
    parser.add_argument(
        "--import",
        dest="import_dir",
        default="",
        metavar="DIR",
        help="first unpack an --export folder into the runs folder "
        "(then only what is missing runs)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="afterwards copy the executed swav notebooks (finetune at 10%% labels) "
        "into notebooks/",
    )
    parser.add_argument(
        "--runs_dir",
        default="runs",
        help="run outputs and executed notebooks go to RUNS_DIR/<preset>",
    )
    parser.add_argument(
        "--results_dir", default="results", help="tables go to RESULTS_DIR/<preset>"
    )
    parser.add_argument(
        "--figures_dir", default="figures", help="figures go to FIGURES_DIR/<preset>"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    steps = plan(
        args.preset,
        args.augs,
        args.fractions,
        args.data_root,
        args.runs_dir,
        args.results_dir,
        args.figures_dir,
        args.modes,
    )
    mode = "headless" if args.headless else "notebooks"
    print(
        f"study {args.preset}: {len(steps)} steps ({mode}, {args.jobs} at a time) "
        f"on {hardware()}; runs in {resolve(args.runs_dir) / args.preset}",
        flush=True,
    )
    try:
        if args.import_dir:
            from swavnb.transfer import import_study

            imported = import_study(args.import_dir, args.runs_dir, args.preset)
            print(
                f"imported {len(imported['files'])} result files and "
                f"{len(imported['checkpoints'])} models from {resolve(args.import_dir)}",
                flush=True,
            )
        if args.bench:
            try:
                print(f"benchmark: {benchmark(args.runs_dir, args.preset)}", flush=True)
            except subprocess.SubprocessError as error:  # a measurement beside the study
                print(f"benchmark failed ({error}); the study goes on", file=sys.stderr, flush=True)
            if args.export:
                _exporter(args)(Step("bench", "bench", {}, Path(), lambda: True))
        run(
            steps,
            args.force,
            log=lambda line: print(line, flush=True),
            jobs=args.jobs,
            headless=args.headless,
            on_done=_exporter(args) if args.export else lambda step: None,
            keep_going=args.keep_going,
        )
    except (StepFailed, FileNotFoundError, ValueError, subprocess.SubprocessError) as error:
        print(
            f"error: {error}\nfinished results are kept: rerun the same command to continue",
            file=sys.stderr,
        )
        return 1
    if args.publish:
        try:
            print("published:", ", ".join(map(str, publish(args.runs_dir, args.preset))))
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

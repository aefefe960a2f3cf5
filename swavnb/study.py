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
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from swavnb.augment import AUGMENTATIONS
from swavnb.checkpoint import CheckpointError, load_checkpoint
from swavnb.config import FRACTIONS, MODES, PRESETS
from swavnb.data import check_fraction
from swavnb.distributed import device_name, pick_device
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
from swavnb.precision import precision_name, use_bf16

STUDY_AUGS = ("jitter", "flip", "swav")  # the seed's two strategies, then SwAV's recipe
KERNEL = "python3"
# the run whose executed notebooks --publish copies into notebooks/
PUBLISHED = {"pretrain": "pretrain-swav", "finetune": "finetune-swav-finetune-0.1", "probes": "probes-swav",
             "results": "results"}


def hardware(device: str = "auto", amp: str | bool = "auto") -> str:
    """What ``device`` (auto / cuda / cpu) runs on and in which precision ``amp`` resolves to there, in words."""
    resolved = pick_device(device)
    return f"{device_name(resolved)}, {precision_name(use_bf16(amp, resolved))}"


@dataclass
class Step:
    """One notebook execution of the study."""

    notebook: str  # pretrain | finetune | probes | results
    name: str  # shown in the progress lines
    parameters: dict[str, Any]
    output: Path  # the executed notebook
    done: Callable[[], bool]  # its results already exist
    stale: list[Path] = field(default_factory=list)  # files --force deletes first, because the step would reuse them
    refresh: bool = False  # rerun whenever an earlier step ran: it gathers their results


def _finished(checkpoint: Path) -> bool:
    try:
        return bool(load_checkpoint(checkpoint)["finished"])
    except CheckpointError:
        return False


def notebooks_folder() -> Path:
    """The study's source notebooks."""
    return project_root() / "notebooks"


def plan(preset: str, augs: Sequence[str] = STUDY_AUGS, fractions: Sequence[float] = FRACTIONS,
         data_root: str = "", runs_dir: str | Path = "runs", results_dir: str | Path = "results",
         figures_dir: str | Path = "figures") -> list[Step]:
    """Every step of the study in order: pretrain, then finetune / linear, then probes, then results.

    Relative folders are taken from the project root; notebooks get them relative to it when inside it.
    """
    data_root = shown(data_root) if data_root else ""
    run_dir = resolve(runs_dir) / preset
    executed = run_dir / "notebooks"
    steps = []
    for aug in augs:
        out = run_folder(preset, aug, runs_dir)
        steps.append(Step(
            "pretrain", f"pretrain {aug}",
            {"preset": preset, "aug": aug, "out_dir": shown(out), "data_root": data_root,
             "figures_dir": shown(figures_dir)},
            executed / f"pretrain-{aug}.ipynb", lambda out=out: _finished(out / CHECKPOINT),
            # features cached under a checkpoint's path would outlive the weights they came from
            [out / CHECKPOINT, out / METRICS, *out.glob("features-*.pt")],
        ))
    encoders = [(aug, shown(run_folder(preset, aug, runs_dir) / CHECKPOINT)) for aug in augs]
    encoders.append((SCRATCH, NO_CHECKPOINT))
    for aug, checkpoint in encoders:
        for mode in MODES:
            for fraction in fractions:
                out = evaluation_folder(run_folder(preset, aug, runs_dir), mode, fraction)
                steps.append(Step(
                    "finetune", f"{mode} {aug} {100 * fraction:g}% labels",
                    {"checkpoint": checkpoint, "fraction": fraction, "mode": mode, "preset": preset,
                     "out_dir": shown(out), "cache_dir": shown(run_folder(preset, aug, runs_dir)),
                     "data_root": data_root},
                    executed / f"finetune-{aug}-{mode}-{fraction:g}.ipynb", lambda out=out: (out / RESULT).is_file(),
                ))
    for aug, checkpoint in encoders:
        out = probes_folder(run_folder(preset, aug, runs_dir))
        steps.append(Step(
            "probes", f"probes {aug}",
            {"checkpoint": checkpoint, "preset": preset, "out_dir": shown(out),
             "cache_dir": shown(run_folder(preset, aug, runs_dir)), "data_root": data_root,
             "figures_dir": shown(figures_dir)},
            executed / f"probes-{aug}.ipynb", lambda out=out: (out / KNN).is_file(),
        ))
    csv = resolve(results_dir) / preset / "results.csv"
    steps.append(Step(
        "results", "results",
        {"preset": preset, "runs_dir": shown(runs_dir), "results_dir": shown(results_dir),
         "figures_dir": shown(figures_dir)},
        executed / "results.ipynb", csv.is_file, refresh=True,
    ))
    return steps


class StepFailed(RuntimeError):
    """A notebook raised: the message names the step, notebook, cell and error."""


def execute(step: Step) -> None:
    """Run one step's notebook with papermill; a raising cell becomes a :class:`StepFailed`."""
    import papermill  # imported here: notebooks import this module only for :func:`hardware`
    from papermill.exceptions import PapermillExecutionError

    step.output.parent.mkdir(parents=True, exist_ok=True)
    source = notebooks_folder() / f"{step.notebook}.ipynb"
    try:
        papermill.execute_notebook(str(source), str(step.output), parameters=step.parameters, kernel_name=KERNEL,
                                   cwd=str(project_root()), progress_bar=False,
                                   # the kernel's start-up warnings (plain-TCP sockets) would bury the progress lines
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except PapermillExecutionError as error:
        lines = [line.strip() for line in error.source.splitlines() if line.strip()]
        code = [line for line in lines if not line.startswith(("#", "%"))] or lines or [""]
        raise StepFailed(
            f"{step.name} failed in {shown(source)}, cell [{error.exec_count}] ({code[0]!r}): "
            f"{error.ename}: {error.evalue}\nthe executed notebook with the full traceback: "
            f"{step.output}"
        ) from error


def run(steps: Sequence[Step], force: bool = False, log: Callable[[str], None] = print) -> int:
    """Execute the steps in order, skipping those already done (unless ``force``).

    A ``refresh`` step (results) also reruns whenever an earlier one ran, so the tables are current.

    Returns:
        How many steps were executed.
    """
    start, executed = time.perf_counter(), 0
    elapsed = lambda: str(timedelta(seconds=round(time.perf_counter() - start)))
    for index, step in enumerate(steps, 1):
        prefix = f"[{index}/{len(steps)}]"
        if not force and not (step.refresh and executed) and step.done():
            log(f"{prefix} {elapsed()} {step.name}: skipped, results exist")
            continue
        log(f"{prefix} {elapsed()} {step.name} -> {shown(step.output)}")
        if force:
            for path in step.stale:
                path.unlink(missing_ok=True)
        tic = time.perf_counter()
        execute(step)
        executed += 1
        log(f"{prefix} {elapsed()} {step.name}: done in {time.perf_counter() - tic:.0f} s")
    return executed


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
        raise ValueError("the notebook has injected parameters but no cell tagged 'parameters' to fold them into")
    values = {}
    for node in ast.parse(cells[injected[0]].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.get_source_segment(cells[injected[0]].source, node.value)
    lines = cells[declared[0]].source.split("\n")
    for node in ast.parse(cells[declared[0]].source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        if isinstance(target, ast.Name) and target.id in values and node.value is not None:
            row, value = node.lineno - 1, node.value
            if value.end_lineno != node.lineno:
                raise ValueError(f"parameter {target.id!r} spans lines; keep parameters on one line each")
            line = lines[row]
            lines[row] = line[: value.col_offset] + values.pop(target.id) + line[value.end_col_offset :]
    if values:
        raise ValueError(f"injected parameters {sorted(values)} are not declared in the parameters cell")
    cells[declared[0]].source = "\n".join(lines)
    del cells[injected[0]]
    return notebook


def publish(runs_dir: str | Path, preset: str, dest: str | Path | None = None,
            sources: dict[str, str] | None = None) -> list[Path]:
    """Copy one representative run's executed notebooks over the study's notebooks.

    The injected parameters are folded into each notebook's parameters cell (:func:`bake_parameters`).

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
        raise FileNotFoundError(f"cannot publish: {', '.join(missing)} not executed under '{executed}'; "
                                "run the study with the swav aug and the 0.1 fraction first")
    written = []
    for notebook, name in sources.items():
        target = resolve(dest or notebooks_folder()) / f"{notebook}.ipynb"
        nbformat.write(bake_parameters(nbformat.read(executed / f"{name}.ipynb", as_version=4)), target)
        written.append(target)
    return written


def _augs(text: str) -> list[str]:
    augs = [aug.strip() for aug in text.split(",") if aug.strip()]
    unknown = [aug for aug in augs if aug not in AUGMENTATIONS]
    if unknown or not augs:
        raise argparse.ArgumentTypeError(f"unknown aug(s) {unknown or text!r}; choose from {', '.join(STUDY_AUGS)}")
    return augs


def _fractions(text: str) -> list[float]:
    try:
        return [check_fraction(float(value)) for value in text.split(",") if value.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swavnb.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick", choices=PRESETS, help="size preset of every run (default quick)")
    parser.add_argument("--augs", type=_augs, default=list(STUDY_AUGS),
                        help=f"comma-separated view strategies (default {','.join(STUDY_AUGS)})")
    parser.add_argument("--fractions", type=_fractions, default=list(FRACTIONS),
                        help=f"comma-separated label fractions (default {','.join(f'{f:g}' for f in FRACTIONS)})")
    parser.add_argument("--data_root", default="", help="folder holding cifar-100-python/ (default $SWAVNB_DATA)")
    parser.add_argument("--force", action="store_true", help="redo steps whose results exist")
    parser.add_argument("--publish", action="store_true",
                        help="afterwards copy the executed swav notebooks (finetune at 10%% labels) into notebooks/")
    parser.add_argument("--runs_dir", default="runs", help="run outputs and executed notebooks go to RUNS_DIR/<preset>")
    parser.add_argument("--results_dir", default="results", help="tables go to RESULTS_DIR/<preset>")
    parser.add_argument("--figures_dir", default="figures", help="figures go to FIGURES_DIR/<preset>")
    args = parser.parse_args(argv)
    steps = plan(args.preset, args.augs, args.fractions, args.data_root, args.runs_dir, args.results_dir,
                 args.figures_dir)
    print(f"study {args.preset}: {len(steps)} steps on {hardware()}; executed notebooks in "
          f"{steps[0].output.parent}", flush=True)
    try:
        run(steps, args.force, log=lambda line: print(line, flush=True))
    except StepFailed as error:
        print(f"error: {error}\nfinished results are kept: rerun the same command to continue", file=sys.stderr)
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

"""The whole study: its plan of steps and the command that runs it (``python -m swavnb.study``).

``python -m swavnb.study --preset P [--augs jitter,flip,swav] [--fractions 0.01,0.1,...]
[--modes finetune,linear] [--skip_probes] [--compile auto|true|false] [--data_root DIR] [--force]
[--keep_going] [--headless --jobs N --bench --export DIR] [--import DIR] [--publish]``;
a sweep (``--sweep FIELD=v1,v2``) or the pretraining budget (``--budget 1,2,4,8,16``) instead.

Pretrains every aug, evaluates every encoder (random init included) on every label fraction in
both modes, runs the probes, then gathers the tables and figures: the steps of
:mod:`swavnb.study.plan`, run by :mod:`swavnb.study.scheduler`. Steps whose results exist are
skipped, so an interrupted study continues where it stopped. Relative paths are taken from the
project root (:mod:`swavnb.base.layout`), wherever the command runs.

Ctrl-C or SIGTERM ends the running steps' processes and stops in one line, with status 130 / 143
(:mod:`swavnb.base.stopping`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from swavnb.base import folder_lock
from swavnb.base.checkpoint import CheckpointError
from swavnb.base.compiling import check_compile
from swavnb.base.device import available_cores, hardware
from swavnb.base.errors import (
    DamagedExportError,
    DiskFullError,
    ReadOnlyFolderError,
    RunFolderBusy,
    RunFolderError,
    StudyRowsError,
)
from swavnb.base.files import check_writable
from swavnb.base.layout import CHECKPOINT, project_root, resolve, run_folder, shown
from swavnb.base.stopping import exit_status, handle_sigterm
from swavnb.data.cifar import check_fraction
from swavnb.evaluation.config import FRACTIONS, MODES
from swavnb.method.augment import AUGMENTATIONS
from swavnb.pretraining.config import PRESETS
from swavnb.study.plan import STUDY_AUGS, finetune_cost, plan, plan_sweep, same_labels
from swavnb.study.publish import publish
from swavnb.study.scheduler import FORCE_ALL, FORCE_SCOPES, Step, StepFailed, run
from swavnb.study.sweeps import parse_sweep


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
        fractions = [check_fraction(float(value)) for value in text.split(",") if value.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if not fractions:  # '' would otherwise silently mean the preset's
        raise argparse.ArgumentTypeError(
            f"no fraction in {text!r}: give one or more, e.g. 0.1,1, or leave --fractions out for "
            "the preset's"
        )
    return fractions


def _modes(text: str) -> list[str]:
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        raise argparse.ArgumentTypeError(
            f"unknown mode(s) in {text!r}; choose from {', '.join(MODES)}"
        )
    return modes


def _compile(text: str) -> str:
    try:
        return check_compile(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _exporter(args: argparse.Namespace) -> Callable[[Step], None]:
    """After each finished step: the results archive again, and a pretraining's model."""
    from swavnb.study import transfer

    def export(step: Step) -> None:
        if step.notebook == "pretrain":
            aug, seed = step.parameters["aug"], step.parameters["seed"]
            transfer.export_model(
                run_folder(args.preset, aug, seed, args.runs_dir) / CHECKPOINT,
                args.export,
                f"{aug}-seed{seed}",
            )
        transfer.export_results(args.runs_dir, args.preset, args.export)

    return export


def benchmark(runs_dir: str | Path, preset: str, timeout: int = 300) -> Path:
    """Time the training step first (``swavnb.speed.bench``, flip at batch 256) into
    ``runs_dir/<preset>/bench.json``."""
    out = resolve(runs_dir) / preset / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "swavnb.speed.bench",
        "--augs",
        "flip",
        "--batches",
        "256",
        "--json",
        str(out),
    ]
    subprocess.run(command, cwd=project_root(), check=True, timeout=timeout)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m swavnb.study", description=__doc__.split("\n\n")[0]
    )
    _what_arguments(parser)
    _how_arguments(parser)
    return parser


def _what_arguments(parser: argparse.ArgumentParser) -> None:
    """What the study trains and evaluates."""
    parser.add_argument(
        "--preset",
        default="quick",
        choices=PRESETS,
        help="size preset of every run (default quick; paper is the reference report's setup)",
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
        default=None,
        help="comma-separated label fractions, in every mode (default: the preset's: quick "
        "fine-tunes 0.02,0.1 and probes 0.02,0.1,0.3,0.4,1 linearly; others "
        f"{','.join(f'{f:g}' for f in FRACTIONS)} in both)",
    )
    parser.add_argument(
        "--modes",
        type=_modes,
        default=list(MODES),
        help="evaluation modes (default finetune,linear; finetune alone is the reference report's "
        "protocol)",
    )
    parser.add_argument(
        "--skip_probes",
        action="store_true",
        help="leave out the probes (k-NN, t-SNE, clusters): on a GPU node, whose encoders the "
        "probes notebook examines after --import anyway",
    )
    parser.add_argument(
        "--sweep",
        default="",
        metavar="FIELD=v1,v2,...",
        help="instead of the study, pretrain one encoder per value of a config field (with "
        "--augs, default swav) and evaluate each by the linear probe at 10%% of the labels and "
        "k-NN; rows in results/<preset>/sweep-FIELD.csv, a figure, a line in claims.md",
    )
    parser.add_argument(
        "--budget",
        default="",
        metavar="E1,E2,...",
        help="instead of the study, pretrain every aug of --augs for each of these numbers of "
        "epochs (the preset's own: the study's runs) and evaluate each as the study does, random "
        "init as 0 epochs; rows in results/<preset>/budget.csv, two figures, a claims.md section",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="replicates: every encoder pretrained and evaluated with seeds 0 .. N-1 (default 1)",
    )
    parser.add_argument(
        "--compile",
        type=_compile,
        default=None,
        metavar="auto|true|false",
        help="torch.compile in every pretraining: auto (where a probe finds the compiler "
        "working, else eager with one line saying why), true or false (default: each preset's "
        "own: auto in paper and swav, false in quick and smoke)",
    )
    parser.add_argument(
        "--data_root", default="", help="folder holding cifar-100-python/ (default $SWAVNB_DATA)"
    )


def _how_arguments(parser: argparse.ArgumentParser) -> None:
    """How the steps run, and where their outputs go."""
    parser.add_argument(
        "--force",
        nargs="?",
        const=FORCE_ALL,
        default=False,
        choices=FORCE_SCOPES,
        metavar="all|evaluations",
        help="redo the steps whose results exist: all (alone, the default) pretrainings included, "
        "their checkpoints deleted first; evaluations keeps the pretrained encoders and redoes "
        "every evaluation, probe and the results, their cached features deleted first",
    )
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
        "--bench",
        action="store_true",
        help="first time the training step (swavnb.bench, ~1 min)",
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


def _arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked: one line naming the fix (status 2) for what cannot run."""
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.jobs > (cores := available_cores()):
        # a step side by side needs a core of its own, even one that feeds a GPU; capped, not
        # refused, so that `make study`'s --jobs 2 still runs on one core
        print(
            f"--jobs {args.jobs} is more than the {cores} core{'s' if cores > 1 else ''} this "
            f"process may use: {cores} step{'s' if cores > 1 else ''} at a time",
            flush=True,
        )
        args.jobs = cores
    if len(set(args.augs)) < len(args.augs):
        twice = sorted({aug for aug in args.augs if args.augs.count(aug) > 1})
        print(f"augs: {', '.join(twice)} asked more than once; each is pretrained once", flush=True)
        args.augs = list(dict.fromkeys(args.augs))
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.publish and args.skip_probes:
        parser.error("--publish copies the executed probes notebook: drop --skip_probes")
    return args


def _steps(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Step]:
    """The study's steps, or a sweep's (:func:`swavnb.study.plan.plan_sweep`)."""
    if args.budget:
        return _budget_steps(parser, args)
    if args.sweep:
        # one view strategy per sweep: SwAV's own unless --augs names another
        augs = ["swav"] if args.augs == list(STUDY_AUGS) else args.augs
        if len(augs) != 1:
            parser.error("a sweep pretrains one view strategy: pass --augs with one of them")
        try:
            sweep = parse_sweep(args.sweep, args.preset, augs[0])
        except ValueError as error:
            parser.error(str(error))
        if sweep.field == "aug" and args.augs != list(STUDY_AUGS):
            parser.error("a sweep of aug takes its strategies from --sweep aug=...: drop --augs")
        steps = plan_sweep(
            args.preset,
            sweep,
            augs[0],
            range(args.seeds),
            args.data_root,
            args.runs_dir,
            args.results_dir,
            args.figures_dir,
        )
    else:
        steps = plan(
            args.preset,
            args.augs,
            args.fractions,
            args.data_root,
            args.runs_dir,
            args.results_dir,
            args.figures_dir,
            args.modes,
            probes=not args.skip_probes,
            seeds=range(args.seeds),
            compile=args.compile or "",
        )
    return steps


def _budget_steps(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Step]:
    """The pretraining budget's steps (:func:`swavnb.study.budget_plan.plan_budget`)."""
    from swavnb.study.budget import parse_budget
    from swavnb.study.budget_plan import plan_budget

    clashes = {
        "--sweep": args.sweep,
        "--fractions": args.fractions,
        "--modes": args.modes != list(MODES),
        "--skip_probes": args.skip_probes,
        "--export": args.export,
        "--publish": args.publish,
    }
    if given := [flag for flag, value in clashes.items() if value]:
        parser.error(f"--budget evaluates as the study does: drop {', '.join(given)}")
    try:
        budget = parse_budget(args.budget, args.preset)
    except ValueError as error:
        parser.error(str(error))
    return plan_budget(
        args.preset,
        budget,
        args.augs,
        range(args.seeds),
        args.data_root,
        args.runs_dir,
        args.results_dir,
        args.figures_dir,
        compile=args.compile or "",
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = _arguments(parser, argv)
    steps = _steps(parser, args)
    mode = "headless" if args.headless else "notebooks"
    print(
        f"study {args.preset}: {len(steps)} steps ({mode}, {args.jobs} at a time) "
        f"on {hardware()}; runs in {shown(resolve(args.runs_dir) / args.preset)}",
        flush=True,
    )
    if not (args.sweep or args.budget) and (
        once := same_labels(args.preset, args.modes, args.fractions)
    ):
        print(once, flush=True)
    if args.budget:
        from swavnb.study.budget_plan import budget_cost

        if cost := budget_cost(steps, args.preset, args.runs_dir, args.jobs, args.force):
            print(cost, flush=True)
    if cost := finetune_cost(steps, args.preset, force=bool(args.force), jobs=args.jobs):
        print(cost, flush=True)
    try:
        # one study per runs folder: a second one would train the same runs side by side
        with folder_lock.locked(resolve(args.runs_dir) / args.preset, "the study's runs folder"):
            return _run_study(args, steps)
    except (RunFolderBusy, DiskFullError, ReadOnlyFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run_study(args: argparse.Namespace, steps: list[Step]) -> int:
    bench_failed = ""
    # before hours of training: the tables and figures come last
    for flag in ("results_dir", "figures_dir", *(("export",) if args.export else ())):
        check_writable(getattr(args, flag), f"make it writable, or choose another --{flag}")
    try:
        if args.import_dir:
            from swavnb.study.transfer import import_study

            imported = import_study(args.import_dir, args.runs_dir, args.preset)
            print(
                f"imported {sum(n.endswith('.json') for n in imported['files'])} result files, "
                f"{sum(n.endswith('.log') for n in imported['files'])} step logs and "
                f"{len(imported['checkpoints'])} models from {resolve(args.import_dir)}",
                flush=True,
            )
        if args.bench:
            try:
                print(f"benchmark: {benchmark(args.runs_dir, args.preset)}", flush=True)
            except (subprocess.SubprocessError, OSError) as error:  # a measurement beside the study
                bench_failed = f"the benchmark failed ({error})"
                print(f"{bench_failed}; the study goes on", file=sys.stderr, flush=True)
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
    # rerunning cannot help: the fix (a folder moved or deleted) can
    except (RunFolderError, DamagedExportError, CheckpointError, StudyRowsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (StepFailed, FileNotFoundError, ValueError, subprocess.SubprocessError) as error:
        print(
            f"error: {error}\nfinished results are kept: rerun the same command to continue",
            file=sys.stderr,
        )
        return 1
    if bench_failed:
        print(f"error: {bench_failed}; the study's steps finished", file=sys.stderr)
        return 1
    if args.publish:
        try:
            print("published:", ", ".join(map(str, publish(args.runs_dir, args.preset))))
        except (FileNotFoundError, ValueError) as error:  # not executed; paths of this machine
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    handle_sigterm()
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:
        print(
            "stopped: the running steps were ended; finished results are kept, rerun the same "
            "command to continue",
            file=sys.stderr,
        )
        sys.exit(exit_status(stop))

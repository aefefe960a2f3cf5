"""The whole study: its plan of steps and the command that runs it (``python -m swavnb.study``).

``python -m swavnb.study --preset P [--augs jitter,flip,swav] [--fractions 0.01,0.1,...]
[--modes finetune,linear] [--skip_probes] [--compile auto|true|false] [--data_root DIR] [--force]
[--keep_going]
[--headless --jobs N --bench --export DIR] [--import DIR] [--publish]``

Pretrains every aug, evaluates every encoder (random init included) on every label
fraction in both modes, runs the probes, then gathers the tables and figures. Each step
is one executed notebook under ``runs/<preset>/notebooks/`` (:mod:`swavnb.scheduler` runs them);
steps whose results exist are skipped, so an interrupted study continues where it stopped.
Relative paths are taken from the project root (:mod:`swavnb.layout`), wherever the command runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from swavnb.augment import AUGMENTATIONS
from swavnb.checkpoint import CheckpointError, load_checkpoint
from swavnb.compiling import check_compile
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
from swavnb.publish import publish
from swavnb.scheduler import Step, StepFailed, run

STUDY_AUGS = ("jitter", "flip", "swav")  # the seed's two strategies, then SwAV's recipe


def _finished(checkpoint: Path) -> bool:
    try:
        return bool(load_checkpoint(checkpoint)["finished"])
    except CheckpointError:
        return False


def plan(
    preset: str,
    augs: Sequence[str] = STUDY_AUGS,
    fractions: Sequence[float] = FRACTIONS,
    data_root: str = "",
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    figures_dir: str | Path = "figures",
    modes: Sequence[str] = MODES,
    probes: bool = True,
    compile: str = "",
) -> list[Step]:
    """Every step of the study in order: pretrain, then finetune / linear, then probes, then
    results.

    Each encoder's evaluations and probes come after its pretraining (``after``), the random-init
    encoder's need none, and results come after everything: what ``--jobs`` may run side by side.
    ``probes=False`` leaves the probes out (a GPU node whose encoders are probed after --import).
    ``compile`` (auto / true / false) reaches every pretraining; '' leaves each preset's own.

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
                    **({"compile": compile} if compile else {}),
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
    for aug, checkpoint in encoders if probes else []:
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


def _compile(text: str) -> str:
    try:
        return check_compile(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


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
        "--skip_probes",
        action="store_true",
        help="leave out the probes (k-NN, t-SNE, clusters): on a GPU node, whose encoders the "
        "probes notebook examines after --import anyway",
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
    if args.publish and args.skip_probes:
        parser.error("--publish copies the executed probes notebook: drop --skip_probes")
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
        compile=args.compile or "",
    )
    mode = "headless" if args.headless else "notebooks"
    print(
        f"study {args.preset}: {len(steps)} steps ({mode}, {args.jobs} at a time) "
        f"on {hardware()}; runs in {resolve(args.runs_dir) / args.preset}",
        flush=True,
    )
    bench_failed = ""
    try:
        if args.import_dir:
            from swavnb.transfer import import_study

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
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

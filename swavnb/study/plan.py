"""The whole study: its plan of steps and the command that runs it (``python -m swavnb.study``).

``python -m swavnb.study --preset P [--augs jitter,flip,swav] [--fractions 0.01,0.1,...]
[--modes finetune,linear] [--skip_probes] [--compile auto|true|false] [--data_root DIR] [--force]
[--keep_going]
[--headless --jobs N --bench --export DIR] [--import DIR] [--publish]``

Pretrains every aug, evaluates every encoder (random init included) on every label
fraction in both modes, runs the probes, then gathers the tables and figures. Each step
is one executed notebook under ``runs/<preset>/notebooks/`` (:mod:`swavnb.study.scheduler` runs
them);
steps whose results exist are skipped, so an interrupted study continues where it stopped.
Relative paths are taken from the project root (:mod:`swavnb.base.layout`), wherever the command
runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from swavnb.base import folder_lock
from swavnb.base.checkpoint import CheckpointError
from swavnb.base.compiling import check_compile
from swavnb.base.device import available_cores, hardware, pick_device, threads_per_job
from swavnb.base.errors import (
    DamagedExportError,
    DiskFullError,
    ReadOnlyFolderError,
    RunFolderBusy,
    RunFolderError,
    StudyRowsError,
)
from swavnb.base.files import check_writable
from swavnb.base.layout import (
    CHECKPOINT,
    RESULT,
    SCRATCH,
    encoder_checkpoint,
    evaluation_folder,
    feature_caches,
    probes_folder,
    project_root,
    resolve,
    run_folder,
    shown,
)
from swavnb.data.cifar import check_fraction
from swavnb.evaluation.config import FRACTIONS, MODES, finetune_config
from swavnb.evaluation.folders import is_done
from swavnb.method.augment import AUGMENTATIONS
from swavnb.pretraining.config import PRESETS, PretrainConfig, pretrain_config
from swavnb.pretraining.folder import is_finished
from swavnb.pretraining.recipe import make_augmentation
from swavnb.study.publish import publish
from swavnb.study.results import results_current
from swavnb.study.scheduler import FORCE_ALL, FORCE_SCOPES, Step, StepFailed, run
from swavnb.study.sweeps import (
    KNN_K,
    LINEAR_FRACTION,
    Sweep,
    parse_sweep,
    sweep_checkpoints,
    sweep_current,
)

STUDY_AUGS = ("jitter", "flip", "swav")  # the reference report's two, then SwAV's recipe
STUDY_FIX = "move that folder away, or run the study with another --runs_dir"


def _linear_stale(encoder: Path, fractions: Sequence[float]) -> list[Path]:
    """What a forced linear step deletes first: its rows, as the batch skips finished fractions,
    and the encoder's cached features, which the code being redone extracted."""
    rows = [evaluation_folder(encoder, "linear", f) / RESULT for f in fractions]
    return [*rows, *feature_caches(encoder)]


def _finished(checkpoint: Path, planned: PretrainConfig) -> bool:
    """Whether ``checkpoint`` is a finished run of the ``planned`` pretraining.

    Raises:
        RunFolderError: its folder holds another run (another aug, seed or config): the study would
            otherwise count that run as this one's.
    """
    return is_finished(checkpoint.parent, planned, STUDY_FIX)


# fine-tuning where it converges within the preset's budget (docs/presets.md: quick fine-tunes 100
# and 500 labels), the linear probe, seconds on cached features, at every fraction; other presets
# evaluate FRACTIONS in both modes
DEFAULT_FRACTIONS: dict[str, dict[str, tuple[float, ...]]] = {
    "quick": {"finetune": (0.02, 0.1), "linear": (0.02, 0.1, 0.3, 0.4, 1.0)},
}


def _asked(
    preset: str, modes: Sequence[str], fractions: Sequence[float] | None
) -> dict[str, tuple[float, ...]]:
    defaults = DEFAULT_FRACTIONS.get(preset, {})
    return {m: tuple(fractions or defaults.get(m, FRACTIONS)) for m in modes}


def _by_labels(preset: str, fractions: Sequence[float]) -> dict[int, list[float]]:
    """The fractions, grouped by the number of labels each takes from the preset's pool."""
    from swavnb.evaluation.finetuning import planned_steps

    config = finetune_config(preset)
    groups: dict[int, list[float]] = {}
    for fraction in fractions:
        groups.setdefault(planned_steps(config, fraction)[0], []).append(fraction)
    return groups


def study_fractions(
    preset: str, modes: Sequence[str], fractions: Sequence[float] | None = None
) -> dict[str, tuple[float, ...]]:
    """{mode: label fractions} the study evaluates: ``fractions`` in every mode when given, else
    the preset's (:data:`DEFAULT_FRACTIONS`).

    Fractions that take the same number of labels from the pool take the same labelled images
    (a class-stratified, nested subset): each count is evaluated once, as its smallest fraction
    (smoke's 2 images per class give 1 a class at 1, 10, 30 and 40 %; :func:`same_labels` says
    which); the results keep that fraction's row too (:mod:`swavnb.study.results`).
    """
    kept = {}
    for mode, asked in _asked(preset, modes, fractions).items():
        smallest = {f: min(group) for group in _by_labels(preset, asked).values() for f in group}
        kept[mode] = tuple(dict.fromkeys(smallest[f] for f in asked))
    return kept


def _listed(fractions: Sequence[float]) -> str:
    return ", ".join(f"{f:g}" for f in fractions)


def same_labels(preset: str, modes: Sequence[str], fractions: Sequence[float] | None = None) -> str:
    """One line naming the fractions :func:`study_fractions` evaluates once though asked more than
    once or giving the same number of labels as another; '' when there are none."""
    asked = list(
        fractions or dict.fromkeys(f for fs in _asked(preset, modes, None).values() for f in fs)
    )
    parts = []
    if twice := sorted({f for f in asked if asked.count(f) > 1}):
        parts.append(f"{_listed(twice)} asked more than once")
    for labels, group in sorted(_by_labels(preset, asked).items()):
        if others := sorted(set(group) - {min(group)}):
            verb = "gives" if len(others) == 1 else "give"
            parts.append(f"{_listed(others)} {verb} the same {labels:,} labels as {min(group):g}")
    if not parts:
        return ""
    pool = finetune_config(preset).train_images or 50_000
    return (
        f"fractions: {'; '.join(parts)} (preset {preset}'s pool: {pool:,} images, {pool // 100:,} "
        "per class); each number of labels is evaluated once, as its smallest fraction"
    )


def _to_go(step: Step) -> bool:
    try:
        return not step.done()
    except (CheckpointError, RunFolderError):  # not pretrained yet, or the scheduler will say why
        return True


def finetune_cost(
    steps: Sequence[Step],
    preset: str,
    measure_above: int = 1500,
    force: bool = False,
    jobs: int = 1,
) -> str:
    """What the fine-tuning still to run costs, said before it runs: runs, steps per label count,
    and above ``measure_above`` steps the time, from one step timed here on the threads each of
    ``jobs`` steps side by side gets. Finished runs (kept unless ``force``) cost nothing and are
    counted apart."""
    from swavnb.evaluation.finetuning import planned_steps, seconds_per_step

    planned = [s for s in steps if s.notebook == "finetune"]
    runs = [s for s in planned if force or _to_go(s)]
    if not runs:
        return f"fine-tuning: all {len(planned)} runs done" if planned else ""
    config = finetune_config(preset)
    per_run = [planned_steps(config, s.parameters["fraction"]) for s in runs]
    total = sum(n for _, n in per_run)
    counts = ", ".join(f"{labels:,} labels: {n:,}" for labels, n in sorted(set(per_run)))
    done = f"; {len(planned) - len(runs)} done" if len(runs) < len(planned) else ""
    runs_to_go = f"{len(runs)} run{'s' if len(runs) > 1 else ''} to go"
    line = f"fine-tuning: {runs_to_go}{done}, {total:,} steps ({counts} each)"
    if total > measure_above:
        # timed on a job's threads, not the study process's: a job's steps are what the runs take
        threads = threads_per_job(jobs)
        seconds = seconds_per_step(config, threads=threads)
        minutes = total * seconds / 60
        on_cpu = pick_device(config.device).type == "cpu"
        # runs overlap only as far as there are runs and cores for them; one GPU is time-shared
        parallel = min(jobs, len(runs), available_cores()) if on_cpu else 1
        where = f" on {threads} thread{'s' if threads > 1 else ''}" if on_cpu else ""
        side_by_side = f", {_minutes(minutes / parallel)} with {parallel} side by side"
        line += (
            f", about {_minutes(minutes)} of runs one after another"
            f"{side_by_side if parallel > 1 else ''} ({seconds:.2f} s per step{where}, timed alone)"
        )
    return line


def _minutes(minutes: float) -> str:
    return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"


def _view_pixels(preset: str, aug: str) -> int:
    """Pixels per image a pretraining's views push through the network: what its time grows with.
    The plan starts the longest first (multi-crop ``swav``), so it does not end the study alone."""
    views = make_augmentation(pretrain_config(preset, aug=aug)).view_sizes
    return sum(size * size for size in views)


def _default_or(path: str | Path, default: str) -> str:
    """A folder as a step's parameter: '' when it is the default, so the notebook derives it and a
    published notebook holds no path of a particular run."""
    return "" if resolve(path) == resolve(default) else shown(path)


def plan(
    preset: str,
    augs: Sequence[str] = STUDY_AUGS,
    fractions: Sequence[float] | None = None,
    data_root: str = "",
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    figures_dir: str | Path = "figures",
    modes: Sequence[str] = MODES,
    probes: bool = True,
    seeds: Sequence[int] = (0,),
    compile: str = "",
) -> list[Step]:
    """Every step of the study in order, seed by seed: its pretrainings (the longest first), then
    finetune / linear, then probes; results last.

    Each encoder's evaluations and probes come after its pretraining (``after``), the random-init
    encoder's need none, and results come after everything: what ``--jobs`` may run side by side.
    ``probes=False`` leaves the probes out (a GPU node whose encoders are probed after --import).
    Steps get the parameters that define their run (preset, aug, seed, mode, fraction) and derive
    their folders from them exactly as the notebooks do (:mod:`swavnb.base.layout`).
    """
    folders = {
        "data_root": shown(data_root) if data_root else "",
        "runs_dir": _default_or(runs_dir, "runs"),
    }
    drawn = {"figures_dir": _default_or(figures_dir, "figures")}
    executed = resolve(runs_dir) / preset / "notebooks"
    augs = list(dict.fromkeys(augs))  # one aug twice would run one step twice side by side
    by_mode = study_fractions(preset, modes, fractions)
    steps = []
    # seed by seed, so an interrupted multi-seed study has whole seeds; a later seed's
    # pretraining still starts whenever nothing of an earlier seed is ready
    for seed in seeds:
        for aug in sorted(augs, key=lambda aug: -_view_pixels(preset, aug)):
            out = run_folder(preset, aug, seed, runs_dir)
            planned = pretrain_config(preset, aug=aug, seed=seed)
            steps.append(
                Step(
                    "pretrain",
                    f"pretrain {aug} seed {seed}",
                    {
                        "preset": preset,
                        "aug": aug,
                        "seed": seed,
                        **folders,
                        **drawn,
                        **({"compile": compile} if compile else {}),
                    },
                    executed / f"pretrain-{aug}-seed{seed}.ipynb",
                    lambda out=out, planned=planned: _finished(out / CHECKPOINT, planned),
                    # features cached beside the weights would outlive them
                    [out / CHECKPOINT, *feature_caches(out)],
                )
            )
        for aug in [*augs, SCRATCH]:
            checkpoint = encoder_checkpoint(preset, aug, seed, runs_dir)
            needs = [] if aug == SCRATCH else [f"pretrain {aug} seed {seed}"]
            defining = {"preset": preset, "aug": aug, "seed": seed}
            done = lambda m, f, c=checkpoint, s=seed: is_done(
                c, m, finetune_config(preset, seed=s), runs_dir, f, STUDY_FIX
            )
            for fraction in by_mode.get("finetune", ()):
                steps.append(
                    Step(
                        "finetune",
                        f"finetune {aug} seed {seed} {100 * fraction:g}% labels",
                        {**defining, "fraction": fraction, "mode": "finetune", **folders},
                        executed / f"finetune-{aug}-seed{seed}-finetune-{fraction:g}.ipynb",
                        lambda f=fraction, done=done: done("finetune", f),
                        after=needs,
                    )
                )
            if linear := by_mode.get("linear", ()):
                # one process for all of them: on cached features each takes seconds, less than a
                # notebook's start-up
                steps.append(
                    Step(
                        "linear",
                        f"linear {aug} seed {seed} at "
                        f"{', '.join(f'{100 * f:g}%' for f in linear)} labels",
                        {**defining, "fractions": list(linear), **folders},
                        executed / f"linear-{aug}-seed{seed}.ipynb",
                        lambda done=done, fs=linear: all(done("linear", f) for f in fs),
                        _linear_stale(run_folder(preset, aug, seed, runs_dir), linear),
                        after=needs,
                        headless_only=True,
                    )
                )
        for aug in [*augs, SCRATCH] if probes else []:
            checkpoint = encoder_checkpoint(preset, aug, seed, runs_dir)
            out = probes_folder(run_folder(preset, aug, seed, runs_dir))
            steps.append(
                Step(
                    "probes",
                    f"probes {aug} seed {seed}",
                    {"preset": preset, "aug": aug, "seed": seed, **folders, **drawn},
                    executed / f"probes-{aug}-seed{seed}.ipynb",
                    lambda c=checkpoint, s=seed: is_done(
                        c, "probes", finetune_config(preset, seed=s), runs_dir, None, STUDY_FIX
                    ),
                    feature_caches(out.parent),  # it reads them, as the linear step does
                    after=[] if aug == SCRATCH else [f"pretrain {aug} seed {seed}"],
                    draws=True,
                )
            )
    steps.append(
        Step(
            "results",
            "results",
            {
                "preset": preset,
                "runs_dir": folders["runs_dir"],
                "results_dir": _default_or(results_dir, "results"),
                **drawn,
            },
            executed / "results.ipynb",
            lambda: results_current(preset, runs_dir, results_dir),
            refresh=True,
            after=[step.name for step in steps],
            draws=True,
        )
    )
    return steps


def plan_sweep(
    preset: str,
    sweep: Sweep,
    aug: str,
    seeds: Sequence[int] = (0,),
    data_root: str = "",
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    figures_dir: str | Path = "figures",
) -> list[Step]:
    """A sweep's steps: pretrain every value (and seed), evaluate each by the linear probe at
    :data:`swavnb.study.sweeps.LINEAR_FRACTION` and k-NN, then its rows, figure and claims line.

    Every step runs headless (no notebook has every field as a parameter); each encoder's folder is
    ``runs/<preset>/sweep-<field>/<value>/<aug>/seed-<s>`` and resumes as the study's do.
    """
    folders = {
        "data_root": shown(data_root) if data_root else "",
        "runs_dir": _default_or(runs_dir, "runs"),
    }
    executed = resolve(runs_dir) / preset / "notebooks"
    steps = []
    for value, seed, checkpoint in sweep_checkpoints(preset, sweep, aug, seeds, runs_dir):
        run = f"{sweep.field}={value} seed {seed}"
        run_aug = sweep.run_aug(aug, value)
        planned = sweep.config(preset, aug, seed, value)
        overrides = {} if sweep.field == "aug" else {sweep.field: value}
        shown_checkpoint = shown(checkpoint)
        evaluation = finetune_config(preset, seed=seed)
        knn = replace(evaluation, knn_k=(KNN_K,))
        common = {"preset": preset, "seed": seed, "checkpoint": shown_checkpoint, **folders}
        log = executed / f"sweep-{sweep.field}-{value}-seed{seed}"
        steps += [
            Step(
                "pretrain",
                f"pretrain {run_aug} {run}",
                {
                    "preset": preset,
                    "aug": run_aug,
                    "seed": seed,
                    "overrides": overrides,
                    "out_dir": shown(checkpoint.parent),
                    "data_root": folders["data_root"],
                },
                log.with_name(log.name + "-pretrain.ipynb"),
                lambda c=checkpoint, planned=planned: _finished(c, planned),
                [checkpoint, *feature_caches(checkpoint.parent)],
                headless_only=True,
            ),
            Step(
                "linear",
                f"linear {run}",
                {**common, "fractions": [LINEAR_FRACTION]},
                log.with_name(log.name + "-linear.ipynb"),
                lambda c=shown_checkpoint, e=evaluation: is_done(
                    c, "linear", e, runs_dir, LINEAR_FRACTION, STUDY_FIX
                ),
                _linear_stale(checkpoint.parent, [LINEAR_FRACTION]),
                after=[f"pretrain {run_aug} {run}"],
                headless_only=True,
            ),
            Step(
                "knn",
                f"knn {run}",
                common,
                log.with_name(log.name + "-knn.ipynb"),
                lambda c=shown_checkpoint, e=knn: is_done(c, "knn", e, runs_dir, None, STUDY_FIX),
                after=[f"linear {run}"],  # reads the features the linear probe cached
                headless_only=True,
            ),
        ]
    steps.append(
        Step(
            "sweep",
            f"sweep {sweep.field} results",
            {
                "preset": preset,
                "field": sweep.field,
                "runs_dir": folders["runs_dir"],
                "results_dir": _default_or(results_dir, "results"),
                "figures_dir": _default_or(figures_dir, "figures"),
            },
            executed / f"sweep-{sweep.field}.ipynb",
            lambda: sweep_current(runs_dir, preset, sweep.field, results_dir),
            refresh=True,
            after=[step.name for step in steps],
            headless_only=True,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swavnb.study", description=__doc__.split("\n\n")[0]
    )
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
    mode = "headless" if args.headless else "notebooks"
    print(
        f"study {args.preset}: {len(steps)} steps ({mode}, {args.jobs} at a time) "
        f"on {hardware()}; runs in {shown(resolve(args.runs_dir) / args.preset)}",
        flush=True,
    )
    if not args.sweep and (once := same_labels(args.preset, args.modes, args.fractions)):
        print(once, flush=True)
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

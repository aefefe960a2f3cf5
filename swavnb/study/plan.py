"""The study's plan: its steps in order, each made by a named builder (:func:`pretrain_step`,
:func:`finetune_step`, :func:`linear_step`, :func:`probes_step`, :func:`results_step`; a sweep's by
:func:`plan_sweep`), and what the fine-tuning still to run costs. ``python -m swavnb.study``
(:mod:`swavnb.study.__main__`) runs them.

Each step is one executed notebook under ``runs/<preset>/notebooks/`` (:mod:`swavnb.study.scheduler`
runs them); a step whose results exist is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from swavnb.base.checkpoint import CheckpointError
from swavnb.base.device import available_cores, pick_device, threads_per_job
from swavnb.base.errors import (
    RunFolderError,
)
from swavnb.base.layout import (
    CHECKPOINT,
    RESULT,
    SCRATCH,
    encoder_checkpoint,
    encoder_folder,
    evaluation_folder,
    feature_caches,
    resolve,
    run_folder,
    shown,
)
from swavnb.evaluation.config import FRACTIONS, MODES, finetune_config
from swavnb.evaluation.folders import is_done
from swavnb.pretraining.config import PretrainConfig, pretrain_config
from swavnb.pretraining.folder import is_finished
from swavnb.pretraining.recipe import make_augmentation
from swavnb.study.results import results_current
from swavnb.study.scheduler import Step
from swavnb.study.sweeps import (
    KNN_K,
    LINEAR_FRACTION,
    Sweep,
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


@dataclass(frozen=True)
class _Study:
    """What every step of one study shares: its preset, where its runs go, and the folders each
    step gets as parameters ('' where the notebook derives the default)."""

    preset: str
    runs_dir: str | Path
    folders: dict[str, str]  # data_root, runs_dir
    drawn: dict[str, str]  # figures_dir, for the steps that draw

    @classmethod
    def of(
        cls, preset: str, data_root: str, runs_dir: str | Path, figures_dir: str | Path
    ) -> _Study:
        folders = {
            "data_root": shown(data_root) if data_root else "",
            "runs_dir": _default_or(runs_dir, "runs"),
        }
        return cls(preset, runs_dir, folders, {"figures_dir": _default_or(figures_dir, "figures")})

    def executed(self, name: str) -> Path:
        """Where the step ``name`` writes its executed notebook (or, headless, its log)."""
        return resolve(self.runs_dir) / self.preset / "notebooks" / f"{name}.ipynb"

    def evaluated(
        self, checkpoint: str | Path, kind: str, seed: int, *fractions: float | None
    ) -> bool:
        """Whether the evaluations ``kind`` of ``checkpoint`` at ``fractions`` are done."""
        config = finetune_config(self.preset, seed=seed)
        return all(
            is_done(checkpoint, kind, config, self.runs_dir, f, STUDY_FIX) for f in fractions
        )


def pretrain_step(study: _Study, aug: str, seed: int, compile: str = "") -> Step:
    """The pretraining of ``aug`` with ``seed``: done once its folder holds that run, finished."""
    out = run_folder(study.preset, aug, seed, study.runs_dir)
    planned = pretrain_config(study.preset, aug=aug, seed=seed)
    return Step(
        "pretrain",
        f"pretrain {aug} seed {seed}",
        {
            "preset": study.preset,
            "aug": aug,
            "seed": seed,
            **study.folders,
            **study.drawn,
            **({"compile": compile} if compile else {}),
        },
        study.executed(f"pretrain-{aug}-seed{seed}"),
        partial(_finished, out / CHECKPOINT, planned),
        # features cached beside the weights would outlive them
        [out / CHECKPOINT, *feature_caches(out)],
    )


def _encoder(study: _Study, aug: str, seed: int) -> tuple[Path, dict, list[str]]:
    """An encoder's checkpoint, the parameters naming it, and the pretraining it comes after."""
    checkpoint = encoder_checkpoint(study.preset, aug, seed, study.runs_dir)
    needs = [] if aug == SCRATCH else [f"pretrain {aug} seed {seed}"]
    return checkpoint, {"preset": study.preset, "aug": aug, "seed": seed}, needs


def finetune_step(study: _Study, aug: str, seed: int, fraction: float) -> Step:
    """Fine-tuning the encoder of ``aug`` and ``seed`` on ``fraction`` of the labels."""
    checkpoint, defining, needs = _encoder(study, aug, seed)
    return Step(
        "finetune",
        f"finetune {aug} seed {seed} {100 * fraction:g}% labels",
        {**defining, "fraction": fraction, "mode": "finetune", **study.folders},
        study.executed(f"finetune-{aug}-seed{seed}-finetune-{fraction:g}"),
        partial(study.evaluated, checkpoint, "finetune", seed, fraction),
        after=needs,
    )


def linear_step(study: _Study, aug: str, seed: int, fractions: Sequence[float]) -> Step:
    """The linear probes of one encoder at every fraction, in one process: on cached features each
    takes seconds, less than a notebook's start-up."""
    checkpoint, defining, needs = _encoder(study, aug, seed)
    return Step(
        "linear",
        f"linear {aug} seed {seed} at {', '.join(f'{100 * f:g}%' for f in fractions)} labels",
        {**defining, "fractions": list(fractions), **study.folders},
        study.executed(f"linear-{aug}-seed{seed}"),
        partial(study.evaluated, checkpoint, "linear", seed, *fractions),
        _linear_stale(run_folder(study.preset, aug, seed, study.runs_dir), fractions),
        after=needs,
        headless_only=True,
    )


def probes_step(study: _Study, aug: str, seed: int) -> Step:
    """The probes (k-NN, t-SNE, clusters) of one encoder."""
    checkpoint, defining, needs = _encoder(study, aug, seed)
    return Step(
        "probes",
        f"probes {aug} seed {seed}",
        {**defining, **study.folders, **study.drawn},
        study.executed(f"probes-{aug}-seed{seed}"),
        partial(study.evaluated, checkpoint, "probes", seed, None),
        # it reads the cached features, as the linear step does
        feature_caches(run_folder(study.preset, aug, seed, study.runs_dir)),
        after=needs,
        draws=True,
    )


def results_step(study: _Study, results_dir: str | Path, steps: Sequence[Step]) -> Step:
    """The tables and figures, after every other step; redone whenever one of them ran."""
    return Step(
        "results",
        "results",
        {
            "preset": study.preset,
            "runs_dir": study.folders["runs_dir"],
            "results_dir": _default_or(results_dir, "results"),
            **study.drawn,
        },
        study.executed("results"),
        partial(results_current, study.preset, study.runs_dir, results_dir),
        refresh=True,
        after=[step.name for step in steps],
        draws=True,
    )


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
    study = _Study.of(preset, data_root, runs_dir, figures_dir)
    augs = list(dict.fromkeys(augs))  # one aug twice would run one step twice side by side
    by_mode = study_fractions(preset, modes, fractions)
    steps = []
    # seed by seed, so an interrupted multi-seed study has whole seeds; a later seed's
    # pretraining still starts whenever nothing of an earlier seed is ready
    for seed in seeds:
        for aug in sorted(augs, key=lambda aug: -_view_pixels(preset, aug)):
            steps.append(pretrain_step(study, aug, seed, compile))
        for aug in [*augs, SCRATCH]:
            steps += [finetune_step(study, aug, seed, f) for f in by_mode.get("finetune", ())]
            if linear := by_mode.get("linear", ()):
                steps.append(linear_step(study, aug, seed, linear))
        steps += [probes_step(study, aug, seed) for aug in [*augs, SCRATCH] if probes]
    return [*steps, results_step(study, results_dir, steps)]


def _sweep_steps(
    study: _Study, sweep: Sweep, aug: str, value: Any, seed: int, checkpoint: Path
) -> list[Step]:
    """The pretraining of one value of a sweep with ``seed``, then its linear probe and k-NN."""
    run = f"{sweep.field}={value} seed {seed}"
    run_aug = sweep.run_aug(aug, value)
    planned = sweep.config(study.preset, aug, seed, value)
    shown_checkpoint = shown(checkpoint)
    common = {"preset": study.preset, "seed": seed, "checkpoint": shown_checkpoint, **study.folders}
    log = f"sweep-{sweep.field}-{value}-seed{seed}"
    pretraining = {
        "preset": study.preset,
        "aug": run_aug,
        "seed": seed,
        "overrides": {} if sweep.field == "aug" else {sweep.field: value},
        "out_dir": shown(checkpoint.parent),
        "data_root": study.folders["data_root"],
    }
    return [
        Step(
            "pretrain",
            f"pretrain {run_aug} {run}",
            pretraining,
            study.executed(f"{log}-pretrain"),
            partial(_finished, checkpoint, planned),
            [checkpoint, *feature_caches(checkpoint.parent)],
            headless_only=True,
        ),
        *frozen_steps(
            study,
            run,
            log,
            common,
            [LINEAR_FRACTION],
            [f"pretrain {run_aug} {run}"],
            partial(_knn_done, study, shown_checkpoint, seed),
        ),
    ]


def frozen_steps(
    study: _Study,
    run: str,
    log: str,
    common: dict[str, Any],
    fractions: Sequence[float],
    after: list[str],
    knn_done: Callable[[], bool],
) -> list[Step]:
    """An encoder's evaluations on frozen features, as a sweep and the budget run them: the linear
    probes at ``fractions``, then k-NN on the features they cached.

    Args:
        common: the steps' parameters: preset, seed, the encoder's ``checkpoint`` and the folders.
        after: the steps (its pretraining) whose encoder both evaluate.
        knn_done: whether its k-NN rows exist.
    """
    checkpoint, seed = common["checkpoint"], common["seed"]
    folder = encoder_folder(checkpoint, study.preset, seed, study.runs_dir)
    return [
        Step(
            "linear",
            f"linear {run}",
            {**common, "fractions": list(fractions)},
            study.executed(f"{log}-linear"),
            partial(study.evaluated, checkpoint, "linear", seed, *fractions),
            _linear_stale(folder, fractions),
            after=after,
            headless_only=True,
        ),
        Step(
            "knn",
            f"knn {run}",
            common,
            study.executed(f"{log}-knn"),
            knn_done,
            after=[f"linear {run}"],  # reads the features the linear probe cached
            headless_only=True,
        ),
    ]


def _knn_done(study: _Study, checkpoint: str, seed: int) -> bool:
    """Whether a sweep's k-NN rows of ``checkpoint`` (at :data:`KNN_K` alone) are done."""
    knn = replace(finetune_config(study.preset, seed=seed), knn_k=(KNN_K,))
    return is_done(checkpoint, "knn", knn, study.runs_dir, None, STUDY_FIX)


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
    study = _Study.of(preset, data_root, runs_dir, figures_dir)
    steps = []
    for value, seed, checkpoint in sweep_checkpoints(preset, sweep, aug, seeds, runs_dir):
        steps += _sweep_steps(study, sweep, aug, value, seed, checkpoint)
    summary = {
        "preset": preset,
        "field": sweep.field,
        "runs_dir": study.folders["runs_dir"],
        "results_dir": _default_or(results_dir, "results"),
        "figures_dir": _default_or(figures_dir, "figures"),
    }
    steps.append(
        Step(
            "sweep",
            f"sweep {sweep.field} results",
            summary,
            study.executed(f"sweep-{sweep.field}"),
            partial(sweep_current, runs_dir, preset, sweep.field, results_dir),
            refresh=True,
            after=[step.name for step in steps],
            headless_only=True,
        )
    )
    return steps

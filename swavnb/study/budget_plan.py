"""The pretraining budget's steps (``python -m swavnb.study --budget 1,2,4,8,16``) and what its
pretrainings still to run cost, said before they run.

Every aug and seed is pretrained for each number of epochs
(:func:`swavnb.study.budget.budget_folder`; the preset's own epochs are the study's run, trained
once for both), then each encoder and random
init is evaluated as the study evaluates (:data:`swavnb.study.budget.FINETUNE_FRACTIONS`,
:data:`~swavnb.study.budget.LINEAR_FRACTIONS`, k-NN); the budget step writes ``budget.csv``, its
figures and claims.md. Every step runs headless (no notebook takes the epochs) and resumes as the
study's do.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from swavnb.base.checkpoint import CheckpointError
from swavnb.base.device import device_name, pick_device
from swavnb.base.errors import RunFolderError
from swavnb.base.layout import (
    CHECKPOINT,
    METRICS,
    NO_CHECKPOINT,
    SCRATCH,
    feature_caches,
    figures_folder,
    resolve,
    run_folder,
    shown,
)
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.folders import is_done
from swavnb.evaluation.records import read_metrics
from swavnb.pretraining.config import pretrain_config
from swavnb.study.budget import (
    FIGURES,
    FINETUNE_FRACTIONS,
    LINEAR_FRACTIONS,
    budget_folder,
)
from swavnb.study.plan import (
    STUDY_FIX,
    _default_or,
    _finished,
    _Study,
    _view_pixels,
    frozen_steps,
)
from swavnb.study.results import results_current
from swavnb.study.scheduler import Step, forced
from swavnb.study.sweeps import BUDGET_FIELD, KNN_K


def _pretrain_step(study: _Study, aug: str, seed: int, epochs: int, compile: str) -> Step:
    """``aug`` pretrained ``epochs`` epochs with ``seed``, in its :func:`budget_folder`."""
    folder = budget_folder(study.preset, aug, seed, epochs, study.runs_dir)
    own = folder == run_folder(study.preset, aug, seed, study.runs_dir)
    planned = pretrain_config(study.preset, aug=aug, seed=seed, epochs=epochs)
    return Step(
        "pretrain",
        f"pretrain {aug} {epochs} epoch{'s' if epochs > 1 else ''} seed {seed}",
        {
            "preset": study.preset,
            "aug": aug,
            "seed": seed,
            "overrides": {} if own else {"epochs": epochs},
            "out_dir": shown(folder),
            "data_root": study.folders["data_root"],
            **({"compile": compile} if compile else {}),
        },
        study.executed(f"budget-{aug}-{epochs}epochs-seed{seed}-pretrain"),
        partial(_finished, folder / CHECKPOINT, planned),
        [folder / CHECKPOINT, *feature_caches(folder)],
        headless_only=True,
    )


def _knn_done(study: _Study, checkpoint: str, seed: int) -> bool:
    """Whether the encoder's k-NN at :data:`KNN_K` exists: the study's probes measured the same
    k-NN on the same features, else the budget's own."""
    config = finetune_config(study.preset, seed=seed)
    knn = replace(config, knn_k=(KNN_K,))
    return is_done(checkpoint, "probes", config, study.runs_dir, None, STUDY_FIX) or is_done(
        checkpoint, "knn", knn, study.runs_dir, None, STUDY_FIX
    )


def _evaluation_steps(
    study: _Study, run: str, tag: str, seed: int, checkpoint: str, after: list[str]
) -> list[Step]:
    """One encoder's evaluations: fine-tuned as the study's, linear and k-NN as a sweep's."""
    common = {"preset": study.preset, "seed": seed, "checkpoint": checkpoint, **study.folders}
    log = f"budget-{tag}"
    finetuned = [
        Step(
            "finetune",
            f"finetune {run} {100 * fraction:g}% labels",
            {**common, "fraction": fraction, "mode": "finetune"},
            study.executed(f"{log}-finetune-{fraction:g}"),
            partial(study.evaluated, checkpoint, "finetune", seed, fraction),
            after=after,
            headless_only=True,
        )
        for fraction in FINETUNE_FRACTIONS
    ]
    knn_done = partial(_knn_done, study, checkpoint, seed)
    return [*finetuned, *frozen_steps(study, run, log, common, LINEAR_FRACTIONS, after, knn_done)]


def plan_budget(
    preset: str,
    budget: Sequence[int],
    augs: Sequence[str],
    seeds: Sequence[int] = (0,),
    data_root: str = "",
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    figures_dir: str | Path = "figures",
    compile: str = "",
) -> list[Step]:
    """The budget's steps: every pretraining first (the longest first, seed by seed), then each
    encoder's and random init's evaluations, then the budget step (budget.csv, its figures,
    claims.md), redone whenever another step ran.

    Args:
        budget: the epochs of each pretraining (:func:`swavnb.study.budget.parse_budget`).
    """
    study = _Study.of(preset, data_root, runs_dir, figures_dir)
    augs = sorted(dict.fromkeys(augs), key=lambda aug: -_view_pixels(preset, aug))
    pretrainings, evaluations = [], []
    for seed in seeds:
        evaluations += _evaluation_steps(
            study, f"{SCRATCH} seed {seed}", f"{SCRATCH}-seed{seed}", seed, NO_CHECKPOINT, []
        )
        for epochs in sorted(budget, reverse=True):
            for aug in augs:
                step = _pretrain_step(study, aug, seed, epochs, compile)
                pretrainings.append(step)
                folder = resolve(step.parameters["out_dir"])
                run = step.name.removeprefix("pretrain ")
                tag = f"{aug}-{epochs}epochs-seed{seed}"
                checkpoint = shown(folder / CHECKPOINT)
                evaluations += _evaluation_steps(study, run, tag, seed, checkpoint, [step.name])
    steps = [*pretrainings, *evaluations]
    figure = figures_folder(preset, figures_dir) / f"{FIGURES[0]}.png"
    summary = Step(
        "budget",
        "budget results",
        {
            "preset": preset,
            "runs_dir": study.folders["runs_dir"],
            "results_dir": _default_or(results_dir, "results"),
            "figures_dir": _default_or(figures_dir, "figures"),
        },
        study.executed("budget"),
        lambda: results_current(preset, runs_dir, results_dir) and figure.is_file(),
        refresh=True,
        after=[step.name for step in steps],
        headless_only=True,
    )
    return [*steps, summary]


def _epochs_trained(folder: Path, epochs: int) -> int:
    """Epochs a run of ``epochs`` in ``folder`` has trained already (its metrics.json), 0 when
    none or another run's."""
    try:
        metrics = read_metrics(folder / METRICS)
    except (OSError, ValueError):
        return 0
    return len(metrics["epochs"]) if metrics["config"]["epochs"] == epochs else 0


def _cpu(name: str) -> str:
    """A device's name without the thread count, which a job of ``--jobs N`` sets otherwise."""
    return re.sub(r", \d+ threads?$", "", name)


def epoch_seconds(
    runs_dir: str | os.PathLike, preset: str, aug: str, jobs: int, device: str = "auto"
) -> float | None:
    """The median seconds of an epoch of ``aug``'s runs in ``runs_dir/<preset>`` (the study's and
    the budget's) measured on this machine's device with ``jobs`` steps side by side; None where
    none was."""
    root, here = resolve(runs_dir or "runs") / preset, _cpu(device_name(pick_device(device)))
    seconds = []
    for path in [
        *root.glob(f"{aug}/seed-*/{METRICS}"),
        *root.glob(f"sweep-{BUDGET_FIELD}/*/{aug}/seed-*/{METRICS}"),
    ]:
        try:
            metrics = read_metrics(path)
        except (OSError, ValueError):
            continue
        shared = metrics.get("shared_with_jobs") or 1
        if _cpu(metrics.get("device", "")) == here and shared == jobs:
            seconds += [epoch["seconds"] for epoch in metrics["epochs"]]
    return statistics.median(seconds) if seconds else None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def budget_cost(
    steps: Sequence[Step],
    preset: str,
    runs_dir: str | os.PathLike = "runs",
    jobs: int = 1,
    force: bool | str = False,
) -> str:
    """What the budget's pretrainings still to run cost, said before they run: epochs to go per
    aug (a run cut off counts what it has left), and the time where this runs folder holds epochs
    of that aug measured on this device with as many jobs side by side (:func:`epoch_seconds`)."""
    planned = [s for s in steps if s.notebook == "pretrain"]
    runs: list[tuple[str, int]] = []  # (aug, epochs left) of each run to go
    for step in planned:
        redo = forced(step, force)
        try:
            done = not redo and step.done()
        except (CheckpointError, RunFolderError):  # not trained yet, or the scheduler says why
            done = False
        if done:
            continue
        p = step.parameters
        epochs = p.get("overrides", {}).get("epochs") or pretrain_config(preset).epochs
        runs.append(
            (p["aug"], epochs - (0 if redo else _epochs_trained(resolve(p["out_dir"]), epochs)))
        )
    if not runs:
        return f"pretraining: all {len(planned)} runs done" if planned else ""
    to_go: dict[str, int] = {}
    for aug, left in runs:
        to_go[aug] = to_go.get(aug, 0) + left
    per_aug = ", ".join(f"{aug}: {n}" for aug, n in to_go.items())
    total = sum(to_go.values())
    line = (
        f"pretraining: {total} epoch{'s' if total > 1 else ''} to go in {len(runs)} "
        f"run{'s' if len(runs) > 1 else ''} ({per_aug})"
    )
    seconds = {aug: epoch_seconds(runs_dir, preset, aug, jobs) for aug in to_go}
    measured = ", ".join(f"{aug} {s:.0f} s" for aug, s in seconds.items() if s is not None)
    where = f"in this runs folder on this device with --jobs {jobs}"
    if missing := [aug for aug, s in seconds.items() if s is None]:
        known = f"; an epoch took {measured}" if measured else ""
        return f"{line}; no time estimate: no epoch of {', '.join(missing)} measured {where}{known}"
    each = [left * seconds[aug] for aug, left in runs]
    # runs side by side each at the pace measured side by side; the longest run bounds it below
    wall = max(sum(each) / min(jobs, len(runs)), max(each))
    side_by_side = f"with {jobs} side by side" if jobs > 1 else "one after another"
    return f"{line}, about {_duration(wall)} {side_by_side} (an epoch took {measured} {where})"

"""The pretraining budget: do the study's effects grow with pretraining?
(``python -m swavnb.study --budget 1,2,4,8,16``)

Each budget E pretrains every aug and seed with ``epochs=E`` and every other field from the preset:
a whole schedule for E epochs, as the config makes one (the preset's warm-up and prototype freeze,
counted in epochs, then the cosine decay over the rest: at ``quick`` one epoch is all warm-up). The
runs are in ``runs/<preset>/sweep-epochs/<E>/<aug>/seed-<s>``; the preset's own epochs are the
study's run, in its own folder, trained and evaluated once for both. Every encoder is evaluated as
the study evaluates (:data:`FINETUNE_FRACTIONS`, :data:`LINEAR_FRACTIONS`, k-NN), random init
being the budget-0 point; the rows go to ``budget.csv``
(:mod:`swavnb.study.budget_claims` tests the claims on them). The cost is said up front
(:func:`swavnb.study.budget_plan.budget_cost`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from swavnb.base.layout import (
    KNN,
    METRICS,
    RESULT,
    SCRATCH,
    evaluation_folder,
    probes_folder,
    resolve,
    run_folder,
    sweep_folder,
)
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.intervals import accuracy_se
from swavnb.evaluation.records import read_metrics, read_result
from swavnb.pretraining.config import pretrain_config
from swavnb.study.sweeps import BUDGET_FIELD, KNN_K, LINEAR_FRACTION, knn_row

# the study's evaluations a budget encoder gets: fine-tuned on quick's 500 labels, the linear probe
# on 500 and 5,000, and k-NN (k = KNN_K, the preset's precise BN statistics) on the labelled pool
FINETUNE_FRACTIONS = (LINEAR_FRACTION,)
LINEAR_FRACTIONS = (LINEAR_FRACTION, 1.0)
EVALUATIONS = ("finetune", "linear", "knn")
BUDGET_CSV = "budget.csv"
FIGURES = ("budget", "budget-claims")  # figures/<preset>/<name>.png
COLUMNS = (
    "preset",
    "aug",
    "epochs",
    "seed",
    "evaluation",
    "fraction",
    "n_labels",
    "top1",
    "top1_se",
    "top5",
    "top5_se",
    "test_images",
    "final_loss",
    "final_online_knn",
)


def parse_budget(text: str, preset: str) -> tuple[int, ...]:
    """``E1,E2,...`` as the sorted pretraining epochs of a budget; each a valid config of
    ``preset``.

    Raises:
        ValueError: one line naming the value and the rule it breaks.
    """
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError as error:
        raise ValueError(
            f"--budget takes epochs as whole numbers, e.g. 1,2,4,8,16; got {text!r}"
        ) from error
    if len(values) < 2:
        raise ValueError(
            f"--budget needs at least two different epochs, e.g. 1,2,4,8,16; got {text!r}"
        )
    if values[0] < 1:
        raise ValueError(
            f"--budget epochs must be >= 1 (random init is the budget-0 point); got {text!r}"
        )
    for epochs in values:
        pretrain_config(preset, epochs=epochs)  # every other field is the preset's
    return tuple(values)


def budget_folder(
    preset: str, aug: str, seed: int, epochs: int, runs_dir: str | os.PathLike = "runs"
) -> Path:
    """The run folder of ``aug`` pretrained ``epochs`` epochs: the study's own at the preset's
    epochs, else ``<runs_dir>/<preset>/sweep-epochs/<epochs>/<aug>/seed-<seed>``."""
    if epochs == pretrain_config(preset, aug=aug).epochs:
        return run_folder(preset, aug, seed, runs_dir)
    return sweep_folder(preset, BUDGET_FIELD, epochs, aug, seed, runs_dir)


def _finished(folder: Path) -> dict[str, Any] | None:
    """The metrics of the finished pretraining in ``folder``, or None."""
    path = folder / METRICS
    if not path.is_file():
        return None
    metrics = read_metrics(path)
    return metrics if len(metrics["epochs"]) >= metrics["config"]["epochs"] else None


def budget_encoders(
    runs_dir: str | os.PathLike, preset: str
) -> list[tuple[str, int, int, Path, dict[str, Any] | None]]:
    """(aug, epochs, seed, folder, metrics) of every encoder of the budget: each finished run under
    ``sweep-epochs/``, the study's finished run of each of their augs and seeds, and random init
    (epochs 0, no metrics) of each of their seeds; none when no budget run has finished."""
    root = resolve(runs_dir or "runs") / preset
    found: dict[tuple[str, int, int], tuple[Path, dict[str, Any]]] = {}
    # a link is the study's run under another name (a sweep of epochs before --budget)
    for path in sorted(root.glob(f"sweep-{BUDGET_FIELD}/*/*/seed-*/{METRICS}")):
        folder = path.parent
        if any(p.is_symlink() for p in (folder, folder.parent, folder.parent.parent)):
            continue
        if (metrics := _finished(folder)) is not None:
            aug, seed = folder.parent.name, int(folder.name.removeprefix("seed-"))
            found[(aug, int(metrics["config"]["epochs"]), seed)] = (folder, metrics)
    pairs = sorted({(aug, seed) for aug, _, seed in found})
    for aug, seed in pairs:
        folder = run_folder(preset, aug, seed, runs_dir)
        if (metrics := _finished(folder)) is not None:
            found.setdefault((aug, int(metrics["config"]["epochs"]), seed), (folder, metrics))
    encoders = [(a, e, s, f, m) for (a, e, s), (f, m) in found.items()]
    encoders += [
        (SCRATCH, 0, seed, run_folder(preset, SCRATCH, seed, runs_dir), None)
        for seed in sorted({seed for _, seed in pairs})
    ]
    return sorted(encoders, key=lambda e: (e[0] != SCRATCH, e[0], e[1], e[2]))


def _result_rows(folder: Path, preset: str) -> Iterator[dict[str, Any]]:
    """The budget's evaluation rows of one encoder folder that exist."""
    wanted = [("finetune", f) for f in FINETUNE_FRACTIONS] + [
        ("linear", f) for f in LINEAR_FRACTIONS
    ]
    for mode, fraction in wanted:
        path = evaluation_folder(folder, mode, fraction) / RESULT
        if path.is_file():
            row = read_result(path)
            yield {
                "evaluation": mode,
                "fraction": fraction,
                "n_labels": row["n_labels"],
                "top1": row["top1"],
                "top5": row["top5"],
                "test_images": row["test_images"],
            }
    # the study's probes when they ran (the same k-NN on the same features), else the budget's own
    config = finetune_config(preset)
    for path in (probes_folder(folder) / KNN, folder / "knn" / KNN):
        if knn := knn_row(path, config.bn_stats):
            yield {
                "evaluation": "knn",
                "fraction": 1.0,
                "n_labels": config.train_images or 50_000,
                "top1": knn["top1"],
                "top5": knn["top5"],
                "test_images": knn["test_images"],
            }
            return


def collect_budget(runs_dir: str | os.PathLike, preset: str) -> pd.DataFrame:
    """One row per (aug, epochs, seed, evaluation) of the budget: top-1 and top-5 with their
    test-set standard errors (as results.csv), the pretraining's final loss and online k-NN top-1;
    random init as epochs 0. Empty (with the :data:`COLUMNS`) when no budget run has finished."""
    rows = []
    for aug, epochs, seed, folder, metrics in budget_encoders(runs_dir, preset):
        last = metrics["epochs"][-1] if metrics else {}
        for row in _result_rows(folder, preset):
            n = int(row["test_images"])
            rows.append(
                {
                    "preset": preset,
                    "aug": aug,
                    "epochs": epochs,
                    "seed": seed,
                    **row,
                    "top1_se": round(accuracy_se(row["top1"], n), 4),
                    "top5_se": round(accuracy_se(row["top5"], n), 4),
                    "final_loss": last.get("loss"),
                    "final_online_knn": last.get("online_knn_top1"),
                }
            )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    order = {name: i for i, name in enumerate(EVALUATIONS)}
    frame = frame.sort_values(
        ["aug", "epochs", "seed", "evaluation", "n_labels"],
        key=lambda c: c.map(order) if c.name == "evaluation" else c,
        kind="stable",
    )
    return frame.round(4).reset_index(drop=True)  # as the sweeps' rows


def evaluation_name(evaluation: str, n_labels: int) -> str:
    """One evaluation of the budget in words, as its panel and claims.md name it."""
    words = {"finetune": "fine-tuned", "linear": "linear", "knn": f"k-NN (k = {KNN_K})"}
    return f"{words.get(evaluation, evaluation)}, {int(n_labels):,} labels"


def evaluations(rows: pd.DataFrame) -> list[tuple[str, int]]:
    """(evaluation, n_labels) of every evaluation in ``rows``, in :data:`EVALUATIONS` order."""
    keys = {(str(e), int(n)) for e, n in zip(rows["evaluation"], rows["n_labels"], strict=True)}
    return sorted(keys, key=lambda k: (EVALUATIONS.index(k[0]) if k[0] in EVALUATIONS else 9, k[1]))

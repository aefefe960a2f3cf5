"""The study's numbers: run outputs -> ``results.csv`` and Markdown tables beside the reference
report's.

This module is also the one place that holds the reference report's published accuracies: a course
report, SwAV with ResNet-18 on CIFAR-100, pretrained 100 epochs at batch 256 and fine-tuned on
1-40 % of the labels (its Tables 1-2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from swavnb.base import folder_lock, run_guard
from swavnb.base.errors import RunFolderError
from swavnb.base.files import write_json, write_text
from swavnb.base.layout import (
    CLUSTERS,
    KNN,
    METRICS,
    RESULT,
    is_study_run,
    resolve,
    results_folder,
    shown,
)
from swavnb.evaluation.clusters import COLUMNS as CLUSTER_COLUMNS
from swavnb.evaluation.clusters import METHODS, SCORES
from swavnb.evaluation.config import BN_STATS
from swavnb.evaluation.intervals import Estimate, accuracy_se, mean_interval
from swavnb.evaluation.records import read_metrics, read_result, read_rows
from swavnb.study.budget import BUDGET_CSV, collect_budget
from swavnb.study.budget_claims import budget_claims
from swavnb.study.claims import claims_markdown
from swavnb.study.curves import CURVES, curves_csv
from swavnb.study.rows import RUN, check_rows
from swavnb.study.sweeps import collect_sweep, sweep_claims, sweep_fields

# The reference report's fine-tuning accuracies (percent), {aug: {label fraction: (top-1, top-5)}}.
REPORT_RESULTS: dict[str, dict[float, tuple[float, float]]] = {
    "jitter": {0.01: (2.92, 11.79), 0.1: (15.42, 36.82), 0.3: (27.85, 51.95), 0.4: (31.15, 55.84)},
    "flip": {0.01: (4.72, 16.22), 0.1: (18.69, 41.44), 0.3: (29.44, 55.21), 0.4: (33.79, 58.73)},
}
REPORT_TABLES = {"jitter": "Table 1", "flip": "Table 2"}
REPORT_POOL = 50_000  # the report's fractions are of CIFAR-100's 50,000 training images
# the report fine-tunes the whole network; its tables compare only with these rows
REPORT_MODE = "finetune"
# the report's scale, said wherever its numbers are shown beside ours: no preset's is comparable
REPORT_SCALE = "50,000 images, 32 px, 100 epochs"
COLUMNS = (
    "preset",
    "aug",
    "mode",
    "fraction",
    "top1",
    "top5",
    "epochs",
    "seconds",
    "device",
    "precision",
)
KNN_COLUMNS = ("preset", "aug", "seed", "bn_stats", "k", "top1", "top5", "test_images")
AUG_ORDER = ("jitter", "flip", "swav", "scratch")
# what the pretraining table's usage columns count, and why the probes' usage figures differ
USAGE_NOTE = (
    "*usage entropy*, *prototypes used*: how many of the last pretraining epoch's training views "
    "(each image's first augmented view, the model in training mode, BN on batch statistics) had "
    "each prototype as their nearest: the entropy of these counts divided by log K (1 = uniform), "
    "and the share of prototypes with any. The probes' usage figures (`usage-<aug>-seed<s>.png`) "
    "count the test images' nearest prototypes under the final model in eval mode instead, with "
    "the BN running averages pretraining left (with multi-crop, updated last by the small local "
    "crops): their entropy is lower, for `swav` mostly because of those BN statistics."
)
_NESTED = ("curves", "per_superclass")  # per-run detail that stays in result.json
_MISSING = "–"


def aug_rank(aug: str) -> int:
    """Position of an aug in the study's order (unknown ones last), for sorting."""
    return AUG_ORDER.index(aug) if aug in AUG_ORDER else len(AUG_ORDER)


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    key = lambda column: column.map(aug_rank) if column.name == "aug" else column
    return frame.sort_values(by, key=key, kind="stable").reset_index(drop=True)


def collect_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per ``result.json`` under ``run_dir`` (``runs/<preset>``).

    Returns:
        The :data:`COLUMNS` first, in that order, then any other flat fields
        (n_labels, test_images, image_size, checkpoint); sorted by aug, mode and fraction.
    """
    paths = _study_files(run_dir, RESULT)
    rows = [read_result(path) for path in paths]
    rows = [_with_uncertainty({k: v for k, v in row.items() if k not in _NESTED}) for row in rows]
    # what every row has (an empty study too): the study's columns, then labels, seed and errors
    known = [*COLUMNS, "n_labels", "seed", "top1_se", "top5_se"]
    frame = pd.DataFrame(
        rows, columns=list(dict.fromkeys([*known, *(k for row in rows for k in row)]))
    )
    frame = _one_row_per_evaluation(frame, [path.parent for path in paths])
    # float32 means carry noise digits (0.9999999776); a 10,000-image test set resolves 0.01 %
    # anyway
    return _sorted(frame.round({"top1": 4, "top5": 4}), ["aug", "mode", "fraction"])


def _evaluation(folder: Path) -> str | None:
    """The run ``folder`` holds as its manifest names it, its fraction left out (None without a
    readable manifest): two rows of one key and number of labels are one evaluation, of the same
    encoder with the same settings on the same labelled images."""
    try:
        manifest = run_guard.read_manifest(folder)
    except RunFolderError:
        return None
    if manifest is None:
        return None
    identity = {k: v for k, v in (manifest.get("identity") or {}).items() if k != "fraction"}
    return json.dumps([identity, manifest.get("version"), manifest.get("source")], sort_keys=True)


def _one_row_per_evaluation(rows: pd.DataFrame, folders: list[Path]) -> pd.DataFrame:
    """``rows`` (one per folder in ``folders``) with one row per evaluation.

    Two fractions of one pool can take the same number of labels, so the same labelled images
    (smoke's 2 images per class give 1 at 1, 10, 30 and 40 %): a one-off ``finetune --fraction
    0.3`` beside the study's 0.01 then evaluated one cell twice. Where the manifests show that the
    rows of one (aug, mode, labels, seed) are one evaluation but for the fraction, the row of the
    smallest fraction is kept, as the study plans it (:func:`swavnb.study.plan.study_fractions`),
    and one line names the others; rows not shown to be the same are left for
    :func:`swavnb.study.rows.check_rows` to refuse.
    """
    if rows.empty or rows["n_labels"].isna().all():
        return rows
    runs = pd.Series([_evaluation(folder) for folder in folders], index=rows.index)
    left_out = []
    for (aug, mode, labels, seed), group in rows.groupby(list(RUN), sort=False):
        keys = runs[group.index]
        if len(group) < 2 or keys.isna().any() or keys.nunique() > 1:
            continue
        kept, *others = group.sort_values("fraction", kind="stable").index
        left_out += others
        print(
            f"results: {', '.join(repr(shown(folders[i])) for i in others)} evaluated the same "
            f"{int(labels):,} labels of {aug} {mode} (seed {int(seed)}) as "
            f"'{shown(folders[kept])}', with the same settings: the tables take the latter",
            flush=True,
        )
    return rows.drop(index=left_out)


def _study_files(run_dir: str | os.PathLike, name: str) -> list[Path]:
    """Every ``name`` under ``run_dir`` but in a sweep's or a custom run's folders: those are not
    the study's encoders."""
    root = Path(run_dir)
    return [path for path in sorted(root.rglob(name)) if is_study_run(path.relative_to(root))]


def _with_uncertainty(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its seed (0 before rows had one) and the test-set standard error of its
    accuracies."""
    row.setdefault("seed", 0)
    for metric in ("top1", "top5"):
        row.setdefault(f"{metric}_se", round(accuracy_se(row[metric], row["test_images"]), 4))
    return row


def save_knn(
    knn: Mapping[str, Mapping[int, Mapping[str, float]]],
    preset: str,
    aug: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    test_images: int | None = None,
) -> pd.DataFrame:
    """Write the k-NN accuracies of one encoder to ``out_dir/knn.json``, one row per
    (BN statistics, k).

    Args:
        knn: ``{bn_stats: {k: {"top1": %, "top5": %}}}``, each inner mapping as
            :func:`swavnb.evaluation.probes.knn_accuracy` returns it.
        seed, test_images: the replicate, and how many test images (for the rows' errors).
    """
    rows = [
        {
            "preset": preset,
            "aug": aug,
            "seed": seed,
            "test_images": test_images,
            "bn_stats": bn_stats,
            "k": int(k),
            "top1": acc["top1"],
            "top5": acc["top5"],
        }
        for bn_stats, by_k in knn.items()
        for k, acc in by_k.items()
    ]
    # under the folder's lock, held already by a notebook until its last cell, or taken here
    with folder_lock.locked(out_dir, "probes folder"):
        write_json(resolve(out_dir) / KNN, rows)
    return pd.DataFrame(rows, columns=list(KNN_COLUMNS))


def collect_knn(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every ``knn.json`` row under ``run_dir``: preset, aug, seed, bn_stats, k, top1, top5,
    test_images."""
    rows = [
        {"seed": 0, "test_images": None, **row}  # rows from before seeds were recorded
        for path in _study_files(run_dir, KNN)
        if path.parent.name.startswith("probes")  # not a sweep's k-NN rows in a study folder
        for row in read_rows(path)
    ]
    frame = pd.DataFrame(rows, columns=list(KNN_COLUMNS)).round(
        {"top1": 4, "top5": 4}
    )  # as collect_results
    return _sorted(frame, ["aug", "bn_stats", "k"])


def save_clusters(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> pd.DataFrame:
    """Write one encoder's cluster-quality rows (:func:`swavnb.evaluation.clusters.score_rows`) to
    ``out_dir/clusters.json``."""
    with folder_lock.locked(out_dir, "probes folder"):  # as save_knn
        write_json(resolve(out_dir) / CLUSTERS, rows)
    return pd.DataFrame(rows, columns=list(CLUSTER_COLUMNS))


def collect_clusters(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every ``clusters.json`` row under ``run_dir``: preset, aug, method, target, clusters, score,
    value."""
    rows = [row for path in _study_files(run_dir, CLUSTERS) for row in read_rows(path)]
    return _sorted(
        pd.DataFrame(rows, columns=list(CLUSTER_COLUMNS)), ["aug", "method", "target", "score"]
    )


def cluster_table(clusters: pd.DataFrame) -> str:
    """NMI / ARI / purity of every encoder, one column per (method, target)."""
    settings = [
        (m, t)
        for m in METHODS
        for t in ("fine", "superclass")
        if ((clusters["method"] == m) & (clusters["target"] == t)).any()
    ]
    body = []
    for aug in sorted(clusters["aug"].unique(), key=aug_rank):
        mine = (
            clusters[clusters["aug"] == aug].groupby(["method", "target", "score"])["value"].mean()
        )
        body.append(
            [
                aug,
                *(
                    " / ".join(
                        f"{mine[(m, t, s)]:.3f}" if (m, t, s) in mine.index else _MISSING
                        for s in SCORES
                    )
                    if (m, t) in {k[:2] for k in mine.index}
                    else _MISSING
                    for m, t in settings
                ),
            ]
        )
    return _markdown(["encoder", *(f"{m}, {t} labels" for m, t in settings)], body)


def collect_metrics(run_dir: str | os.PathLike) -> dict[tuple[str, int], dict[str, Any]]:
    """The pretraining ``metrics.json`` of each encoder (``run_dir/<aug>/seed-<s>/``), keyed by
    (aug, seed) in study order."""
    found = {}
    for path in Path(run_dir).glob(f"*/seed-*/{METRICS}"):
        metrics = read_metrics(path)
        found[(metrics["config"]["aug"], int(metrics["config"].get("seed", 0)))] = metrics
    return {key: found[key] for key in sorted(found, key=lambda k: (aug_rank(k[0]), k[1]))}


def pretrain_summary(metrics: Mapping[tuple[str, int], Mapping[str, Any]]) -> pd.DataFrame:
    """One row per pretraining run: epochs, final loss and usage, training time, device and
    precision."""
    rows = []
    for (aug, seed), run in metrics.items():
        last = run["epochs"][-1]
        rows.append(
            {
                "aug": aug,
                "seed": seed,
                "epochs": last["epoch"],
                "loss": last["loss"],
                "usage_entropy": last["usage_entropy"],
                "prototypes_used": last["prototypes_used"],
                "seconds": sum(epoch["seconds"] for epoch in run["epochs"]),
                "device": run["device"],
                "precision": run.get("precision"),
                # study --jobs N: its seconds were time-shared with up to N - 1 other steps
                "shared_with_jobs": run.get("shared_with_jobs"),
            }
        )  # None: written before precision (or jobs) was recorded
    return pd.DataFrame(
        rows,
        columns=[
            "aug",
            "seed",
            "epochs",
            "loss",
            "usage_entropy",
            "prototypes_used",
            "seconds",
            "device",
            "precision",
            "shared_with_jobs",
        ],
    )


def _cell(value: float | Estimate | None) -> str:
    if isinstance(value, Estimate):
        return str(value)
    return _MISSING if value is None or pd.isna(value) else f"{value:.2f}"


def _markdown(header: list[str], body: Iterable[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def report_labels(aug: str) -> dict[int, tuple[float, float]]:
    """The reference report's (top-1, top-5) of one aug by number of labels (its fractions of
    50,000)."""
    return {round(f * REPORT_POOL): v for f, v in REPORT_RESULTS.get(aug, {}).items()}


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (aug, mode, number of labels): top-1 and top-5 as means over seeds with their
    95 % intervals (:func:`swavnb.evaluation.intervals.mean_interval`)."""
    check_rows(rows)
    lines = []
    for (aug, mode, labels), runs in rows.groupby(["aug", "mode", "n_labels"], sort=False):
        top1 = mean_interval(list(runs["top1"]), list(runs["top1_se"]))
        top5 = mean_interval(list(runs["top5"]), list(runs["top5_se"]))
        lines.append([aug, mode, int(labels), float(runs["fraction"].iloc[0]), top1, top5])
    frame = pd.DataFrame(lines, columns=["aug", "mode", "n_labels", "fraction", "top1", "top5"])
    return _sorted(frame, ["aug", "mode", "n_labels"])


def _accuracy(summary: pd.DataFrame, aug: str, mode: str) -> dict[int, tuple[Estimate, Estimate]]:
    """{labels: (top-1, top-5)} of one encoder and mode."""
    chosen = summary[(summary["aug"] == aug) & (summary["mode"] == mode)]
    return {int(r.n_labels): (r.top1, r.top5) for r in chosen.itertuples()}


def report_table(rows: pd.DataFrame, aug: str) -> str:
    """One aug's fine-tuning accuracies and the random-init baseline by number of labels, then the
    reference report's at the same count: its single runs at another scale, with no difference
    column, as nothing of ours is comparable with them (:data:`REPORT_SCALE`)."""
    summary = summarise(rows)
    ours, scratch = _accuracy(summary, aug, REPORT_MODE), _accuracy(summary, "scratch", REPORT_MODE)
    report = report_labels(aug)
    header = ["labels", "ours top-1", "ours top-5", "scratch top-1", "scratch top-5"]
    if report:
        header += ["ref. report top-1", "ref. report top-5"]
    body = []
    for labels in sorted({*ours, *report}):
        mine, base = ours.get(labels, (None, None)), scratch.get(labels, (None, None))
        line = [f"{labels:,}", _cell(mine[0]), _cell(mine[1]), _cell(base[0]), _cell(base[1])]
        if report:
            line += [_cell(value) for value in report.get(labels, (None, None))]
        body.append(line)
    return _markdown(header, body) if body else "No runs yet."


def mode_table(rows: pd.DataFrame, mode: str) -> str:
    """Every encoder's top-1 / top-5 by number of labels in one mode (finetune or linear)."""
    summary = summarise(rows)
    augs = sorted(summary.loc[summary["mode"] == mode, "aug"].unique(), key=aug_rank)
    cells = {aug: _accuracy(summary, aug, mode) for aug in augs}
    counts = sorted({n for accuracy in cells.values() for n in accuracy})
    body = [
        [f"{n:,}", *(" / ".join(map(_cell, cells[aug].get(n, (None, None)))) for aug in augs)]
        for n in counts
    ]
    return _markdown(["labels", *augs], body) if body else "No runs yet."


def _pair(top1: float | None, top5: float | None) -> str:
    return _MISSING if top1 is None or pd.isna(top1) else f"{top1:.2f} / {top5:.2f}"


def knn_table(knn: pd.DataFrame) -> str:
    """Weighted k-NN top-1 / top-5 of every encoder, one column per (BN statistics, k), precise
    first."""
    settings = sorted(
        {(bn, int(k)) for bn, k in zip(knn["bn_stats"], knn["k"], strict=True)},
        key=lambda s: (BN_STATS.index(s[0]) if s[0] in BN_STATS else len(BN_STATS), s),
    )
    body = []
    for aug in sorted(knn["aug"].unique(), key=aug_rank):
        mine = knn[knn["aug"] == aug]
        cells = []
        for bn, k in settings:
            runs = mine[(mine["bn_stats"] == bn) & (mine["k"] == k)]
            cells.append(
                " / ".join(_knn_cell(runs, m) for m in ("top1", "top5")) if len(runs) else _MISSING
            )
        body.append([aug, *cells])
    return _markdown(["encoder", *(f"k = {k}, {bn} BN" for bn, k in settings)], body)


def knn_estimate(runs: pd.DataFrame, metric: str) -> Estimate:
    """One k-NN cell's accuracy over seeds with its 95 % interval, the rule of the tables: Student's
    t over the seeds; one run: its test-set error; one run with no test count kept: no interval
    (half width NaN, basis ``none``).

    Args:
        runs: the ``knn.csv`` rows of one (encoder, BN statistics, k), one per seed.
        metric: ``top1`` or ``top5``.
    """
    if runs["test_images"].isna().any() and len(runs) == 1:
        return Estimate(float(runs[metric].iloc[0]), float("nan"), 1, "none")
    ses = [
        accuracy_se(v, int(n)) if pd.notna(n) else 0.0
        for v, n in zip(runs[metric], runs["test_images"], strict=True)
    ]
    return mean_interval(list(runs[metric]), ses)


def knn_summary(knn: pd.DataFrame) -> pd.DataFrame:
    """One line per (aug, BN statistics, k) of ``knn.csv`` rows: top-1 and top-5 as
    :func:`knn_estimate` gives them, in study order."""
    lines = [
        [aug, bn, int(k), knn_estimate(runs, "top1"), knn_estimate(runs, "top5")]
        for (aug, bn, k), runs in knn.groupby(["aug", "bn_stats", "k"], sort=False)
    ]
    frame = pd.DataFrame(lines, columns=["aug", "bn_stats", "k", "top1", "top5"])
    return _sorted(frame, ["aug", "bn_stats", "k"])


def _knn_cell(runs: pd.DataFrame, metric: str) -> str:
    """A k-NN accuracy over seeds with its interval; a bare value where no test count was kept."""
    estimate = knn_estimate(runs, metric)
    return f"{estimate.mean:.2f}" if estimate.basis == "none" else str(estimate)


def _bn_note(rows: pd.DataFrame) -> str:
    """Which BN statistics the linear rows' features used."""
    if not len(rows) or "bn_stats" not in rows:
        return ""
    used = sorted(rows.loc[rows["mode"] == "linear", "bn_stats"].dropna().unique())
    return f", {' and '.join(used)} BN statistics" if used else ""


def _setup(rows: pd.DataFrame) -> list[str]:
    """The test images, image sizes and devices behind the rows."""
    if not len(rows):
        return []
    setup = []
    if "test_images" in rows:
        setup.append(
            f"test images: {', '.join(str(int(n)) for n in sorted(rows['test_images'].unique()))}"
        )
    if "image_size" in rows:
        setup.append(
            f"image size: {', '.join(f'{int(n)} px' for n in sorted(rows['image_size'].unique()))}"
        )
    setup.append(f"device: {', '.join(sorted(rows['device'].astype(str).unique()))}")
    return setup


def _intervals(rows: pd.DataFrame) -> str:
    """What a cell's ± says: over seeds (naming the cells over fewer), or one run's test error."""
    seeds = sorted(int(s) for s in rows["seed"].unique()) if len(rows) else []
    if len(seeds) <= 1:
        return (
            f"Each cell is one run (seed {', '.join(map(str, seeds)) or '–'}) ± 1.96 × its "
            "test-set standard error (binomial): the interval of the test measurement alone, not "
            "of a new pretraining"
        )
    intervals = (
        f"Each cell is the mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}) ± the half "
        "width of its 95 % interval (Student's t over the seeds)"
    )
    # a study still running, or a seed whose evaluation failed
    counts = rows.groupby(["aug", "mode", "n_labels"], sort=False)["seed"].nunique()
    fewer = [
        f"{aug} {mode} at {int(labels):,} labels ({n} seed{'s' if n > 1 else ''})"
        for (aug, mode, labels), n in counts.items()
        if n < len(seeds)
    ]
    return intervals + (f"; cells over fewer seeds: {', '.join(fewer)}" if fewer else "")


def _report_tables(rows: pd.DataFrame) -> list[str]:
    """The reference report's tables for its views, then one for each other view."""
    parts = []
    others = [a for a in AUG_ORDER if a not in REPORT_TABLES and a != "scratch"]
    for aug in [*REPORT_TABLES, *others]:
        title = (
            f"{REPORT_TABLES[aug]} of the reference report: {aug} views"
            if aug in REPORT_TABLES
            else f"{aug} views (not in the reference report)"
        )
        parts += [f"## {title}, fine-tuned on labelled images", report_table(rows, aug)]
    return parts


_PRETRAINING_COLUMNS = [
    "aug",
    "seed",
    "epochs",
    "final loss",
    "usage entropy (last epoch)",
    "prototypes used (last epoch)",
    "minutes",
    "device",
    "precision",
    "shared with jobs",
]


def _pretraining_runs(metrics: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[str]:
    """The pretraining runs' table (:func:`pretrain_summary`) and its notes."""
    body = [
        [
            r.aug,
            str(r.seed),
            str(r.epochs),
            f"{r.loss:.4f}",
            f"{r.usage_entropy:.2f}",
            f"{r.prototypes_used:.2f}",
            f"{r.seconds / 60:.1f}",
            r.device,
            r.precision or _MISSING,
            _MISSING if pd.isna(r.shared_with_jobs) else str(int(r.shared_with_jobs)),
        ]
        for r in pretrain_summary(metrics).itertuples()
    ]
    return [
        "## Pretraining runs",
        _markdown(_PRETRAINING_COLUMNS, body),
        "*shared with jobs*: the study's `--jobs`; above 1 the minutes are time-shared with "
        "the steps that ran beside it (– : not recorded).",
        USAGE_NOTE,
    ]


def markdown_tables(
    rows: pd.DataFrame,
    knn: pd.DataFrame,
    preset: str,
    metrics: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    clusters: pd.DataFrame | None = None,
) -> str:
    """The whole ``tables.md``: the reference report's Tables 1 and 2 reproduced, then every encoder
    and probe."""
    setup = _setup(rows)
    parts = [
        f"# Results of preset `{preset}`",
        "Accuracies in percent on the CIFAR-100 test set"
        + (f" ({'; '.join(setup)})." if setup else ".")
        + " Rows are numbers of labelled images. "
        f"{_intervals(rows)}. The reference report's columns (*ref. report*: a course report, SwAV "
        "with ResNet-18 on CIFAR-100 fine-tuned on 1-40 % of the labels, its Tables 1-2) are its "
        f"single runs at another scale ({REPORT_SCALE}), placed at their label counts (its "
        f"fractions of {REPORT_POOL:,} images): set beside ours for orientation, not comparable "
        "with them.",
        *_report_tables(rows),
        "## Fine-tuning, every encoder (top-1 / top-5)",
        mode_table(rows, "finetune"),
        f"## Linear classifier on frozen features{_bn_note(rows)} (top-1 / top-5)",
        mode_table(rows, "linear"),
        "## Weighted k-NN on frozen features, whole labelled pool (top-1 / top-5)",
        "BN statistics: *precise* ones are recomputed on the labelled pool's clean images for "
        "every encoder; *ema* ones are the running averages pretraining left (a random-init "
        "backbone's are mean 0, variance 1).",
        knn_table(knn) if len(knn) else "No probes yet.",
    ]
    if clusters is not None and len(clusters):
        parts += [
            "## Cluster quality of the test images (NMI / ARI / purity)",
            "*prototypes*: each image's nearest prototype (encoders with prototypes); "
            "*kmeans*: k-means with as many clusters on the frozen (precise-BN) features, "
            "for every encoder.",
            cluster_table(clusters),
        ]
    if metrics:
        parts += _pretraining_runs(metrics)
    return "\n\n".join(parts) + "\n"


@dataclass
class StudyResults:
    """What :func:`write_results` gathered and where it wrote it."""

    rows: pd.DataFrame  # one row per finetune / linear run (results.csv)
    knn: pd.DataFrame  # one row per (encoder, k) (knn.csv)
    clusters: pd.DataFrame  # one row per (encoder, method, target, score) (clusters.csv)
    metrics: dict[tuple[str, int], dict[str, Any]]  # pretraining metrics per (aug, seed)
    tables: str  # the Markdown of tables.md
    claims: str  # the Markdown of claims.md: the reference report's claims tested on the rows
    csv: Path
    markdown: Path
    sweeps: dict[str, pd.DataFrame]  # each swept field's rows (swavnb.study.sweeps.collect_sweep)
    budget: pd.DataFrame  # the pretraining budget's rows (budget.csv; empty without budget runs)


class NoRunsError(FileNotFoundError):
    """A study folder holds no finished run: nothing to gather."""


def gather_results(
    preset: str, runs_dir: str | os.PathLike = "runs", results_dir: str | os.PathLike = "results"
) -> tuple[StudyResults, dict[Path, str]]:
    """What :func:`write_results` writes, without writing: the gathered results and {file: text}.

    Raises:
        NoRunsError: ``runs_dir/<preset>`` holds no evaluation, probe or pretraining run.
        StudyRowsError: the rows cannot be averaged as they are (:func:`check_rows`).
    """
    run_dir, out = resolve(runs_dir or "runs") / preset, results_folder(preset, results_dir)
    rows, knn, clusters = collect_results(run_dir), collect_knn(run_dir), collect_clusters(run_dir)
    metrics, budget = collect_metrics(run_dir), collect_budget(runs_dir, preset)
    check_rows(rows)  # before anything is written: the old tables stay until the rows are sound
    if not len(rows) and not len(knn) and not len(clusters) and not metrics and budget.empty:
        raise NoRunsError(
            f"no runs of preset {preset!r} under '{run_dir}'; fill it with `python -m swavnb.study "
            f"--preset {preset}` (or point runs_dir at the folder that holds {preset}/)"
        )
    tables = markdown_tables(rows, knn, preset, metrics, clusters)
    extra = sweep_claims(runs_dir, preset) + budget_claims(budget)
    claims = claims_markdown(rows, preset) + "\n".join([*extra, ""])
    files = {out / "knn.csv": knn.to_csv(index=False)}
    if len(clusters):
        files[out / "clusters.csv"] = clusters.to_csv(index=False)
    files[out / "tables.md"] = tables
    files[out / "claims.md"] = claims.rstrip("\n") + "\n"
    if (curves := curves_csv(metrics, preset)) is not None:  # what a user's run is drawn against
        files[out / CURVES] = curves
    if not budget.empty:  # python -m swavnb.study --budget
        files[out / BUDGET_CSV] = budget.to_csv(index=False)
    files[out / "results.csv"] = rows.to_csv(index=False)  # last: once it is new, all are
    sweeps = {
        field: collect_sweep(runs_dir, preset, field) for field in sweep_fields(runs_dir, preset)
    }
    gathered = StudyResults(
        rows,
        knn,
        clusters,
        metrics,
        tables,
        claims,
        out / "results.csv",
        out / "tables.md",
        sweeps,
        budget,
    )
    return gathered, files


def write_results(
    preset: str, runs_dir: str | os.PathLike = "runs", results_dir: str | os.PathLike = "results"
) -> StudyResults:
    """Gather ``runs_dir/<preset>`` into ``results_dir/<preset>/`` results.csv, knn.csv,
    clusters.csv, curves.csv (:mod:`swavnb.study.curves`), budget.csv (:mod:`swavnb.study.budget`,
    where budget runs exist), tables.md and claims.md, each written atomically.

    Relative folders are taken from the project root (:func:`swavnb.base.layout.resolve`).

    Raises:
        NoRunsError: ``runs_dir/<preset>`` holds no evaluation, probe or pretraining run; nothing is
            written, so existing tables are never replaced by empty ones.
        DiskFullError: no space for one of the files; it and those not yet written keep their
            previous content, and :func:`results_current` says they are not current.
    """
    gathered, files = gather_results(preset, runs_dir, results_dir)
    for path, text in files.items():
        write_text(path, text)
    return gathered


def results_current(
    preset: str, runs_dir: str | os.PathLike = "runs", results_dir: str | os.PathLike = "results"
) -> bool:
    """Whether ``results_dir/<preset>/`` holds exactly what :func:`write_results` would write now:
    the results step's "done", which an empty, cut-off or stale file never passes.

    Any error gathering the runs (none yet, rows that cannot be averaged, a damaged row) counts as
    not current: the step then runs and says it in one line.
    """
    try:
        _, files = gather_results(preset, runs_dir, results_dir)
    except (ValueError, OSError):
        return False
    return all(_holds(path, text) for path, text in files.items())


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_bytes() == text.encode()
    except OSError:
        return False

"""The study's numbers: run outputs -> ``results.csv`` and Markdown tables beside the seed's.

This module is also the one place that holds the seed paper's published accuracies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from swavnb.checkpoint import write_json
from swavnb.clusters import COLUMNS as CLUSTER_COLUMNS
from swavnb.clusters import METHODS, SCORES
from swavnb.config import BN_STATS
from swavnb.layout import CLUSTERS, KNN, METRICS, RESULT, resolve, results_folder

# The seed's fine-tuning accuracies (percent), {aug: {label fraction: (top-1, top-5)}}.
SEED_RESULTS: dict[str, dict[float, tuple[float, float]]] = {
    "jitter": {0.01: (2.92, 11.79), 0.1: (15.42, 36.82), 0.3: (27.85, 51.95), 0.4: (31.15, 55.84)},
    "flip": {0.01: (4.72, 16.22), 0.1: (18.69, 41.44), 0.3: (29.44, 55.21), 0.4: (33.79, 58.73)},
}
SEED_TABLES = {"jitter": "Table 1", "flip": "Table 2"}
SEED_MODE = (
    "finetune"  # the seed fine-tunes the whole network; its tables compare only with these rows
)
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
KNN_COLUMNS = ("preset", "aug", "bn_stats", "k", "top1", "top5")
AUG_ORDER = ("jitter", "flip", "swav", "scratch")
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
    rows = [json.loads(path.read_text()) for path in sorted(Path(run_dir).rglob(RESULT))]
    rows = [{k: v for k, v in row.items() if k not in _NESTED} for row in rows]
    frame = pd.DataFrame(
        rows, columns=list(dict.fromkeys([*COLUMNS, *(k for row in rows for k in row)]))
    )
    # float32 means carry noise digits (0.9999999776); a 10,000-image test set resolves 0.01 %
    # anyway
    return _sorted(frame.round({"top1": 4, "top5": 4}), ["aug", "mode", "fraction"])


def save_knn(
    knn: Mapping[str, Mapping[int, Mapping[str, float]]],
    preset: str,
    aug: str,
    out_dir: str | os.PathLike,
) -> pd.DataFrame:
    """Write the k-NN accuracies of one encoder to ``out_dir/knn.json``, one row per
    (BN statistics, k).

    Args:
        knn: ``{bn_stats: {k: {"top1": %, "top5": %}}}``, each inner mapping as
            :func:`swavnb.probes.knn_accuracy` returns it.
    """
    rows = [
        {
            "preset": preset,
            "aug": aug,
            "bn_stats": bn_stats,
            "k": int(k),
            "top1": acc["top1"],
            "top5": acc["top5"],
        }
        for bn_stats, by_k in knn.items()
        for k, acc in by_k.items()
    ]
    write_json(resolve(out_dir) / KNN, rows)
    return pd.DataFrame(rows, columns=list(KNN_COLUMNS))


def collect_knn(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every ``knn.json`` row under ``run_dir``: preset, aug, bn_stats, k, top1, top5."""
    rows = [
        row for path in sorted(Path(run_dir).rglob(KNN)) for row in json.loads(path.read_text())
    ]
    frame = pd.DataFrame(rows, columns=list(KNN_COLUMNS)).round(
        {"top1": 4, "top5": 4}
    )  # as collect_results
    return _sorted(frame, ["aug", "bn_stats", "k"])


def save_clusters(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> pd.DataFrame:
    """Write one encoder's cluster-quality rows (:func:`swavnb.clusters.score_rows`) to
    ``out_dir/clusters.json``."""
    write_json(resolve(out_dir) / CLUSTERS, rows)
    return pd.DataFrame(rows, columns=list(CLUSTER_COLUMNS))


def collect_clusters(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every ``clusters.json`` row under ``run_dir``: preset, aug, method, target, clusters, score,
    value."""
    rows = [
        row
        for path in sorted(Path(run_dir).rglob(CLUSTERS))
        for row in json.loads(path.read_text())
    ]
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


def collect_metrics(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The pretraining ``metrics.json`` of each aug (``run_dir/<aug>/metrics.json``), in study
    order."""
    found = {}
    for path in Path(run_dir).glob(f"*/{METRICS}"):
        metrics = json.loads(path.read_text())
        found[metrics["config"]["aug"]] = metrics
    return {aug: found[aug] for aug in sorted(found, key=aug_rank)}


def pretrain_summary(metrics: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per pretraining run: epochs, final loss and usage, training time, device and
    precision."""
    rows = []
    for aug, run in metrics.items():
        last = run["epochs"][-1]
        rows.append(
            {
                "aug": aug,
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


def _cell(value: float | None) -> str:
    return _MISSING if value is None or pd.isna(value) else f"{value:.2f}"


def _pair(top1: float | None, top5: float | None) -> str:
    return _MISSING if top1 is None or pd.isna(top1) else f"{top1:.2f} / {top5:.2f}"


def _markdown(header: list[str], body: Iterable[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _label(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _accuracy(rows: pd.DataFrame, aug: str, mode: str) -> dict[float, tuple[float, float]]:
    """{fraction: (top-1, top-5)} of one encoder and mode (repeated runs are averaged)."""
    chosen = rows[(rows["aug"] == aug) & (rows["mode"] == mode)]
    means = chosen.groupby("fraction")[["top1", "top5"]].mean()
    return {float(f): (float(r.top1), float(r.top5)) for f, r in means.iterrows()}


def seed_table(rows: pd.DataFrame, aug: str) -> str:
    """One aug's fine-tuning accuracies per label fraction beside the seed's and the scratch
    baseline."""
    ours, scratch = _accuracy(rows, aug, SEED_MODE), _accuracy(rows, "scratch", SEED_MODE)
    seed = SEED_RESULTS.get(aug, {})
    header = ["labels", "ours top-1", "ours top-5"]
    if seed:
        header += ["seed top-1", "seed top-5", "Δ top-1"]
    header += ["scratch top-1", "scratch top-5"]
    body = []
    for fraction in sorted({*ours, *seed}):
        mine, theirs, base = (
            ours.get(fraction, (None, None)),
            seed.get(fraction, (None, None)),
            scratch.get(fraction),
        )
        line = [_label(fraction), _cell(mine[0]), _cell(mine[1])]
        if seed:
            delta = None if mine[0] is None or theirs[0] is None else mine[0] - theirs[0]
            line += [
                _cell(theirs[0]),
                _cell(theirs[1]),
                _MISSING if delta is None else f"{delta:+.2f}",
            ]
        line += [_cell(base[0]), _cell(base[1])] if base else [_MISSING, _MISSING]
        body.append(line)
    return _markdown(header, body) if body else "No runs yet."


def mode_table(rows: pd.DataFrame, mode: str) -> str:
    """Every encoder's top-1 / top-5 per label fraction in one mode (``finetune`` or ``linear``)."""
    augs = sorted(rows.loc[rows["mode"] == mode, "aug"].unique(), key=aug_rank)
    cells = {aug: _accuracy(rows, aug, mode) for aug in augs}
    fractions = sorted({f for accuracy in cells.values() for f in accuracy})
    body = [
        [_label(f), *(_pair(*cells[aug].get(f, (None, None))) for aug in augs)] for f in fractions
    ]
    return _markdown(["labels", *augs], body) if body else "No runs yet."


def knn_table(knn: pd.DataFrame) -> str:
    """Weighted k-NN top-1 / top-5 of every encoder, one column per (BN statistics, k), precise
    first."""
    settings = sorted(
        {(bn, int(k)) for bn, k in zip(knn["bn_stats"], knn["k"], strict=True)},
        key=lambda s: (BN_STATS.index(s[0]) if s[0] in BN_STATS else len(BN_STATS), s),
    )
    body = []
    for aug in sorted(knn["aug"].unique(), key=aug_rank):
        mine = knn[knn["aug"] == aug].groupby(["bn_stats", "k"])[["top1", "top5"]].mean()
        body.append(
            [aug, *(_pair(*mine.loc[s]) if s in mine.index else _MISSING for s in settings)]
        )
    return _markdown(["encoder", *(f"k = {k}, {bn} BN" for bn, k in settings)], body)


def _bn_note(rows: pd.DataFrame) -> str:
    """Which BN statistics the linear rows' features used."""
    if not len(rows) or "bn_stats" not in rows:
        return ""
    used = sorted(rows.loc[rows["mode"] == "linear", "bn_stats"].dropna().unique())
    return f", {' and '.join(used)} BN statistics" if used else ""


def markdown_tables(
    rows: pd.DataFrame,
    knn: pd.DataFrame,
    preset: str,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    clusters: pd.DataFrame | None = None,
) -> str:
    """The whole ``tables.md``: the seed's Tables 1 and 2 reproduced, then every encoder and
    probe."""
    setup = []
    if "test_images" in rows and len(rows):
        setup.append(
            f"test images: {', '.join(str(int(n)) for n in sorted(rows['test_images'].unique()))}"
        )
    if "image_size" in rows and len(rows):
        setup.append(
            f"image size: {', '.join(f'{int(n)} px' for n in sorted(rows['image_size'].unique()))}"
        )
    if len(rows):
        setup.append(f"device: {', '.join(sorted(rows['device'].astype(str).unique()))}")
    parts = [
        f"# Results of preset `{preset}`",
        "Accuracies in percent on the CIFAR-100 test set"
        + (f" ({'; '.join(setup)})." if setup else "."),
    ]
    for aug in [*SEED_TABLES, *(a for a in AUG_ORDER if a not in SEED_TABLES and a != "scratch")]:
        title = (
            f"{SEED_TABLES[aug]} of the seed: {aug} views"
            if aug in SEED_TABLES
            else f"{aug} views (not in the seed)"
        )
        parts += [f"## {title}, fine-tuned on a fraction of the labels", seed_table(rows, aug)]
    parts += [
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
        summary = pretrain_summary(metrics)
        body = [
            [
                r.aug,
                str(r.epochs),
                f"{r.loss:.4f}",
                f"{r.usage_entropy:.2f}",
                f"{r.prototypes_used:.2f}",
                f"{r.seconds / 60:.1f}",
                r.device,
                r.precision or _MISSING,
                _MISSING if pd.isna(r.shared_with_jobs) else str(int(r.shared_with_jobs)),
            ]
            for r in summary.itertuples()
        ]
        parts += [
            "## Pretraining runs",
            _markdown(
                [
                    "aug",
                    "epochs",
                    "final loss",
                    "usage entropy",
                    "prototypes used",
                    "minutes",
                    "device",
                    "precision",
                    "shared with jobs",
                ],
                body,
            ),
            "*shared with jobs*: the study's `--jobs`; above 1 the minutes are time-shared with "
            "the steps that ran beside it (– : not recorded).",
        ]
    return "\n\n".join(parts) + "\n"


@dataclass
class StudyResults:
    """What :func:`write_results` gathered and where it wrote it."""

    rows: pd.DataFrame  # one row per finetune / linear run (results.csv)
    knn: pd.DataFrame  # one row per (encoder, k) (knn.csv)
    clusters: pd.DataFrame  # one row per (encoder, method, target, score) (clusters.csv)
    metrics: dict[str, dict[str, Any]]  # pretraining metrics per aug
    tables: str  # the Markdown of tables.md
    csv: Path
    markdown: Path


class NoRunsError(FileNotFoundError):
    """A study folder holds no finished run: nothing to gather."""


def write_results(
    preset: str, runs_dir: str | os.PathLike = "runs", results_dir: str | os.PathLike = "results"
) -> StudyResults:
    """Gather ``runs_dir/<preset>`` into ``results_dir/<preset>/`` results.csv, knn.csv and
    tables.md.

    Relative folders are taken from the project root (:func:`swavnb.layout.resolve`).

    Raises:
        NoRunsError: ``runs_dir/<preset>`` holds no evaluation, probe or pretraining run; nothing is
            written, so existing tables are never replaced by empty ones.
    """
    run_dir, out = resolve(runs_dir) / preset, results_folder(preset, results_dir)
    rows, knn, clusters = collect_results(run_dir), collect_knn(run_dir), collect_clusters(run_dir)
    metrics = collect_metrics(run_dir)
    if not len(rows) and not len(knn) and not len(clusters) and not metrics:
        raise NoRunsError(
            f"no runs of preset {preset!r} under '{run_dir}'; fill it with `python -m swavnb.study "
            f"--preset {preset}` (or point runs_dir at the folder that holds {preset}/)"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out / "results.csv", index=False)
    knn.to_csv(out / "knn.csv", index=False)
    if len(clusters):
        clusters.to_csv(out / "clusters.csv", index=False)
    tables = markdown_tables(rows, knn, preset, metrics, clusters)
    (out / "tables.md").write_text(tables)
    return StudyResults(
        rows, knn, clusters, metrics, tables, out / "results.csv", out / "tables.md"
    )

"""The study's per-epoch pretraining curves: ``results/<preset>/curves.csv``, committed, so a user's
run can be drawn against the published ones (:func:`swavnb.study.plots.reference_curves`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from swavnb.base.files import write_text
from swavnb.base.layout import resolve

CURVES = "curves.csv"
# what an epoch's record in metrics.json gives (online_knn_top1: empty for runs without the online
# k-NN, and for those written before it)
FIGURES = ("loss", "online_knn_top1", "usage_entropy", "prototypes_used", "lr")
COLUMNS = ("preset", "aug", "seed", "epoch", *FIGURES)


def run_curves(metrics: Mapping[str, Any], preset: str | None = None) -> pd.DataFrame:
    """One pretraining run's ``metrics.json`` as rows of :data:`COLUMNS`, one per epoch.

    Args:
        preset: the preset column (default the run's config's).
    """
    config = metrics.get("config", {})
    rows = [
        {
            "preset": preset or config.get("preset"),
            "aug": config.get("aug"),
            "seed": int(config.get("seed", 0)),
            "epoch": epoch["epoch"],
            **{name: epoch.get(name) for name in FIGURES},
        }
        for epoch in metrics["epochs"]
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype({name: float for name in FIGURES})


def study_curves(
    metrics_by_run: Mapping[tuple[str, int], Mapping[str, Any]], preset: str
) -> pd.DataFrame:
    """The curves of every run of the study of ``preset``
    (:func:`swavnb.study.results.collect_metrics`), in study order."""
    frames = [run_curves(metrics, preset) for metrics in metrics_by_run.values()]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def curves_csv(
    metrics_by_run: Mapping[tuple[str, int], Mapping[str, Any]], preset: str
) -> str | None:
    """``curves.csv``'s text for the study's runs of ``preset``; None without runs (a committed
    file is never replaced by an empty one)."""
    curves = study_curves(metrics_by_run, preset)
    return curves.to_csv(index=False, float_format="%.6g") if len(curves) else None


def write_curves(
    metrics_by_run: Mapping[tuple[str, int], Mapping[str, Any]],
    preset: str,
    out: str | os.PathLike,
) -> Path | None:
    """Write the curves of the study's runs of ``preset`` to ``out/curves.csv`` atomically; without
    runs nothing is written.

    Returns:
        The file written, or None.
    """
    text = curves_csv(metrics_by_run, preset)
    if text is None:
        return None
    path = resolve(out) / CURVES
    write_text(path, text)
    return path


def read_curves(
    preset: str, aug: str | None = None, results_dir: str | os.PathLike = "results"
) -> pd.DataFrame:
    """The committed curves of ``preset`` (and ``aug``), empty where there are none.

    Args:
        results_dir: taken from the project root when relative.
    """
    path = resolve(results_dir) / preset / CURVES
    curves = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=list(COLUMNS))
    chosen = curves["preset"] == preset
    if aug is not None:
        chosen &= curves["aug"] == aug
    return curves[chosen].reset_index(drop=True)


def spread(curves: pd.DataFrame, figure: str) -> pd.DataFrame:
    """Per epoch, ``figure``'s mean over the seeds that have it, its lowest and highest value and
    the number of seeds.

    Returns:
        Columns epoch, mean, low, high, seeds; epochs where no seed has the figure are left out.
    """
    present = curves.dropna(subset=[figure])
    grouped = present.groupby("epoch")[figure]
    return pd.DataFrame(
        {
            "mean": grouped.mean(),
            "low": grouped.min(),
            "high": grouped.max(),
            "seeds": grouped.count(),
        }
    ).reset_index()

"""Does a study run elsewhere reproduce the committed one? Cell by cell, from the two results.csv.

A cell is (aug, mode, number of labels). For each, both runs' mean top-1 over seeds with its 95 %
interval (swavnb.evaluation.intervals), the difference, Welch's p, and whether the new mean lies
inside the reference's interval; then a one-line summary. Rule, fixed before looking: the runs agree
when no cell differs after Holm's correction over the cells (family-wise 5 %); a cell whose Welch p
cannot be computed (one seed, or no spread on either side) is counted apart, never as agreement.
Cells must have been evaluated alike in both files (same evaluation setup columns) or it stops.

    python experiments/compare_studies.py results/quick/results.csv \
        ../other/results/quick/results.csv \
        --reference-name "committed (4 seeds, float32, Zen 3)" --name "Zen 4 (3 seeds, bf16)" \
        --json docs/data/seeds3-zen4-2026-12-03.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from swavnb.evaluation.intervals import mean_interval

CELL = ["aug", "mode", "n_labels"]
# what makes two cells the same evaluation: a difference here is a different protocol, not noise
SETUP = ["preset", "bn_stats", "image_size", "test_images", "epochs"]


def _setup(rows: pd.DataFrame) -> dict[str, Any]:
    return {c: sorted(rows[c].unique().tolist()) for c in SETUP if c in rows}


def cells(reference: pd.DataFrame, other: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per cell both runs have, with the new run's mean against the reference's interval.

    Raises:
        SystemExit: a cell was evaluated otherwise in the two files (its setup columns differ).
    """
    out = []
    for key, ref in reference.groupby(CELL):
        new = other
        for column, value in zip(CELL, key, strict=True):
            new = new[new[column] == value]
        if new.empty:
            continue
        if _setup(ref) != _setup(new):
            raise SystemExit(
                f"error: cell {key} was evaluated otherwise: {_setup(ref)} against {_setup(new)}"
            )
        a = mean_interval(list(ref["top1"]), list(ref["top1_se"]))
        b = mean_interval(list(new["top1"]), list(new["top1_se"]))
        welch = (
            float(stats.ttest_ind(new["top1"], ref["top1"], equal_var=False).pvalue)
            if min(len(ref), len(new)) > 1
            else float("nan")
        )
        out.append(
            {
                **dict(zip(CELL, (key[0], key[1], int(key[2])), strict=True)),
                "reference_mean": round(a.mean, 2),
                "reference_half95": round(a.half_width, 2),
                "reference_seeds": a.n,
                "mean": round(b.mean, 2),
                "half95": round(b.half_width, 2),
                "seeds": b.n,
                "diff": round(b.mean - a.mean, 2),
                "welch_p": None if welch != welch else round(welch, 4),  # NaN: no spread
                "mean_in_reference_interval": bool(a.low <= b.mean <= a.high),
            }
        )
    return out


def holm_differing(rows: list[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """The cells that differ under Holm's step-down correction over every cell with a p."""
    tested = sorted((r for r in rows if r["welch_p"] is not None), key=lambda r: r["welch_p"])
    differing = []
    for rank, row in enumerate(tested):
        if row["welch_p"] > alpha / (len(tested) - rank):
            break
        differing.append(row)
    return differing


def summary(rows: list[dict[str, Any]], unmatched: int) -> str:
    inside = sum(r["mean_in_reference_interval"] for r in rows)
    untested = sum(r["welch_p"] is None for r in rows)
    significant = sum(r["welch_p"] is not None and r["welch_p"] < 0.05 for r in rows)
    differing = holm_differing(rows)
    diffs = [r["diff"] for r in rows]
    if differing:
        verdict = "the runs differ in " + ", ".join(
            f"{r['aug']} {r['mode']} {r['n_labels']}" for r in differing
        )
    elif untested:
        verdict = f"no tested cell differs; {untested} cells could not be tested"
    else:
        verdict = "the runs agree (no cell differs after Holm's correction)"
    expected = 0.05 * (len(rows) - untested)
    mean_diff = sum(diffs) / len(diffs)
    mean_abs = sum(abs(d) for d in diffs) / len(diffs)
    return (
        f"{len(rows)} cells in common (aug x mode x labels; {unmatched} in one file only): "
        f"the mean top-1 lies inside the reference's 95 % interval in {inside}; uncorrected "
        f"Welch p < 0.05 in {significant} ({expected:.1f} expected by chance); mean difference "
        f"{mean_diff:+.2f} points, mean |difference| {mean_abs:.2f}; {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="the committed results.csv")
    parser.add_argument("other", type=Path, help="results.csv of the run to compare")
    parser.add_argument("--reference-name", default="reference")
    parser.add_argument("--name", default="other")
    parser.add_argument("--json", type=Path, help="write the cells and summary here")
    args = parser.parse_args()
    reference, other = pd.read_csv(args.reference), pd.read_csv(args.other)
    rows = cells(reference, other)
    if not rows:
        raise SystemExit("error: the two results.csv have no (aug, mode, n_labels) cell in common")
    keys = [
        {tuple(k) for k in frame[CELL].drop_duplicates().itertuples(index=False)}
        for frame in (reference, other)
    ]
    for r in rows:
        p = "  –  " if r["welch_p"] is None else f"{r['welch_p']:.3f}"
        print(
            f"{r['aug']:8} {r['mode']:8} {r['n_labels']:5}  {r['reference_mean']:6.2f} ± "
            f"{r['reference_half95']:.2f}  {r['mean']:6.2f} ± {r['half95']:.2f}  p {p}"
        )
    line = summary(rows, len(keys[0] ^ keys[1]))
    print(line)
    if args.json:
        payload = {"reference": args.reference_name, "other": args.name, "summary": line}
        args.json.write_text(json.dumps({**payload, "cells": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""What the study's result rows must be before a mean over seeds or a claim is taken from them:
one row per (aug, mode, labels, seed), and one setup per cell.

A seed of the study pretrains an encoder and evaluates it with that seed. An evaluation with
another seed than its encoder's (``<mode>-<fraction>-seed<k>``) is not such a replicate: averaged
in, it would count one encoder twice (or as a seed that was never pretrained), and pairing by seed
would keep whichever row came last; so it is refused, naming its folder.
"""

from __future__ import annotations

import pandas as pd

from swavnb.base.errors import StudyRowsError

CELL = ("aug", "mode", "n_labels")  # one table cell: its runs are the seeds
RUN = (*CELL, "seed")
# a mean over seeds takes runs of one setup; these differ between presets, not between seeds
SETUP = ("image_size", "test_images", "bn_stats")


def _folders(runs: pd.DataFrame) -> str:
    return ", ".join(str(f) for f in runs.get("out_dir", pd.Series(dtype=str)).dropna()) or "?"


def check_rows(rows: pd.DataFrame) -> None:
    """Raise if ``rows`` hold an evaluation with another seed than its encoder's, two rows for one
    run, or a cell mixing setups.

    Args:
        rows: ``results.csv`` rows (:func:`swavnb.study.results.collect_results`).

    Raises:
        StudyRowsError: naming the cell, the folders and the fix.
    """
    if rows.empty or not set(RUN) <= set(rows.columns):
        return
    if "encoder_seed" in rows.columns:
        other = rows[rows["encoder_seed"].notna() & (rows["encoder_seed"] != rows["seed"])]
        if len(other):
            raise StudyRowsError(
                f"{len(other)} evaluation(s) with another seed than their encoder's "
                f"({_folders(other)}): a seed of the study is an encoder pretrained and evaluated "
                "with that seed; move these folders out of the runs folder"
            )
    for key, runs in rows.groupby(list(RUN), sort=False):
        if len(runs) > 1:
            aug, mode, labels, seed = key
            raise StudyRowsError(
                f"{len(runs)} rows for {aug} {mode} at {int(labels):,} labels, seed {int(seed)} "
                f"({_folders(runs)}): the tables take one run per seed; move the extra "
                "evaluation's folder out of the runs folder"
            )
    for field in (f for f in SETUP if f in rows.columns):
        for (aug, mode, labels), runs in rows.groupby(list(CELL), sort=False):
            values = runs[field].dropna().astype(str).unique()
            if len(values) > 1:
                raise StudyRowsError(
                    f"{aug} {mode} at {int(labels):,} labels mixes {field} "
                    f"{', '.join(sorted(values))} across seeds ({_folders(runs)}): a mean over "
                    "seeds needs one setup; rerun the odd seeds with the same settings (--force) "
                    "or move their folders out of the runs folder"
                )

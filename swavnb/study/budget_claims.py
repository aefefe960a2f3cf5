"""The reference report's claims against the pretraining budget: each claim's effect at every
budget, paired by seed, and whether it grows with the budget (the trend test of claims.md).

The comparisons are the claims' own (:data:`swavnb.study.claims.PAIRS`: C1 each pretrained
encoder minus random init, C2 flip minus jitter, C4 swav minus each of jitter and flip), and so is
the verdict rule (:func:`swavnb.study.claims.verdict_from_bounds`): at a budget, a claim *holds*
when every comparison's 95 % interval is above 0; its effect *grows* when every comparison's
slope interval is above 0 and *shrinks* when one is below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from swavnb.base.layout import SCRATCH
from swavnb.evaluation.intervals import mean_interval, paired_difference
from swavnb.study.budget import BUDGET_CSV, evaluation_name, evaluations
from swavnb.study.claims import CLAIMS, FAILS, HOLDS, PAIRS, verdict_from_bounds

CLAIM_KEYS = ("C1", "C2", "C4")  # the claims that compare two encoders (C3 compares label counts)
TRENDS = {HOLDS: "grows", FAILS: "shrinks"}  # verdict_from_bounds on slopes; otherwise UNCLEAR
UNCLEAR = "cannot tell"
REPORT_EPOCHS = 100  # the reference report's pretraining, which the last column extrapolates to
Runs = dict[int, tuple[float, float]]  # {seed: (top-1, its test-set standard error)}


def _runs(rows: pd.DataFrame, aug: str, key: tuple[str, int]) -> dict[int, Runs]:
    """{epochs: {seed: (top-1, its standard error)}} of one encoder in one evaluation."""
    mine = rows[
        (rows["aug"] == aug) & (rows["evaluation"] == key[0]) & (rows["n_labels"] == key[1])
    ]
    runs: dict[int, Runs] = {}
    for r in mine.itertuples():
        runs.setdefault(int(r.epochs), {})[int(r.seed)] = (float(r.top1), float(r.top1_se))
    return runs


def comparisons(rows: pd.DataFrame) -> Iterator[tuple[str, str, str, tuple[str, int]]]:
    """(claim, better, worse, evaluation) of every comparison of :data:`CLAIM_KEYS` whose two
    encoders ``rows`` hold, evaluation by evaluation."""
    augs = set(rows["aug"])
    for key in evaluations(rows):
        for claim in CLAIM_KEYS:
            for better, worse in PAIRS[claim]:
                if better in augs and worse in augs:
                    yield claim, better, worse, key


def _sides(
    rows: pd.DataFrame, better: str, worse: str, key: tuple[str, int]
) -> Iterator[tuple[int, Runs, Runs]]:
    """(epochs, better's runs, worse's runs) at every budget of ``better``; random init is one
    encoder at every budget."""
    a, b = _runs(rows, better, key), _runs(rows, worse, key)
    for epochs in sorted(e for e in a if e > 0):
        yield epochs, a[epochs], b.get(0, {}) if worse == SCRATCH else b.get(epochs, {})


def effects(rows: pd.DataFrame) -> pd.DataFrame:
    """Every comparison's effect (top-1 points, better minus worse) at every budget, with its 95 %
    interval paired by seed (:func:`swavnb.evaluation.intervals.paired_difference`).

    Args:
        rows: ``budget.csv`` rows (:func:`swavnb.study.budget.collect_budget`).
    """
    lines = []
    for claim, better, worse, key in comparisons(rows):
        for epochs, a, b in _sides(rows, better, worse, key):
            if (e := paired_difference(a, b)) is not None:
                lines.append(
                    [claim, f"{better} − {worse}", *key, epochs, e.mean, e.low, e.high, e.n]
                )
    columns = ["claim", "comparison", "evaluation", "n_labels", "epochs", "effect", "low", "high"]
    return pd.DataFrame(lines, columns=[*columns, "seeds"])


def slope(
    points: Mapping[int, tuple[float, float, float]], worse_is_shared: bool
) -> tuple[float, float] | None:
    """The least-squares slope of one seed's effect against log2(epochs), in top-1 points per
    doubling of the budget, and its test-set standard error; None below two budgets.

    Args:
        points: {epochs: (effect, the better run's error, the worse run's error)}.
        worse_is_shared: the worse side is one run at every budget (random init): its error moves
            every point alike and leaves the slope.
    """
    if len(points) < 2:
        return None
    x = np.log2(np.array(sorted(points), dtype=float))
    ordered = [points[e] for e in sorted(points)]
    weights = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    variance = sum(
        w * w * (sa * sa + (0.0 if worse_is_shared else sb * sb))
        for w, (_, sa, sb) in zip(weights, ordered, strict=True)
    )
    return float(weights @ np.array([p[0] for p in ordered])), math.sqrt(variance)


def trends(rows: pd.DataFrame) -> pd.DataFrame:
    """Each comparison's trend with the budget: the per-seed :func:`slope` averaged over the seeds
    with its Student t 95 % interval (one seed: its test-set error), and ``grows`` when the
    interval is above 0, ``shrinks`` when below, else ``cannot tell``."""
    lines = []
    for claim, better, worse, key in comparisons(rows):
        by_seed: dict[int, dict[int, tuple[float, float, float]]] = {}
        for epochs, a, b in _sides(rows, better, worse, key):
            for seed in set(a) & set(b):
                by_seed.setdefault(seed, {})[epochs] = (
                    a[seed][0] - b[seed][0],
                    a[seed][1],
                    b[seed][1],
                )
        fitted = [s for s in (slope(p, worse == SCRATCH) for p in by_seed.values()) if s]
        if not fitted:
            continue
        e = mean_interval([s for s, _ in fitted], [se for _, se in fitted])
        trend = TRENDS.get(verdict_from_bounds([e.low], [e.high]), UNCLEAR)
        lines.append([claim, f"{better} − {worse}", *key, e.mean, e.low, e.high, e.n, trend])
    columns = ["claim", "comparison", "evaluation", "n_labels", "slope", "low", "high", "seeds"]
    return pd.DataFrame(lines, columns=[*columns, "trend"])


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def _listed(frame: pd.DataFrame, value: str) -> str:
    return "; ".join(
        f"{r.comparison}: {_interval(getattr(r, value), r.low, r.high)}" for r in frame.itertuples()
    )


def _missing(claim: str) -> str:
    """Which encoders a claim compares, for the line that says the budget did not pretrain them."""
    pairs = [" and ".join(f"`{aug}`" for aug in pair) for pair in PAIRS[claim]]
    return f"it compares {' or '.join(pairs)}, not both pretrained here"


def _seeds(seeds: list[int]) -> str:
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}"


def _extrapolated(slopes: pd.DataFrame, at: pd.DataFrame, largest: int) -> str:
    """Each comparison's mean effect at ``largest`` epochs carried along its mean slope to
    :data:`REPORT_EPOCHS`: a straight line in log2(epochs), labelled as an extrapolation."""
    doublings = math.log2(REPORT_EPOCHS / largest)
    effect = dict(zip(at["comparison"], at["effect"], strict=True))
    return "; ".join(
        f"{r.comparison}: {effect[r.comparison] + r.slope * doublings:+.1f}"
        for r in slopes.itertuples()
        if r.comparison in effect
    )


def budget_claims(rows: pd.DataFrame) -> list[str]:
    """Markdown lines for claims.md: per claim and evaluation, the trend of its effect with the
    pretraining budget and its verdict at the largest budget; [] without budget rows.

    Args:
        rows: ``budget.csv`` rows (:func:`swavnb.study.budget.collect_budget`).
    """
    if rows.empty:
        return []
    found, slopes = effects(rows), trends(rows)
    budgets = sorted(int(e) for e in rows["epochs"].unique() if e > 0)
    largest, seeds = max(budgets), sorted(int(s) for s in rows["seed"].unique())
    statements = {c.key: c.statement for c in CLAIMS}
    lines = [
        "",
        "## Against the pretraining budget",
        "",
        f"From `{BUDGET_CSV}` (`python -m swavnb.study --budget {','.join(map(str, budgets))}`): "
        f"every encoder pretrained for {', '.join(map(str, budgets))} epochs (each a whole "
        "schedule; the preset's own epochs are the study's runs) and random init, evaluated as the "
        "study evaluates; effects are top-1 points, paired by seed "
        f"({_seeds(seeds)}). **Trend test:** per seed, the "
        "least-squares slope of the effect against log2(epochs) (points per doubling of the "
        "budget), with a Student t 95 % interval over the seeds (one seed: its test-set error); "
        "an effect *grows* when every comparison's interval is above 0, *shrinks* when one is "
        f"below 0, else *cannot tell*. *At {largest} epochs*: the claim's verdict from the paired "
        "intervals at the largest budget, by the rule above. *Extrapolated*: the effect at "
        f"{largest} epochs plus the slope times log2({REPORT_EPOCHS}/{largest}), a straight line "
        f"carried to the reference report's {REPORT_EPOCHS} epochs: **an extrapolation, not a "
        "measurement**, which assumes the trend goes on unchanged.",
        "",
        f"| claim | evaluation | trend | slope per doubling | at {largest} epochs | "
        f"effect at {largest} epochs | extrapolated to {REPORT_EPOCHS} epochs (not measured) |",
        "|:--|:--|:--|:--|:--|:--|:--|",
    ]
    for claim in CLAIM_KEYS:
        mine = slopes[slopes["claim"] == claim]
        if mine.empty:
            lines.append(
                f"| {claim}: {statements[claim]} | – | not in the budget's runs: "
                f"{_missing(claim)} | – | – | – | – |"
            )
            continue
        for key, group in mine.groupby(["evaluation", "n_labels"], sort=False):
            trend = TRENDS.get(verdict_from_bounds(group["low"], group["high"]), UNCLEAR)
            at = found[
                (found["claim"] == claim)
                & (found["evaluation"] == key[0])
                & (found["n_labels"] == key[1])
                & (found["epochs"] == largest)
            ]
            verdict = verdict_from_bounds(at["low"], at["high"]) if len(at) else "–"
            lines.append(
                f"| {claim}: {statements[claim]} | {evaluation_name(*key)} | **{trend}** | "
                f"{_listed(group, 'slope')} | **{verdict}** | {_listed(at, 'effect') or '–'} | "
                f"{_extrapolated(group, at, largest) or '–'} |"
            )
    return lines

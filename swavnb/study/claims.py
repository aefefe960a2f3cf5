"""The reference report's claims, tested on the study's rows: every comparison a claim makes, with
its effect and 95 % interval (:mod:`swavnb.evaluation.intervals`), and a verdict computed from those
intervals.

A claim *holds* when every comparison it makes is above zero beyond its interval, *does not hold*
when one is below zero beyond its interval, and otherwise *cannot tell at this scale*.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandas as pd

from swavnb.evaluation.intervals import Estimate, paired_difference
from swavnb.study.rows import check_rows

PRETRAINED = ("jitter", "flip", "swav")
SCRATCH = "scratch"
HOLDS, FAILS, UNSURE = "holds", "does not hold", "cannot tell at this scale"
REPORT = "ref. report"  # a claim of the reference report, the course report the study reproduces


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    source: str  # whose claim: the reference report's (``ref. report``), or ours


CLAIMS = (
    Claim("C1", "pretraining beats random init at every label count", REPORT),
    Claim("C2", "`flip` beats `jitter` (the reference report: by 1.6-3.3 top-1)", REPORT),
    Claim("C3", "accuracy rises with the number of labels", REPORT),
    Claim("C4", "`swav` beats both of the reference report's strategies", "ours"),
)
COLUMNS = ("claim", "mode", "comparison", "labels", "effect", "low", "high", "seeds", "basis")
# the claims that compare two encoders: (better, worse) of each comparison, in the order claims.md
# lists them (C3 compares label counts of one encoder)
PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "C1": tuple((aug, SCRATCH) for aug in PRETRAINED),
    "C2": (("flip", "jitter"),),
    "C4": (("swav", "jitter"), ("swav", "flip")),
}


def _runs(rows: pd.DataFrame, aug: str) -> dict[int, dict[int, tuple[float, float]]]:
    """{labels: {seed: (top-1, its standard error)}} of one encoder."""
    runs: dict[int, dict[int, tuple[float, float]]] = {}
    for row in rows[rows["aug"] == aug].itertuples():
        runs.setdefault(int(row.n_labels), {})[int(row.seed)] = (row.top1, row.top1_se)
    return runs


def _comparisons(rows: pd.DataFrame) -> Iterator[tuple[str, str, str, Estimate | None]]:
    """(claim, comparison, labels, effect) of each comparison the claims make on one mode's rows."""
    runs = {aug: _runs(rows, aug) for aug in (*PRETRAINED, SCRATCH)}

    def versus(claim: str, better: str, worse: str) -> Iterator[tuple]:
        for labels in sorted(set(runs[better]) & set(runs[worse])):
            effect = paired_difference(runs[better][labels], runs[worse][labels])
            yield claim, f"{better} − {worse}", str(labels), effect

    for claim in ("C1", "C2"):
        for better, worse in PAIRS[claim]:
            yield from versus(claim, better, worse)
    for aug in (*PRETRAINED, SCRATCH):
        counts = sorted(runs[aug])
        for fewer, more in zip(counts, counts[1:], strict=False):
            effect = paired_difference(runs[aug][more], runs[aug][fewer])
            yield "C3", f"{aug}: {more} − {fewer} labels", f"{fewer} → {more}", effect
    for better, worse in PAIRS["C4"]:
        yield from versus("C4", better, worse)


def comparisons(rows: pd.DataFrame) -> pd.DataFrame:
    """Every comparison of every claim, per mode: effect (top-1 points) and its 95 % interval.

    Args:
        rows: ``results.csv`` rows (aug, mode, n_labels, seed, top1, top1_se).
    """
    check_rows(rows)
    lines = []
    for mode in sorted(rows["mode"].unique()):
        for claim, comparison, labels, effect in _comparisons(rows[rows["mode"] == mode]):
            if effect is None:  # no seed in common: nothing to compare
                continue
            lines.append(
                [claim, mode, comparison, labels, effect.mean, effect.low, effect.high]
                + [effect.n, effect.basis]
            )
    return pd.DataFrame(lines, columns=list(COLUMNS))


def verdict_from_bounds(lows: Iterable[float], highs: Iterable[float]) -> str:
    """Holds, does not hold or cannot tell, from the 95 % bounds of one or more comparisons: the
    rule of the study's claims and of the sweeps' verdicts."""
    if all(low > 0 for low in lows):
        return HOLDS
    if any(high < 0 for high in highs):
        return FAILS
    return UNSURE


def verdict(effects: pd.DataFrame) -> str:
    """A claim's verdict from its comparisons' intervals."""
    if effects.empty:
        return "cannot tell: no rows to compare"
    return verdict_from_bounds(effects["low"], effects["high"])


def verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (claim, mode): the verdict and the range of its comparisons' effects."""
    found = comparisons(rows)
    lines = []
    for claim in CLAIMS:
        for mode in sorted(rows["mode"].unique()):
            mine = found[(found["claim"] == claim.key) & (found["mode"] == mode)]
            effects = (
                f"{mine['effect'].min():+.2f} … {mine['effect'].max():+.2f}" if len(mine) else "–"
            )
            lines.append(
                [claim.key, claim.statement, claim.source, mode, verdict(mine), len(mine), effects]
            )
    columns = ["claim", "statement", "source", "mode", "verdict", "comparisons", "effects"]
    return pd.DataFrame(lines, columns=columns)


def claim_effects(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What claims.md shows, for a figure to draw the same: (:func:`verdicts`, :func:`comparisons`),
    both computed once from ``rows``."""
    return verdicts(rows), comparisons(rows)


def claims_markdown(rows: pd.DataFrame, preset: str) -> str:
    """``results/<preset>/claims.md``: the verdicts, then every comparison behind them."""
    if rows.empty:
        return f"# Claims tested on preset `{preset}`\n\nNo evaluation rows yet.\n"
    table, found = claim_effects(rows)
    seeds = sorted(rows["seed"].unique())
    lines = [
        f"# Claims tested on preset `{preset}`",
        "",
        "Computed from `results.csv` by `swavnb.study.claims`; effects are top-1 differences in "
        f"percentage points with 95 % intervals, paired by seed ({len(seeds)} seed(s): "
        f"{', '.join(map(str, seeds))}). With one seed the interval is the test-set error only. "
        "A claim holds when every comparison is above zero beyond its interval, does not hold when "
        "one is below zero beyond it, and otherwise cannot be told at this scale. *ref. report*: a "
        "claim of the reference report (a course report, SwAV with ResNet-18 on CIFAR-100, its "
        "Tables 1-2), whose own numbers are single runs at another scale.",
        "",
        "| claim | whose | mode | verdict | comparisons | effects (top-1 points) |",
        "|:--|:--|:--|:--|--:|:--|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.claim}: {r.statement} | {r.source} | {r.mode} | **{r.verdict}** | "
            f"{r.comparisons} | {r.effects} |"
        )
    lines += [
        "",
        "## Every comparison",
        "",
        "| claim | mode | comparison | labels | effect | seeds |",
    ]
    lines.append("|:--|:--|:--|--:|:--|--:|")
    for r in found.itertuples():
        interval = f"{r.effect:+.2f} [{r.low:+.2f}, {r.high:+.2f}]"
        lines.append(
            f"| {r.claim} | {r.mode} | {r.comparison} | {r.labels} | {interval} | {r.seeds} |"
        )
    return "\n".join(lines) + "\n"

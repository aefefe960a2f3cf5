"""The pretraining budget's figures: top-1 against pretraining epochs, and each claim's effect
against epochs (``figures/<preset>/budget.png``, ``budget-claims.png``), drawn from ``budget.csv``
with the intervals and claims of :mod:`swavnb.study.budget_claims`."""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from swavnb.base.layout import SCRATCH
from swavnb.evaluation.intervals import mean_interval
from swavnb.study.budget import evaluation_name, evaluations
from swavnb.study.budget_claims import CLAIM_KEYS, effects, trends
from swavnb.study.claims import CLAIMS
from swavnb.study.plots import NothingToDraw, _chance_line, _color, _figure
from swavnb.study.results import aug_rank

RANDOM_INIT = "random-init"  # the gid of random init's band, for the tests
NO_BUDGET = "no budget runs yet; run `python -m swavnb.study --budget 1,2,4,8,16` for this preset"


def _budget_axis(ax: Axes, budgets: list[int]) -> None:
    """A log2 epochs axis with one tick per budget."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(budgets))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("pretraining epochs (log scale)")


def _seeds(rows: pd.DataFrame) -> str:
    seeds = rows["seed"].nunique()
    return (
        f"mean over {seeds} seeds, 95 % t interval"
        if seeds > 1
        else "1 seed, 95 % test-set interval"
    )


def budget_figure(rows: pd.DataFrame) -> Figure:
    """Top-1 against pretraining epochs, one panel per evaluation: each aug's mean over seeds with
    its 95 % interval (:func:`swavnb.evaluation.intervals.mean_interval`), random init as a grey
    band (its mean and interval), chance (1 %) dotted.

    Args:
        rows: ``budget.csv`` rows (:func:`swavnb.study.budget.collect_budget`).
    """
    if rows.empty:
        raise NothingToDraw(NO_BUDGET)
    keys = evaluations(rows)
    budgets = sorted(int(e) for e in rows["epochs"].unique() if e > 0)
    fig, axes = _figure(1, len(keys), (4.2 * len(keys), 3.8))
    for ax, key in zip(axes[0], keys, strict=True):
        mine = rows[(rows["evaluation"] == key[0]) & (rows["n_labels"] == key[1])]
        for aug in sorted(set(mine["aug"]) - {SCRATCH}, key=aug_rank):
            by_epochs = mine[mine["aug"] == aug].groupby("epochs")
            points = {
                int(e): mean_interval(list(r["top1"]), list(r["top1_se"])) for e, r in by_epochs
            }
            ax.errorbar(
                list(points),
                [p.mean for p in points.values()],
                yerr=[p.half_width for p in points.values()],
                marker="o",
                capsize=3,
                color=_color(aug),
                label=aug,
            )
        scratch = mine[mine["aug"] == SCRATCH]
        if len(scratch):
            band = mean_interval(list(scratch["top1"]), list(scratch["top1_se"]))
            ax.axhspan(band.low, band.high, color=_color(SCRATCH), alpha=0.2, gid=RANDOM_INIT)
            ax.axhline(band.mean, color=_color(SCRATCH), linestyle="--", label="random init")
        _chance_line(ax)
        _budget_axis(ax, budgets)
        ax.set(title=evaluation_name(*key), ylabel="test top-1 (%)")
    axes[0, 0].legend(frameon=False, fontsize="small")
    preset = rows["preset"].iloc[0]
    fig.suptitle(
        f"top-1 against the pretraining budget, preset {preset} ({_seeds(rows)}; grey band: "
        "random init, its mean dashed)"
    )
    return fig


def budget_claims_figure(rows: pd.DataFrame) -> Figure:
    """Each claim's effect against pretraining epochs with its 95 % interval, paired by seed: one
    row of panels per claim (C1, C2 when both flip and jitter were in the budget, C4), one column
    per evaluation, each comparison's trend (:func:`swavnb.study.budget_claims.trends`) in its
    legend, zero solid.

    Args:
        rows: ``budget.csv`` rows (:func:`swavnb.study.budget.collect_budget`).
    """
    if rows.empty:
        raise NothingToDraw(NO_BUDGET)
    found, slopes = effects(rows), trends(rows)
    if found.empty:
        raise NothingToDraw(
            "no claim to draw: the budget needs random init and a pretrained encoder of one seed"
        )
    claims = [c for c in CLAIM_KEYS if (found["claim"] == c).any()]
    keys = evaluations(rows)
    budgets = sorted(int(e) for e in rows["epochs"].unique() if e > 0)
    statements = {c.key: c.statement.replace("`", "") for c in CLAIMS}
    fig, axes = _figure(
        len(claims), len(keys), (4.2 * len(keys), 3.2 * len(claims) + 0.6), style="whitegrid"
    )
    for row, claim in enumerate(claims):
        for ax, key in zip(axes[row], keys, strict=True):
            mine = found[
                (found["claim"] == claim)
                & (found["evaluation"] == key[0])
                & (found["n_labels"] == key[1])
            ]
            for comparison, points in mine.groupby("comparison", sort=False):
                better, worse = str(comparison).split(" − ")
                trend = slopes[
                    (slopes["claim"] == claim)
                    & (slopes["comparison"] == comparison)
                    & (slopes["evaluation"] == key[0])
                    & (slopes["n_labels"] == key[1])
                ]
                said = f" ({trend['trend'].iloc[0]})" if len(trend) else ""
                # C4's lines, all swav's, are told apart by the strategy swav is compared with
                color = _color(worse if claim == "C4" else better)
                ax.errorbar(
                    points["epochs"],
                    points["effect"],
                    yerr=[points["effect"] - points["low"], points["high"] - points["effect"]],
                    marker="o",
                    capsize=3,
                    color=color,
                    label=f"{comparison}{said}",
                )
            ax.axhline(0, color="black", linewidth=1)
            _budget_axis(ax, budgets)
            ax.set_title(f"{claim}: {evaluation_name(*key)}", fontsize="medium")
            ax.set_ylabel("effect on top-1 (points)")
            ax.legend(frameon=False, fontsize="small")
    augs = set(rows["aug"])
    both = {"flip", "jitter"} <= augs
    note = "" if both else "; C2 (flip − jitter) not drawn: flip and jitter not both in the budget"
    said = "; ".join(f"{c}: {statements[c]}" for c in claims)
    fig.suptitle(
        f"claims against the pretraining budget ({_seeds(rows)}, paired by seed{note})\n{said}",
        fontsize="medium",
    )
    return fig

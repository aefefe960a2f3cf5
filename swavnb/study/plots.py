"""The study's figures: each function turns finished results into a matplotlib Figure.

Figures are built with the object-oriented API, not pyplot, so library code and tests
never leave figures open; a notebook shows one by ending a cell with it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from swavnb.base.files import write_bytes
from swavnb.base.layout import resolve
from swavnb.method.augment import Augmentation, denormalize
from swavnb.method.usage import usage_summary
from swavnb.study.results import SEED_MODE, SEED_RESULTS, aug_rank, seed_labels, summarise
from swavnb.study.sweeps import KNN_K, LINEAR_FRACTION, SEED_CHOICES
from swavnb.study.sweeps import summarise as sweep_summary

_PALETTE = sns.color_palette("deep")
AUG_COLORS = {
    "jitter": _PALETTE[0],
    "flip": _PALETTE[1],
    "swav": _PALETTE[2],
    "scratch": (0.45, 0.45, 0.45),
}


def _color(aug: str) -> Any:
    """A fixed colour per aug, so every figure of the study uses the same one."""
    if aug in AUG_COLORS:
        return AUG_COLORS[aug]
    return _PALETTE[3 + sum(map(ord, aug)) % (len(_PALETTE) - 3)]


def _figure(
    nrows: int, ncols: int, size: tuple[float, float], style: str = "whitegrid"
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure and its (nrows, ncols) axes, in a seaborn style."""
    with sns.axes_style(style):  # axes read the style when created; rcParams stay untouched
        fig = Figure(figsize=size, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _show_image(ax: Axes, image: torch.Tensor) -> None:
    """Draw one (3, H, W) image, uint8 or float in [0, 1], without ticks."""
    if image.dtype == torch.uint8:
        image = image.float() / 255
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def training_curves(metrics: Mapping[str, Any]) -> Figure:
    """Per-epoch loss, learning rate, throughput and prototype usage of one pretraining run.

    Args:
        metrics: what :func:`swavnb.pretraining.train.pretrain` returns (or its ``metrics.json``).

    Returns:
        A 2 x 2 figure: loss, lr, images/s, and usage entropy with the share of prototypes used.
    """
    epochs = pd.DataFrame(metrics["epochs"])
    config = metrics.get("config", {})
    fig, axes = _figure(2, 2, (9.0, 6.0))
    panels = [("loss", "SwAV loss"), ("lr", "learning rate"), ("img_per_s", "images / s")]
    for ax, (column, label) in zip(axes.flat, panels, strict=False):
        ax.plot(epochs["epoch"], epochs[column], marker="o", markersize=3)
        ax.set(xlabel="epoch", ylabel=label)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    usage = axes[1, 1]
    usage.plot(
        epochs["epoch"],
        epochs["usage_entropy"],
        marker="o",
        markersize=3,
        label="normalised entropy",
    )
    usage.plot(
        epochs["epoch"], epochs["prototypes_used"], marker="o", markersize=3, label="share used"
    )
    usage.set(xlabel="epoch", ylabel="prototype usage", ylim=(0, 1.05))
    usage.legend()
    fig.suptitle(
        f"pretraining {config.get('preset', '?')}/{config.get('aug', '?')} "
        f"on {metrics.get('device', '?')}"
    )
    return fig


def augmentation_grid(
    images: torch.Tensor, augmentations: Sequence[Augmentation], seed: int = 0
) -> Figure:
    """The originals, then one row per view of each strategy, for a few images.

    Args:
        images: (N, 3, 32, 32) uint8, one column each.
        augmentations: strategies to show, in row order.
        seed: fixes the random draws, so the figure is reproducible.
    """
    generator = torch.Generator(device=images.device).manual_seed(seed)
    rows: list[tuple[str, torch.Tensor]] = [("original", images)]
    for augmentation in augmentations:
        for index, view in enumerate(augmentation(images, generator), 1):
            size = "" if view.shape[-1] == images.shape[-1] else f" ({view.shape[-1]} px)"
            rows.append((f"{augmentation.name} view {index}{size}", denormalize(view)))
    fig, axes = _figure(
        len(rows), len(images), (1.0 * len(images) + 1.6, 1.0 * len(rows)), style="white"
    )
    for row, (label, batch) in zip(axes, rows, strict=True):
        for ax, image in zip(row, batch, strict=True):
            _show_image(ax, image)
        row[0].set_ylabel(label, rotation=0, ha="right", va="center")
    return fig


def finetune_curves(row: Mapping[str, Any]) -> Figure:
    """Train and test top-1 over the steps of one evaluation run, and its training loss.

    Args:
        row: the result row of :func:`swavnb.evaluation.finetune.finetune` (or its ``result.json``).
    """
    curves = pd.DataFrame(row["curves"])
    fig, axes = _figure(1, 2, (10.0, 3.8))
    accuracy, loss = axes[0]
    accuracy.plot(curves["step"], curves["train_top1"], marker="o", label="train top-1")
    accuracy.plot(curves["step"], curves["test_top1"], marker="o", label="test top-1")
    accuracy.set(xlabel="step", ylabel="accuracy (%)")
    accuracy.legend()
    loss.plot(curves["step"], curves["train_loss"], marker="o", color=_PALETTE[3])
    loss.set(xlabel="step", ylabel="training loss")
    fig.suptitle(
        f"{row['aug']} {row['mode']}, {_percent(row['fraction'])} of the labels: "
        f"test top-1 {row['top1']:.2f} %, top-5 {row['top5']:.2f} %"
    )
    return fig


def superclass_bars(per_superclass: Mapping[str, float], title: str = "") -> Figure:
    """Horizontal bars of top-1 accuracy within each superclass, best on top."""
    accuracy = pd.Series(per_superclass, dtype=float).sort_values()
    fig, axes = _figure(1, 1, (7.0, 0.28 * len(accuracy) + 1.2))
    ax = axes[0, 0]
    ax.barh([_pretty(name) for name in accuracy.index], accuracy.to_numpy(), color=_PALETTE[0])
    ax.axvline(
        accuracy.mean(),
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"mean over superclasses {accuracy.mean():.1f} %",
    )
    ax.set(xlabel="top-1 accuracy (%)", title=title)
    ax.legend(loc="lower right")
    return fig


def tsne_scatter(
    points: torch.Tensor, groups: torch.Tensor, names: Sequence[str], title: str = ""
) -> Figure:
    """2-D embedding coloured by group (the 20 superclasses), with a legend of their names.

    Args:
        points: (N, 2) t-SNE coordinates.
        groups: (N,) group index of each point, into ``names``.
    """
    points, groups = points.cpu().numpy(), groups.cpu().numpy()
    colors = sns.color_palette("tab20", len(names))
    fig, axes = _figure(1, 1, (9.5, 7.0), style="white")
    ax = axes[0, 0]
    for group, name in enumerate(names):
        mask = groups == group
        if mask.any():
            ax.scatter(
                points[mask, 0], points[mask, 1], s=8, color=colors[group], label=_pretty(name)
            )
    ax.set(xticks=[], yticks=[], title=title)
    ax.legend(
        loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2, fontsize="small", frameon=False
    )
    return fig


def retrieval_grid(
    queries: torch.Tensor,
    neighbours: torch.Tensor,
    query_labels: torch.Tensor,
    neighbour_labels: torch.Tensor,
    names: Sequence[str],
) -> Figure:
    """Each query image followed by its nearest neighbours; a neighbour's class is green if it
    matches.

    Args:
        queries: (Q, 3, H, W) uint8 images.
        neighbours: (Q, n, 3, H, W) uint8 images, most similar first.
        query_labels: (Q,) class indices into ``names``.
        neighbour_labels: (Q, n) class indices.
    """
    n_queries, n_neighbours = neighbours.shape[:2]
    fig, axes = _figure(
        n_queries, n_neighbours + 1, (1.15 * (n_neighbours + 1), 1.3 * n_queries), style="white"
    )
    for row, query, label, images, labels in zip(
        axes, queries, query_labels, neighbours, neighbour_labels, strict=True
    ):
        _show_image(row[0], query)
        row[0].set_title(_pretty(names[int(label)]), fontsize="small", fontweight="bold")
        for ax, image, neighbour in zip(row[1:], images, labels, strict=True):
            _show_image(ax, image)
            ax.set_title(
                _pretty(names[int(neighbour)]),
                fontsize="small",
                color="tab:green" if int(neighbour) == int(label) else "tab:red",
            )
    axes[0, 0].set_ylabel("query")
    return fig


def usage_histogram(counts: torch.Tensor, title: str = "") -> Figure:
    """Images per prototype, sorted from the most used; a collapsed model is one tall spike.

    Args:
        counts: (K,) images whose nearest prototype is each one
            (:func:`swavnb.evaluation.clusters.prototype_usage`).
    """
    ordered = counts.sort(descending=True).values.cpu().numpy()
    summary = usage_summary(counts)
    fig, axes = _figure(1, 1, (8.0, 3.5))
    ax = axes[0, 0]
    ax.stairs(ordered, np.arange(len(ordered) + 1), fill=True, color=_PALETTE[0])
    ax.axhline(
        ordered.sum() / len(ordered), color="black", linestyle="--", linewidth=1, label="uniform"
    )
    ax.set(
        xlabel="prototype (sorted by use)",
        ylabel="images",
        xlim=(0, len(ordered)),
        title=title
        or f"{int((counts > 0).sum())} of {len(counts)} prototypes used, "
        f"normalised entropy {summary['usage_entropy']:.2f}",
    )
    ax.legend()
    return fig


def prototype_gallery(
    images: torch.Tensor, rows: Sequence[Mapping[str, Any]], names: Sequence[str], title: str = ""
) -> Figure:
    """One row per prototype: the images scoring highest on it, labelled with the row's majority
    class.

    Args:
        images: (N, 3, S, S) uint8 images the scores were computed on.
        rows: :func:`swavnb.evaluation.clusters.gallery` rows.
        names: class names, indexed by the labels the rows were built from.
    """
    from swavnb.evaluation.clusters import majority_names

    width = max(len(row["images"]) for row in rows)
    fig, axes = _figure(len(rows), width, (1.1 * width + 1.6, 1.15 * len(rows)), style="white")
    for ax_row, row, label in zip(axes, rows, majority_names(rows, names), strict=True):
        for ax in ax_row:
            ax.set_axis_off()
        for ax, index in zip(ax_row, row["images"], strict=False):
            _show_image(ax, images[index])
        ax_row[0].set_axis_on()
        ax_row[0].set(xticks=[], yticks=[])
        ax_row[0].set_ylabel(
            f"#{row['prototype']}\n{_pretty(label)}",
            rotation=0,
            ha="right",
            va="center",
            fontsize="small",
        )
    fig.suptitle(title or "most-used prototypes: the test images scoring highest on each")
    return fig


def accuracy_vs_labels(results: pd.DataFrame, mode: str = "finetune") -> Figure:
    """Top-1 and top-5 against the number of labelled images, one line per encoder (random init
    included), with 95 % intervals as error bars (:func:`swavnb.study.results.summarise`).

    In ``finetune`` mode, the seed's protocol, its published numbers (single runs) are drawn as
    dashed lines in the colour of the same aug, at their label counts.

    Args:
        results: ``results.csv`` rows (aug, mode, n_labels, fraction, seed, top1, top5 and their
            standard errors).
        mode: ``finetune`` or ``linear``.
    """
    rows = results[results["mode"] == mode]
    if rows.empty:
        raise ValueError(
            f"no {mode} rows to draw (modes present: {sorted(results['mode'].unique())}); "
            f"run the study with --modes {mode}"
        )
    summary = summarise(rows)
    augs = sorted(summary["aug"].unique(), key=aug_rank)
    seeds = rows["seed"].nunique()
    fig, axes = _figure(1, 2, (11.0, 4.2))
    counts = sorted({*summary["n_labels"], *(n for a in SEED_RESULTS for n in seed_labels(a))})
    for ax, metric in zip(axes[0], ("top1", "top5"), strict=True):
        for aug in augs:
            mine = summary[summary["aug"] == aug]
            ax.errorbar(
                mine["n_labels"],
                [e.mean for e in mine[metric]],
                yerr=[e.half_width for e in mine[metric]],
                marker="o",
                capsize=3,
                color=_color(aug),
                label=aug,
            )
        if mode == SEED_MODE:
            for aug in SEED_RESULTS:
                seed = sorted(seed_labels(aug).items())
                ax.plot(
                    [n for n, _ in seed],
                    [value[metric == "top5"] for _, value in seed],
                    linestyle="--",
                    marker="x",
                    color=_color(aug),
                    label=f"{aug} (seed)",
                )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(counts))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
        ax.tick_params(axis="x", labelrotation=45)
        ax.set(
            xlabel="labelled training images", ylabel=f"test {metric.replace('top', 'top-')} (%)"
        )
    axes[0, 1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    interval = (
        f"95 % interval over {seeds} seeds" if seeds > 1 else "95 % test-set interval, 1 seed"
    )
    fig.suptitle(f"{mode}: accuracy against the number of labels ({interval})")
    return fig


def sweep_figure(rows: pd.DataFrame, field: str) -> Figure:
    """A sweep's linear and k-NN top-1 and its final pretraining loss against the swept value, with
    95 % intervals (over seeds, or one run's test set); a log axis where the values span a decade or
    more, and the seed's own value dotted.

    Args:
        rows: :func:`swavnb.study.sweeps.collect_sweep`'s rows.
    """
    if rows.empty:
        raise ValueError(f"the {field} sweep has no finished runs to draw")
    panels = [
        ("linear_top1", f"linear top-1 (%), {100 * LINEAR_FRACTION:g}% of the labels"),
        ("knn_top1", f"k-NN top-1 (%), k = {KNN_K}"),
        ("final_loss", "final pretraining loss"),
    ]
    fig, axes = _figure(1, len(panels), (4.6 * len(panels), 3.8))
    values = sorted(rows["value"].unique())
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        for aug in sorted(rows["aug"].unique(), key=aug_rank):
            mine = sweep_summary(rows[rows["aug"] == aug], metric)
            if not mine:
                continue
            xs = list(mine) if numeric else [values.index(v) for v in mine]
            ax.errorbar(
                xs,
                [e.mean for e in mine.values()],
                yerr=[e.half_width for e in mine.values()],
                marker="o",
                capsize=3,
                color=_color(aug),
                label=aug,
            )
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(values if numeric else range(len(values))))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{v:g}" if numeric else str(v) for v in values])
        if field in SEED_CHOICES and SEED_CHOICES[field][0] in values:
            choice = SEED_CHOICES[field][0]
            ax.axvline(choice if numeric else values.index(choice), color="grey", linestyle=":")
        ax.set(xlabel=field, ylabel=label)
    axes[0, 0].legend(frameon=False)
    seeds = rows["seed"].nunique()
    interval = (
        f"95 % interval over {seeds} seeds" if seeds > 1 else "95 % test-set interval, 1 seed"
    )
    fig.suptitle(f"sweep of {field} ({interval}; dotted: the seed's value)")
    return fig


def knn_bars(knn: pd.DataFrame) -> Figure:
    """k-NN top-1 of every encoder, one panel per BN setting, bars grouped by k.

    Args:
        knn: rows with aug, bn_stats, k, top1 (``knn.csv``).
    """
    settings = [bn for bn in ("precise", "ema") if bn in set(knn["bn_stats"])]
    settings += sorted(set(knn["bn_stats"]) - set(settings))
    fig, axes = _figure(1, len(settings), (5.5 * len(settings), 3.8))
    augs = sorted(knn["aug"].unique(), key=aug_rank)
    for ax, bn in zip(axes[0], settings, strict=True):
        rows = knn[knn["bn_stats"] == bn].groupby(["k", "aug"], as_index=False)["top1"].mean()
        sns.barplot(
            rows,
            x="k",
            y="top1",
            hue="aug",
            hue_order=augs,
            palette=[_color(a) for a in augs],
            ax=ax,
        )
        ax.set(title=f"{bn} BN statistics", xlabel="k (neighbours)", ylabel="test top-1 (%)")
        ax.legend(title=None, fontsize="small")
    fig.suptitle("weighted k-NN on frozen features")
    return fig


def loss_curves(metrics_by_run: Mapping[tuple[str, int], Mapping[str, Any]]) -> Figure:
    """Pretraining loss and prototype-usage entropy per epoch, one colour per augmentation and one
    line per seed."""
    fig, axes = _figure(1, 2, (11.0, 4.0))
    loss, usage = axes[0]
    labelled = set()
    for (aug, _seed), metrics in metrics_by_run.items():
        epochs = pd.DataFrame(metrics["epochs"])
        label = None if aug in labelled else aug  # one legend entry per augmentation
        labelled.add(aug)
        style = dict(marker="o", markersize=3, color=_color(aug), label=label)
        loss.plot(epochs["epoch"], epochs["loss"], **style)
        usage.plot(epochs["epoch"], epochs["usage_entropy"], **style)
    loss.set(xlabel="epoch", ylabel="SwAV loss")
    usage.set(xlabel="epoch", ylabel="prototype usage entropy", ylim=(0, 1.05))
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss.legend()
    return fig


def step_loss_curves(
    curves: Mapping[str, Sequence[float]], window: int = 5, title: str = ""
) -> Figure:
    """Per-step pretraining loss of several runs (faint) with a ``window``-step running mean
    (solid).

    Args:
        curves: run label -> loss at every step, as ``swavnb.speed.bench --loss-curve`` records
        them.
    """
    fig, axes = _figure(1, 1, (7.0, 4.0))
    ax = axes[0, 0]
    for i, (label, losses) in enumerate(curves.items()):
        series = pd.Series(losses, index=np.arange(1, len(losses) + 1))
        color = _PALETTE[i % len(_PALETTE)]
        ax.plot(series.index, series, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(
            series.index, series.rolling(window, min_periods=1).mean(), color=color, label=label
        )
    ax.set(xlabel="step", ylabel="SwAV loss", title=title)
    ax.legend()
    return fig


def save_figure(fig: Figure, folder: str | os.PathLike, name: str) -> list[Path]:
    """Write ``folder/name.png`` and ``folder/name.svg``; returns both paths.

    The SVG gets no date and element ids salted by ``name``, so an unchanged figure
    rewrites an identical file and commits show real changes only.
    """
    out = resolve(folder)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    # drawn into memory, then written atomically: a full disk never leaves half a figure
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=150, bbox_inches="tight")
    with matplotlib.rc_context({"svg.hashsalt": name}):
        fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    write_bytes(paths[0], png.getbuffer())
    write_bytes(paths[1], svg.getbuffer())
    return paths

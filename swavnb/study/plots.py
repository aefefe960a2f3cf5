"""The study's figures: each function turns finished results into a matplotlib Figure.

Figures are built with the object-oriented API, not pyplot, so library code and tests
never leave figures open; a notebook shows one by ending a cell with it. A function given nothing to
draw raises :class:`NothingToDraw`, whose message says what is missing and which notebook makes it;
:func:`draw` turns that into one printed line, so a notebook goes on to its next figure.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
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
from swavnb.data.cifar import N_CLASSES
from swavnb.method.augment import Augmentation, denormalize
from swavnb.method.usage import usage_summary
from swavnb.study.claims import FAILS, HOLDS, claim_effects
from swavnb.study.curves import spread
from swavnb.study.results import (
    REPORT_MODE,
    REPORT_RESULTS,
    REPORT_SCALE,
    aug_rank,
    knn_summary,
    report_labels,
    summarise,
)
from swavnb.study.sweeps import KNN_K, LINEAR_FRACTION, REPORT_CHOICES
from swavnb.study.sweeps import summarise as sweep_summary

_PALETTE = sns.color_palette("deep")
# chance level of a {metric} on CIFAR-100's N_CLASSES classes, in percent
CHANCE = {"top1": 100 / N_CLASSES, "top5": 500 / N_CLASSES}
AUG_COLORS = {
    "jitter": _PALETTE[0],
    "flip": _PALETTE[1],
    "swav": _PALETTE[2],
    "scratch": (0.45, 0.45, 0.45),
}


class NothingToDraw(ValueError):
    """A figure's table is empty: the message says what is missing and how to produce it."""


def draw(
    plot: Callable[..., Figure],
    *args: Any,
    save: tuple[str | os.PathLike, str] | None = None,
    **kwargs: Any,
) -> Figure | None:
    """``plot(*args, **kwargs)``, or, when it has nothing to draw, one printed line saying what is
    missing and how to produce it: what a notebook's figure cell calls, so it goes on either way.

    Args:
        plot: a figure function of this module, given ``args`` and ``kwargs``.
        save: (folder, name): the figure is also written to ``folder/name.png`` and ``.svg``
            (:func:`save_figure`); the name also names it in the printed line.

    Returns:
        The figure (a notebook cell ending with it shows it), or None, which shows nothing.
    """
    try:
        fig = plot(*args, **kwargs)
    except NothingToDraw as missing:
        print(f"no {save[1] if save else plot.__name__.replace('_', ' ')} figure: {missing}")
        return None
    if save is not None:
        save_figure(fig, *save)
    return fig


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


def _metric_name(metric: str) -> str:
    return metric.replace("top", "top-")


def _chance_line(ax: Axes, metric: str = "top1", vertical: bool = False) -> None:
    """Chance level of CIFAR-100 (1 % top-1, 5 % top-5): a dotted line (gid ``chance``) named by a
    label on the line itself, so every panel says its own level."""
    level, text = CHANCE[metric], f"chance {CHANCE[metric]:g} %"
    style = dict(color="black", linestyle=":", linewidth=1.2, gid="chance", label=f"_{text}")
    box = dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1)
    if vertical:
        ax.axvline(level, **style)
        ax.text(level, 0.01, f" {text}", transform=ax.get_xaxis_transform(), bbox=box)
    else:
        ax.axhline(level, **style)
        ax.text(0.99, level, text, transform=ax.get_yaxis_transform(), ha="right", bbox=box)


def _draw_log_k(ax: Axes, n_prototypes: int | None) -> None:
    """A dashed line at log K, the loss of a run that has learned nothing (SwAV's plateau)."""
    if n_prototypes:
        ax.axhline(
            np.log(n_prototypes),
            color="0.4",
            linestyle="--",
            linewidth=1,
            label=f"log K = {np.log(n_prototypes):.2f} (K = {n_prototypes})",
        )


def training_curves(metrics: Mapping[str, Any]) -> Figure:
    """Per-epoch loss, learning rate, throughput and prototype usage of one pretraining run.

    Args:
        metrics: what :func:`swavnb.pretraining.train.pretrain` returns (or its ``metrics.json``).

    Returns:
        A 2 x 2 figure: loss (with log K, where the config gives K), lr, images/s, and usage entropy
        with the share of prototypes used.
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
    if config.get("n_prototypes"):
        _draw_log_k(axes[0, 0], config["n_prototypes"])
        axes[0, 0].legend(fontsize="small")
    usage = axes[1, 1]
    usage.plot(
        epochs["epoch"],
        epochs["usage_entropy"],
        marker="o",
        markersize=3,
        label="normalised entropy (training views)",
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
    fig.suptitle("each strategy's views of the same images (one column per image)")
    return fig


def finetune_curves(row: Mapping[str, Any]) -> Figure:
    """Train and test top-1 over the steps of one evaluation run, and its training loss.

    Args:
        row: the result row of :func:`swavnb.evaluation.finetuning.finetune` (or its
            ``result.json``).
    """
    curves = pd.DataFrame(row["curves"])
    fig, axes = _figure(1, 2, (10.0, 3.8))
    accuracy, loss = axes[0]
    accuracy.plot(curves["step"], curves["train_top1"], marker="o", label="train top-1")
    accuracy.plot(curves["step"], curves["test_top1"], marker="o", label="test top-1")
    _chance_line(accuracy)
    accuracy.set(xlabel="step", ylabel="top-1 accuracy (%)")
    accuracy.legend()
    loss.plot(curves["step"], curves["train_loss"], marker="o", color=_PALETTE[3])
    loss.set(xlabel="step", ylabel="training loss")
    fig.suptitle(
        f"{row['aug']} {row['mode']}, {_percent(row['fraction'])} of the labels: "
        f"test top-1 {row['top1']:.2f} %, top-5 {row['top5']:.2f} %"
    )
    return fig


def superclass_bars(per_superclass: Mapping[str, float], title: str = "") -> Figure:
    """Horizontal bars of top-1 accuracy (of the 100-class prediction) within each superclass, best
    on top, with chance level (1 %) dotted."""
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
    _chance_line(ax, vertical=True)
    ax.set(xlabel="top-1 accuracy (%)", title=title or "top-1 accuracy within each superclass")
    ax.legend(loc="lower right")
    return fig


# 20 superclasses told apart by colour and shape: seaborn's colour-blind palette (10 colours) as
# circles, then the same colours as crosses (triangles were hard to tell from circles at this size)
TSNE_MARKERS = ("o", "X")


def _group_styles(n: int) -> list[tuple[Any, str]]:
    """A distinct (colour, marker) for each of ``n`` groups: 10 colour-blind-safe colours, each
    with a new marker for every further ten."""
    colors = sns.color_palette("colorblind", 10)
    markers = [*TSNE_MARKERS, "s", "^", "D", "v", "P", "*"]
    return [(colors[i % 10], markers[(i // 10) % len(markers)]) for i in range(n)]


def tsne_scatter(
    points: torch.Tensor, groups: torch.Tensor, names: Sequence[str], title: str = ""
) -> Figure:
    """2-D embedding, one colour-and-marker per group (the 20 superclasses), with a legend of their
    names outside the axes.

    Args:
        points: (N, 2) t-SNE coordinates.
        groups: (N,) group index of each point, into ``names``.
    """
    points, groups = points.cpu().numpy(), groups.cpu().numpy()
    fig, axes = _figure(1, 1, (10.0, 7.0), style="white")
    ax = axes[0, 0]
    for group, (name, (color, marker)) in enumerate(
        zip(names, _group_styles(len(names)), strict=True)
    ):
        mask = groups == group
        if mask.any():
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=16 if marker == "o" else 24,
                color=color,
                marker=marker,
                edgecolors="none",
                alpha=0.85,
                label=_pretty(name),
            )
    title = title or f"t-SNE of {len(points):,} images by superclass"
    ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2", title=title)
    ax.legend(
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        markerscale=2,
        fontsize="small",
        frameon=False,
        title="superclass",
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
    fig.suptitle("test images (left) and their nearest labelled images; green: the same class")
    return fig


def usage_histogram(counts: torch.Tensor, title: str = "", encoder: str = "") -> Figure:
    """Images per prototype, sorted from the most used; a collapsed model is one tall spike.

    The entropy in the title is of these counts: the nearest prototype of each test image under
    the final model in eval mode, with the BN running averages pretraining left. It is not
    tables.md's *usage entropy* (:data:`swavnb.study.results.USAGE_NOTE`), which counts the last
    epoch's augmented training views in train mode (BN on batch statistics); for multi-crop
    ``swav`` the eval-mode BN statistics, updated last by the small local crops, put clean images
    on fewer prototypes.

    Args:
        counts: (K,) test images whose nearest prototype is each one
            (:func:`swavnb.evaluation.clusters.prototype_usage`).
        title: replaces the default title, which names ``encoder`` and what is counted.
        encoder: which model, e.g. ``"swav, seed 1, preset quick"``.
    """
    ordered = counts.sort(descending=True).values.cpu().numpy()
    summary = usage_summary(counts)
    fig, axes = _figure(1, 1, (8.0, 3.8))
    ax = axes[0, 0]
    ax.stairs(ordered, np.arange(len(ordered) + 1), fill=True, color=_PALETTE[0])
    ax.axhline(
        ordered.sum() / len(ordered), color="black", linestyle="--", linewidth=1, label="uniform"
    )
    model = f"encoder {encoder}" if encoder else "encoder"
    ax.set(
        xlabel="prototype (sorted by use)",
        ylabel="test images",
        xlim=(0, len(ordered)),
        title=title
        or f"{model}: nearest prototype of {int(ordered.sum()):,} test images (eval mode)\n"
        f"{int((counts > 0).sum())} of {len(counts)} prototypes used, normalised entropy of these "
        f"counts {summary['usage_entropy']:.2f}",
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


def _label_axis(ax: Axes, counts: Sequence[int]) -> None:
    """A log axis of labelled-image counts, one tick per count."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(counts))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("labelled training images")


def accuracy_vs_labels(results: pd.DataFrame, mode: str = "finetune") -> Figure:
    """Top-1 and top-5 against the number of labelled images, one line per encoder (random init
    included), with 95 % intervals as error bars (:func:`swavnb.study.results.summarise`) and chance
    level dotted.

    In ``finetune`` mode, the reference report's protocol, its published numbers (single runs) get
    a row of panels of their own, in the colour of the same aug: they come from another scale
    (:data:`swavnb.study.results.REPORT_SCALE`), so they never share an axis with ours.

    Args:
        results: ``results.csv`` rows (aug, mode, n_labels, fraction, seed, top1, top5 and their
            standard errors).
        mode: ``finetune`` or ``linear``.
    """
    rows = results[results["mode"] == mode]
    if rows.empty:
        raise NothingToDraw(
            f"no {mode} evaluation in this preset's runs yet; run finetune.ipynb with "
            f"mode = {mode!r} for an encoder, then this notebook again"
        )
    summary = summarise(rows)
    augs = sorted(summary["aug"].unique(), key=aug_rank)
    seeds = rows["seed"].nunique()
    report = mode == REPORT_MODE
    fig = Figure(figsize=(11.0, 8.8 if report else 4.4), layout="constrained")
    parts = fig.subfigures(2, 1) if report else [fig]
    presets = sorted(rows["preset"].dropna().unique()) if "preset" in rows else []
    ours = f"preset {', '.join(presets)}" if presets else "this study"
    interval = (
        f"95 % interval over {seeds} seeds" if seeds > 1 else "95 % test-set interval, 1 seed"
    )
    with sns.axes_style("whitegrid"):  # as _figure, a row of panels per subfigure
        axes = [part.subplots(1, 2) for part in parts]
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
        _chance_line(ax, metric)
        _label_axis(ax, sorted(summary["n_labels"].unique()))
        ax.set_ylabel(f"test {_metric_name(metric)} (%)")
    axes[0][1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    parts[0].suptitle(f"{mode}, ours: {ours} ({interval})")
    if report:
        counts = sorted({n for aug in REPORT_RESULTS for n in report_labels(aug)})
        for ax, metric in zip(axes[1], ("top1", "top5"), strict=True):
            for aug in REPORT_RESULTS:
                theirs = sorted(report_labels(aug).items())
                ax.plot(
                    [n for n, _ in theirs],
                    [value[metric == "top5"] for _, value in theirs],
                    linestyle="--",
                    marker="x",
                    color=_color(aug),
                    label=f"{aug} (ref. report)",
                )
            _chance_line(ax, metric)
            _label_axis(ax, counts)
            ax.set_ylabel(f"test {_metric_name(metric)} (%)")
        axes[1][1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        parts[1].suptitle(
            f"the reference report, other scale: {REPORT_SCALE} (its single runs; not comparable "
            "with ours)"
        )
    return fig


def sweep_figure(rows: pd.DataFrame, field: str) -> Figure:
    """A sweep's linear and k-NN top-1 and its final pretraining loss against the swept value, with
    95 % intervals (over seeds, or one run's test set); a log axis where the values span a decade or
    more, the reference report's own value dashed and chance level (1 % top-1) dotted.

    Args:
        rows: :func:`swavnb.study.sweeps.collect_sweep`'s rows.
    """
    if rows.empty:
        raise NothingToDraw(f"the {field} sweep has no finished pretraining yet")
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
        if field in REPORT_CHOICES and REPORT_CHOICES[field][0] in values:
            choice = REPORT_CHOICES[field][0]
            ax.axvline(
                choice if numeric else values.index(choice),
                color="grey",
                linestyle="--",
                label="ref. report's value",
            )
        if metric != "final_loss":
            _chance_line(ax)
        ax.set(xlabel=field, ylabel=label)
    axes[0, 0].legend(frameon=False, fontsize="small")
    seeds = rows["seed"].nunique()
    interval = (
        f"95 % interval over {seeds} seeds" if seeds > 1 else "95 % test-set interval, 1 seed"
    )
    fig.suptitle(f"sweep of {field} ({interval}; dashed: the reference report's value)")
    return fig


def knn_bars(knn: pd.DataFrame) -> Figure:
    """k-NN top-1 of every encoder, one panel per BN setting, bars grouped by k, with the tables'
    95 % intervals (:func:`swavnb.study.results.knn_summary`) as error bars and chance dotted.

    Args:
        knn: rows with aug, seed, bn_stats, k, top1, test_images (``knn.csv``).
    """
    if knn.empty:
        raise NothingToDraw(
            "no k-NN rows in this preset's runs yet; run probes.ipynb for an encoder, then this "
            "notebook again"
        )
    summary = knn_summary(knn)
    settings = [bn for bn in ("precise", "ema") if bn in set(summary["bn_stats"])]
    settings += sorted(set(summary["bn_stats"]) - set(settings))
    fig, axes = _figure(1, len(settings), (5.5 * len(settings), 3.8))
    augs = sorted(summary["aug"].unique(), key=aug_rank)
    ks = sorted(summary["k"].unique())
    width = 0.8 / len(augs)
    for ax, bn in zip(axes[0], settings, strict=True):
        for i, aug in enumerate(augs):
            mine = summary[(summary["bn_stats"] == bn) & (summary["aug"] == aug)]
            ax.bar(
                [ks.index(k) - 0.4 + width * (i + 0.5) for k in mine["k"]],
                [e.mean for e in mine["top1"]],
                width,
                yerr=[0.0 if np.isnan(e.half_width) else e.half_width for e in mine["top1"]],
                capsize=3,
                color=_color(aug),
                label=aug,
            )
        _chance_line(ax)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set(title=f"{bn} BN statistics", xlabel="k (neighbours)", ylabel="test top-1 (%)")
        ax.legend(fontsize="small")
    seeds = knn["seed"].nunique()
    interval = (
        f"95 % interval over {seeds} seeds" if seeds > 1 else "95 % test-set interval, 1 seed"
    )
    fig.suptitle(f"weighted k-NN on frozen features, top-1 ({interval})")
    return fig


# what pretraining's usage entropy counts (swavnb.pretraining.train), said wherever it is drawn
TRAINING_USAGE = "each epoch's training views (first augmented view), nearest prototype"


def loss_curves(metrics_by_run: Mapping[tuple[str, int], Mapping[str, Any]]) -> Figure:
    """Pretraining loss per epoch in one panel per augmentation, each on its own y axis (the
    strategies' losses average over different view pairs, so their levels are not comparable), one
    line per seed; below, every run's prototype-usage entropy on one shared 0-1 axis."""
    if not metrics_by_run:
        raise NothingToDraw(
            "no pretraining in this preset's runs yet; run pretrain.ipynb, then this notebook again"
        )
    augs = list(dict.fromkeys(aug for aug, _ in metrics_by_run))
    with sns.axes_style("whitegrid"):  # as _figure: a top row per aug, one wide usage panel below
        fig = Figure(figsize=(max(3.8 * len(augs), 8.0), 7.0), layout="constrained")
        grid = fig.add_gridspec(2, max(len(augs), 1))
        losses = {aug: fig.add_subplot(grid[0, i]) for i, aug in enumerate(augs)}
        usage = fig.add_subplot(grid[1, :])
    labelled = set()
    for (aug, _seed), metrics in metrics_by_run.items():
        epochs = pd.DataFrame(metrics["epochs"])
        label = None if aug in labelled else aug  # one legend entry per augmentation
        labelled.add(aug)
        style = dict(marker="o", markersize=3, color=_color(aug))
        losses[aug].plot(epochs["epoch"], epochs["loss"], **style)
        usage.plot(epochs["epoch"], epochs["usage_entropy"], label=label, **style)
    for aug, ax in losses.items():
        seeds = sum(1 for a, _ in metrics_by_run if a == aug)
        ax.set(xlabel="epoch", ylabel="SwAV loss", title=f"{aug} ({seeds} seed{'s' * (seeds > 1)})")
    usage.set(
        xlabel="epoch",
        ylabel="normalised usage entropy",
        ylim=(0, 1.05),
        title=f"prototype usage: entropy of {TRAINING_USAGE} counts / log K (1 = uniform)",
    )
    for aug, ax in losses.items():
        ks = {
            m.get("config", {}).get("n_prototypes") or 0
            for (a, _), m in metrics_by_run.items()
            if a == aug
        }
        for k in sorted(ks):
            _draw_log_k(ax, k)
        if ks - {0}:
            ax.legend(fontsize="small")
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    usage.legend()
    fig.suptitle(
        "pretraining loss, a panel and y axis per view strategy: the levels are not comparable\n"
        "across strategies (swav's multi-crop loss averages over more and harder view pairs)"
    )
    return fig


_VERDICT_COLORS = {
    HOLDS: sns.color_palette("colorblind")[2],
    FAILS: sns.color_palette("colorblind")[3],
}


def _comparison_label(row: Any) -> str:
    """A claims.md comparison as one line: C3's names its label counts already."""
    return (
        row.comparison if "labels" in row.comparison else f"{row.comparison}, {row.labels} labels"
    )


def claims_forest(rows: pd.DataFrame) -> Figure:
    """Every claim's comparisons as a forest plot: each effect (top-1 points) with its 95 %
    interval, one row per comparison of claims.md, grouped by claim under a header with its verdict,
    one panel per mode, zero solid.

    Computed by :func:`swavnb.study.claims.claim_effects`, what claims.md is written from, so the
    figure and the text cannot disagree.

    Args:
        rows: ``results.csv`` rows (aug, mode, n_labels, seed, top1, top1_se).
    """
    table, found = claim_effects(rows)
    if found.empty:
        raise NothingToDraw(
            "no claim to draw: the claims compare two encoders or two label counts; run "
            "finetune.ipynb for another encoder or fraction, then this notebook again"
        )
    modes = list(dict.fromkeys(found["mode"]))
    heights = [len(table[table["mode"] == m]) + (found["mode"] == m).sum() for m in modes]
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(9.0, 0.26 * sum(heights) + 1.6 * len(modes)), layout="constrained")
        axes = fig.subplots(len(modes), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    for ax, mode in zip(axes, modes, strict=True):
        y, ticks, labels = 0, [], []
        for claim in table[table["mode"] == mode].itertuples():
            mine = found[(found["mode"] == mode) & (found["claim"] == claim.claim)]
            color = _VERDICT_COLORS.get(claim.verdict, (0.45, 0.45, 0.45))
            ax.text(
                0.005,
                y,
                f"{claim.claim} [{claim.source}] {claim.statement.replace('`', '')}: "
                f"{claim.verdict}",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontweight="bold",
                fontsize="small",
                color=color,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1),
            )
            ys = list(range(y + 1, y + 1 + len(mine)))
            if len(mine):
                ax.errorbar(
                    mine["effect"],
                    ys,
                    xerr=[mine["effect"] - mine["low"], mine["high"] - mine["effect"]],
                    fmt="o",
                    capsize=3,
                    color=color,
                    label=claim.verdict,
                )
            ticks += ys
            labels += [_comparison_label(r) for r in mine.itertuples()]
            y += 1 + len(mine)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(ticks, labels, fontsize="small")
        ax.set_ylim(y - 0.5, -0.7)  # first claim on top
        ax.set_title(f"{mode}", loc="left", fontweight="bold")
    verdicts = {}  # one legend entry per verdict, across the panels
    for ax in axes:
        verdicts.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(verdicts.values(), verdicts.keys(), loc="outside lower center", ncols=3)
    axes[-1].set_xlabel("effect on test top-1 (percentage points), 95 % interval")
    seeds = rows["seed"].nunique()
    basis = f"paired over {seeds} seeds" if seeds > 1 else "1 seed: test-set error only"
    presets = sorted(rows["preset"].dropna().unique()) if "preset" in rows else []
    fig.suptitle(
        f"claims tested{' on preset ' + ', '.join(presets) if presets else ''} ({basis}): "
        "a claim holds when every interval is above 0,\ndoes not hold when one is below 0, and "
        "otherwise cannot be told at this scale"
    )
    return fig


# the panels of reference_curves: metrics.json's figure and its axis label
_REFERENCE_PANELS = (
    ("loss", "SwAV loss"),
    ("online_knn_top1", "online k-NN top-1 (%)"),
    ("usage_entropy", "prototype usage entropy"),
)
CHANCE_TOP1 = 1.0  # CIFAR-100: one class in 100


def reference_curves(metrics: Mapping[str, Any], reference: pd.DataFrame | None) -> Figure:
    """A user's pretraining run on top of the study's committed runs of the same preset and aug.

    Behind the run: the study's mean over seeds with the band from its lowest to its highest seed
    (:func:`swavnb.study.curves.spread`); log K on the loss panel, chance (1 %) on the k-NN panel,
    and the epochs of any collapse alarm marked. Without reference curves for the run's preset and
    aug the run is drawn alone, and the title says so.

    Args:
        metrics: the run's ``metrics.json`` (or what :func:`swavnb.pretraining.train.pretrain`
            returns).
        reference: the committed curves (:func:`swavnb.study.curves.read_curves`); rows of other
            presets or augs are left out. None: no reference.

    Returns:
        A 1 x 3 figure: loss, online k-NN top-1, prototype usage entropy, per epoch.
    """
    config = metrics.get("config", {})
    preset, aug = config.get("preset", "?"), config.get("aug", "?")
    run = pd.DataFrame(metrics["epochs"])
    if reference is not None and len(reference):
        reference = reference[(reference["preset"] == preset) & (reference["aug"] == aug)]
    seeds = 0 if reference is None or not len(reference) else reference["seed"].nunique()
    fig, axes = _figure(1, 3, (13.0, 4.0))
    colour = _color(aug)
    for ax, (figure, label) in zip(axes[0], _REFERENCE_PANELS, strict=True):
        band = spread(reference, figure) if seeds else pd.DataFrame()
        if len(band):
            ax.fill_between(
                band["epoch"], band["low"], band["high"], color=colour, alpha=0.2, linewidth=0
            )
            ax.plot(
                band["epoch"],
                band["mean"],
                color=colour,
                linewidth=2,
                label=(
                    f"study: mean of {seeds} seeds (band: lowest to highest)"
                    if seeds > 1
                    else "study: its one seed"
                ),
            )
        if figure in run:
            ax.plot(
                run["epoch"], run[figure], color="black", marker="o", markersize=4, label="this run"
            )
        elif not len(band):
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss, knn, usage = axes[0]
    _draw_log_k(loss, config.get("n_prototypes"))
    for i, epoch in enumerate(sorted({alarm["epoch"] for alarm in metrics.get("alarms", [])})):
        label = "collapse alarm" if i == 0 else "_nolegend_"
        loss.axvline(epoch, color="tab:red", linestyle=":", linewidth=1.5, label=label)
    knn.axhline(CHANCE_TOP1, color="0.4", linestyle="--", linewidth=1, label="chance (1 %)")
    knn.set_ylim(bottom=0)
    usage.set_ylim(0, 1.05)
    for ax in axes[0]:
        ax.legend(fontsize="small")
    against = (
        f"against the study's {seeds} seed{'s' if seeds > 1 else ''}"
        if seeds
        else f"alone: no committed curves for {preset}/{aug}"
    )
    fig.suptitle(f"pretraining {preset}/{aug}, seed {config.get('seed', '?')}, {against}")
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

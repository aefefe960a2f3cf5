"""Every figure builds from small synthetic inputs and has the axes and lines it promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from swavnb.method.augment import Augmentation, MultiCrop
from swavnb.study import plots
from swavnb.study.results import REPORT_RESULTS


def _metrics(aug: str = "flip", n_epochs: int = 3) -> dict:
    epochs = [
        {
            "epoch": e + 1,
            "loss": 3.0 - e * 0.5,
            "lr": 1e-3,
            "img_per_s": 100.0 + e,
            "seconds": 2.0,
            "usage_entropy": 0.5 + 0.1 * e,
            "prototypes_used": 0.6,
        }
        for e in range(n_epochs)
    ]
    return {"config": {"preset": "smoke", "aug": aug}, "device": "cpu", "epochs": epochs}


def _row() -> dict:
    curves = [
        {
            "step": s,
            "epoch": s / 4,
            "train_loss": 4.0 / s,
            "train_top1": 10.0 * s,
            "test_top1": 5.0 * s,
            "test_top5": 9.0 * s,
        }
        for s in (2, 4, 6)
    ]
    return {
        "aug": "flip",
        "mode": "finetune",
        "fraction": 0.1,
        "top1": 30.0,
        "top5": 55.0,
        "curves": curves,
    }


def _results(seeds: int = 1) -> pd.DataFrame:
    rows = [
        {
            "aug": aug,
            "mode": mode,
            "fraction": f,
            "n_labels": round(5000 * f),
            "seed": seed,
            "top1": 10.0 * f + i + seed,
            "top1_se": 0.5,
            "top5": 20.0 * f + i + seed,
            "top5_se": 1.0,
        }
        for i, aug in enumerate(("jitter", "flip", "scratch"))
        for mode in ("finetune", "linear")
        for f in (0.02, 0.1, 1.0)
        for seed in range(seeds)
    ]
    return pd.DataFrame(rows)


def test_training_curves_has_four_panels_with_one_point_per_epoch():
    fig = plots.training_curves(_metrics())
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    loss, lr, speed, usage = fig.axes
    assert list(loss.lines[0].get_ydata()) == [3.0, 2.5, 2.0]
    assert len(lr.lines) == len(speed.lines) == 1
    assert len(usage.lines) == 2  # entropy and share of prototypes used


def test_augmentation_grid_has_a_row_per_view_and_a_column_per_image():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    augs = [Augmentation("flip"), Augmentation("swav", MultiCrop(n_local=2))]
    fig = plots.augmentation_grid(images, augs, seed=0)
    n_rows = 1 + 2 + 4  # originals, flip's 2 views, swav's 2 global + 2 local
    assert len(fig.axes) == n_rows * 4
    labels = [fig.axes[r * 4].get_ylabel() for r in range(n_rows)]
    assert (
        labels[0] == "original"
        and labels[1] == "flip view 1"
        and labels[-1] == "swav view 4 (16 px)"
    )


def test_finetune_curves_show_train_and_test_top1_over_steps():
    fig = plots.finetune_curves(_row())
    accuracy, loss = fig.axes
    assert [line.get_label() for line in accuracy.lines] == ["train top-1", "test top-1"]
    assert list(accuracy.lines[1].get_xdata()) == [2, 4, 6]
    assert len(loss.lines) == 1


def test_superclass_bars_draw_one_sorted_bar_per_superclass():
    accuracy = {f"group_{i}": float(i) for i in range(20)}
    ax = plots.superclass_bars(accuracy, title="t").axes[0]
    widths = [patch.get_width() for patch in ax.patches]
    assert len(widths) == 20 and widths == sorted(widths)
    assert ax.get_yticklabels()[-1].get_text() == "group 19"


def test_tsne_scatter_colours_each_superclass_and_names_it_in_the_legend():
    names = [f"super_{i}" for i in range(20)]
    groups = torch.arange(60) % 20
    ax = plots.tsne_scatter(torch.randn(60, 2), groups, names).axes[0]
    assert len(ax.collections) == 20
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        n.replace("_", " ") for n in names
    ]


def test_retrieval_grid_marks_matching_neighbours_green():
    images = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    fig = plots.retrieval_grid(
        images[:, 0],
        images,
        torch.tensor([0, 1]),
        torch.tensor([[0, 1, 0], [1, 1, 0]]),
        ["cat", "dog"],
    )
    assert len(fig.axes) == 2 * 4
    first_row = fig.axes[:4]
    assert [ax.get_title() for ax in first_row] == ["cat", "cat", "dog", "cat"]
    assert (
        first_row[1].title.get_color() == "tab:green"
        and first_row[2].title.get_color() == "tab:red"
    )


def test_usage_histogram_sorts_counts_and_reports_usage():
    counts = torch.tensor([0, 5, 1, 0, 10, 4])
    ax = plots.usage_histogram(counts).axes[0]
    heights = ax.patches[0].get_data().values
    assert list(heights) == [10, 5, 4, 1, 0, 0]
    assert "4 of 6 prototypes used" in ax.get_title()


def test_accuracy_vs_labels_draws_ours_with_intervals_and_the_report_dashed_at_its_counts():
    fig = plots.accuracy_vs_labels(_results(), "finetune")
    top1, top5 = fig.axes
    ours = {c.get_label(): c for c in top1.containers}  # one errorbar per encoder
    assert list(ours) == ["jitter", "flip", "scratch"]
    line, _, (bars,) = ours["flip"]
    assert list(line.get_xdata()) == [100, 500, 5000]  # labelled images, not fractions
    # one seed: the bars are 1.96 test-set standard errors
    assert bars.get_segments()[0][:, 1].tolist() == pytest.approx(
        [1.2 - 1.959964 * 0.5, 1.2 + 1.959964 * 0.5]
    )
    seed = {line.get_label(): line for line in top1.lines if "(ref. report)" in line.get_label()}
    assert seed["flip (ref. report)"].get_linestyle() == "--"
    assert seed["flip (ref. report)"].get_color() == line.get_color()
    assert list(seed["flip (ref. report)"].get_xdata()) == [500, 5000, 15000, 20000]
    assert list(seed["flip (ref. report)"].get_ydata()) == [
        v[0] for _, v in sorted(REPORT_RESULTS["flip"].items())
    ]
    top5_seed = [line for line in top5.lines if line.get_label() == "flip (ref. report)"][0]
    assert list(top5_seed.get_ydata()) == [v[1] for _, v in sorted(REPORT_RESULTS["flip"].items())]
    assert "1 seed" in fig._suptitle.get_text()
    # three seeds: the mean, and t intervals over them (values seed + 0, 1, 2: sd 1)
    line, _, (bars,) = plots.accuracy_vs_labels(_results(3), "finetune").axes[0].containers[1]
    assert line.get_ydata()[0] == pytest.approx(1.2 + 1)
    assert np.ptp(bars.get_segments()[0][:, 1]) == pytest.approx(2 * 4.3027 / 3**0.5, abs=1e-3)


def test_accuracy_vs_labels_has_no_report_lines_for_linear():
    fig = plots.accuracy_vs_labels(_results(), "linear")
    assert not [line for line in fig.axes[0].lines if "(ref. report)" in line.get_label()]


def test_accuracy_vs_labels_without_rows_of_the_mode_is_a_clear_error():
    finetune_only = _results().query("mode == 'finetune'")
    with pytest.raises(ValueError, match="no linear rows to draw .* --modes linear"):
        plots.accuracy_vs_labels(finetune_only, "linear")


def test_loss_curves_have_one_colour_per_augmentation_and_a_line_per_seed():
    runs = {
        ("flip", 0): _metrics("flip"),
        ("flip", 1): _metrics("flip"),
        ("swav", 0): _metrics("swav", 2),
    }
    fig = plots.loss_curves(runs)
    loss, usage = fig.axes
    assert len(loss.lines) == len(usage.lines) == 3 and len(loss.lines[2].get_xdata()) == 2
    assert loss.lines[0].get_color() == loss.lines[1].get_color() != loss.lines[2].get_color()
    assert [text.get_text() for text in loss.get_legend().get_texts()] == ["flip", "swav"]


def test_save_figure_writes_png_and_a_reproducible_svg(tmp_path):
    png, svg = plots.save_figure(
        plots.loss_curves({("flip", 0): _metrics()}), tmp_path / "figs", "loss"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = svg.read_text()
    assert first.lstrip().startswith("<?xml") and "<svg" in first
    plots.save_figure(plots.loss_curves({("flip", 0): _metrics()}), tmp_path / "figs", "loss")
    assert (
        svg.read_text() == first
    )  # no date, stable ids: rerunning a study rewrites unchanged figures as they were

"""Every figure builds from small synthetic inputs and has the axes and lines it promises."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from swavnb.method.augment import Augmentation, MultiCrop
from swavnb.study import plots
from swavnb.study.claims import claims_markdown, verdicts
from swavnb.study.results import REPORT_RESULTS, REPORT_SCALE


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
    curves = [line.get_label() for line in accuracy.lines if line.get_gid() != "chance"]
    assert curves == ["train top-1", "test top-1"]
    assert list(accuracy.lines[1].get_xdata()) == [2, 4, 6]
    assert len(loss.lines) == 1


def test_superclass_bars_draw_one_sorted_bar_per_superclass():
    accuracy = {f"group_{i}": float(i) for i in range(20)}
    ax = plots.superclass_bars(accuracy, title="t").axes[0]
    widths = [patch.get_width() for patch in ax.patches]
    assert len(widths) == 20 and widths == sorted(widths)
    assert ax.get_yticklabels()[-1].get_text() == "group 19"


def test_tsne_scatter_gives_each_superclass_its_own_colour_and_marker_and_a_legend_outside():
    names = [f"super_{i}" for i in range(20)]
    groups = torch.arange(60) % 20
    ax = plots.tsne_scatter(torch.randn(60, 2), groups, names).axes[0]
    assert len(ax.collections) == 20
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        n.replace("_", " ") for n in names
    ]
    # told apart by colour and shape together: 20 distinct pairs of 10 colour-blind-safe colours
    styles = {
        (tuple(np.round(c.get_facecolor()[0][:3], 3)), c.get_paths()[0].vertices.tobytes())
        for c in ax.collections
    }
    assert len(styles) == 20
    assert len({style[0] for style in styles}) == 10
    assert ax.get_legend().get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1  # outside


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


def test_usage_histogram_sorts_counts_and_names_its_encoder_and_what_it_counts():
    counts = torch.tensor([0, 5, 1, 0, 10, 4])
    ax = plots.usage_histogram(counts, encoder="swav, seed 1, preset quick").axes[0]
    heights = ax.patches[0].get_data().values
    assert list(heights) == [10, 5, 4, 1, 0, 0]
    title = ax.get_title()
    assert "4 of 6 prototypes used" in title and "encoder swav, seed 1, preset quick" in title
    # which entropy: of these 20 test images' nearest prototypes, not pretraining's epoch counts
    assert "nearest prototype of 20 test images" in title
    entropy = -sum(c / 20 * math.log(c / 20) for c in (10, 5, 4, 1)) / math.log(6)
    assert f"normalised entropy of these counts {entropy:.2f}" in title


def _chance(ax) -> list[float]:
    """The levels of an axes' chance lines."""
    lines = [line for line in ax.lines if line.get_gid() == "chance"]
    return [float(line.get_ydata()[0]) for line in lines if line.get_xdata()[0] == 0] + [
        float(line.get_xdata()[0]) for line in lines if line.get_ydata()[0] == 0
    ]


def test_accuracy_vs_labels_draws_ours_with_intervals_and_the_report_in_panels_of_its_own():
    fig = plots.accuracy_vs_labels(_results(), "finetune")
    top1, top5, report1, report5 = fig.axes
    ours = {c.get_label(): c for c in top1.containers}  # one errorbar per encoder
    assert list(ours) == ["jitter", "flip", "scratch"]
    line, _, (bars,) = ours["flip"]
    assert list(line.get_xdata()) == [100, 500, 5000]  # labelled images, not fractions
    # one seed: the bars are 1.96 test-set standard errors
    assert bars.get_segments()[0][:, 1].tolist() == pytest.approx(
        [1.2 - 1.959964 * 0.5, 1.2 + 1.959964 * 0.5]
    )
    # the report's numbers come from another scale: never on the axes of ours
    for ax in (top1, top5):
        assert not [line for line in ax.lines if "report" in line.get_label()]
    theirs = {line.get_label(): line for line in report1.lines}
    assert theirs["flip (ref. report)"].get_linestyle() == "--"
    assert theirs["flip (ref. report)"].get_color() == line.get_color()
    assert list(theirs["flip (ref. report)"].get_xdata()) == [500, 5000, 15000, 20000]
    assert list(theirs["flip (ref. report)"].get_ydata()) == [
        v[0] for _, v in sorted(REPORT_RESULTS["flip"].items())
    ]
    top5_report = [line for line in report5.lines if line.get_label() == "flip (ref. report)"][0]
    assert list(top5_report.get_ydata()) == [
        v[1] for _, v in sorted(REPORT_RESULTS["flip"].items())
    ]
    ours_part, report_part = fig.subfigs
    assert "1 seed" in ours_part._suptitle.get_text()
    assert f"other scale: {REPORT_SCALE}" in report_part._suptitle.get_text()
    # chance: 1 % of CIFAR-100's top-1, 5 % of its top-5, on every panel
    assert [_chance(ax) for ax in fig.axes] == [[1.0], [5.0], [1.0], [5.0]]
    # three seeds: the mean, and t intervals over them (values seed + 0, 1, 2: sd 1)
    line, _, (bars,) = plots.accuracy_vs_labels(_results(3), "finetune").axes[0].containers[1]
    assert line.get_ydata()[0] == pytest.approx(1.2 + 1)
    assert np.ptp(bars.get_segments()[0][:, 1]) == pytest.approx(2 * 4.3027 / 3**0.5, abs=1e-3)


def test_accuracy_vs_labels_has_no_report_panels_for_linear():
    fig = plots.accuracy_vs_labels(_results(), "linear")
    assert len(fig.axes) == 2
    assert not [line for ax in fig.axes for line in ax.lines if "report" in line.get_label()]
    assert [_chance(ax) for ax in fig.axes] == [[1.0], [5.0]]


def test_accuracy_vs_labels_without_rows_of_the_mode_names_the_notebook_that_makes_them():
    finetune_only = _results().query("mode == 'finetune'")
    with pytest.raises(
        plots.NothingToDraw, match="no linear evaluation .* finetune.ipynb with mode = 'linear'"
    ):
        plots.accuracy_vs_labels(finetune_only, "linear")


@pytest.mark.parametrize(
    ("plot", "empty", "notebook"),
    [
        (plots.knn_bars, pd.DataFrame(columns=["aug", "bn_stats", "k", "top1"]), "probes.ipynb"),
        (plots.loss_curves, {}, "pretrain.ipynb"),
        (plots.accuracy_vs_labels, pd.DataFrame(columns=["aug", "mode"]), "finetune.ipynb"),
    ],
)
def test_a_figure_with_nothing_to_draw_is_one_line_naming_the_notebook_and_no_file(
    plot, empty, notebook, tmp_path, capsys
):
    assert plots.draw(plot, empty, save=(tmp_path, "figure")) is None
    line = capsys.readouterr().out
    assert line.startswith("no figure figure: ") and notebook in line and line.count("\n") == 1
    assert not list(tmp_path.iterdir())
    with pytest.raises(plots.NothingToDraw):  # called directly, still an error
        plot(empty)


def test_draw_returns_and_saves_a_figure_that_has_something_to_draw(tmp_path, capsys):
    fig = plots.draw(plots.loss_curves, {("flip", 0): _metrics()}, save=(tmp_path, "loss"))
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["loss.png", "loss.svg"]
    assert capsys.readouterr().out == ""


def test_loss_curves_put_each_strategy_on_its_own_axis_and_usage_on_one():
    runs = {
        ("flip", 0): _metrics("flip"),
        ("flip", 1): _metrics("flip"),
        ("swav", 0): _metrics("swav", 2),
    }
    fig = plots.loss_curves(runs)
    flip, swav, usage = fig.axes
    # multi-crop swav's loss is not on flip's scale: a panel (and y axis) per strategy
    assert flip.get_title() == "flip (2 seeds)" and swav.get_title() == "swav (1 seed)"
    assert len(flip.lines) == 2 and len(swav.lines) == 1 and len(swav.lines[0].get_xdata()) == 2
    assert flip.lines[0].get_color() == flip.lines[1].get_color() != swav.lines[0].get_color()
    # usage entropy is normalised by log K: one shared 0-1 axis, saying what it counts
    assert len(usage.lines) == 3 and usage.get_ylim() == (0, 1.05)
    assert [text.get_text() for text in usage.get_legend().get_texts()] == ["flip", "swav"]
    assert "training views" in usage.get_title() and "log K" in usage.get_title()
    assert "not comparable\nacross strategies" in fig._suptitle.get_text()


def _knn(seeds: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"aug": aug, "seed": seed, "bn_stats": bn, "k": k, "test_images": 2000}
            | {"top1": 5.0 + i + seed + (bn == "ema"), "top5": 20.0 + seed}
            for i, aug in enumerate(("flip", "swav", "scratch"))
            for seed in range(seeds)
            for bn in ("precise", "ema")
            for k in (20, 200)
        ]
    )


def test_knn_bars_have_the_tables_intervals_as_error_bars_and_chance():
    fig = plots.knn_bars(_knn(3))
    precise, ema = fig.axes
    assert precise.get_title() == "precise BN statistics"
    swav = [c for c in precise.containers if c.get_label() == "swav"][0]
    # values 6, 7, 8 over three seeds: mean 7, t interval 4.303 * 1 / sqrt(3)
    assert [bar.get_height() for bar in swav] == pytest.approx([7.0, 7.0])
    segments = swav.errorbar.lines[2][0].get_segments()
    assert [y for s in segments for y in s[:, 1]] == pytest.approx(
        [7 - 4.3027 / 3**0.5, 7 + 4.3027 / 3**0.5] * 2, abs=1e-3
    )
    assert _chance(precise) == _chance(ema) == [1.0]
    assert "95 % interval over 3 seeds" in fig._suptitle.get_text()
    # one seed: the test-set interval, as in tables.md
    one = [c for c in plots.knn_bars(_knn(1)).axes[0].containers if c.get_label() == "flip"][0]
    half = 1.959964 * 100 * math.sqrt(0.05 * 0.95 / 2000)
    assert np.ptp(one.errorbar.lines[2][0].get_segments()[0][:, 1]) == pytest.approx(2 * half)


def _claims_rows() -> pd.DataFrame:
    rows = _results(3).assign(preset="quick")
    swav = rows[rows["aug"] == "flip"].assign(aug="swav", top1=lambda r: r["top1"] + 3)
    return pd.concat([rows, swav], ignore_index=True)


def test_claims_forest_has_one_row_per_claims_md_comparison_with_its_interval():
    rows = _claims_rows()
    fig = plots.claims_forest(rows)
    text = claims_markdown(rows, "quick")
    listed = [
        line.strip("|").split("|")
        for line in text.split("## Every comparison")[1].splitlines()
        if line.startswith("| C")
    ]
    drawn = []
    for ax in fig.axes:
        for container in ax.containers:
            line, _, (bars,) = container
            for x, segment in zip(line.get_xdata(), bars.get_segments(), strict=True):
                drawn.append((ax.get_title(loc="left"), x, *segment[:, 0]))
    expected = [  # "| C1 | finetune | flip − scratch | 100 | -1.59 [-2.81, -0.37] | 4 |"
        (mode.strip(), *map(float, re.findall(r"[-+]\d+\.\d+", interval)))
        for _, mode, _, _, interval, _ in listed
    ]
    assert len(drawn) == len(listed) > 0
    for mode in ("finetune", "linear"):  # claims.md rounds to 0.01
        mine = sorted(d[1:] for d in drawn if d[0] == mode)
        theirs = sorted(e[1:] for e in expected if e[0] == mode)
        assert len(mine) == len(theirs) > 0
        assert np.allclose(mine, theirs, atol=0.006)
    # one tick label per comparison, a header with each claim's verdict, zero drawn
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert len(ticks) == len(listed)
    headers = [t.get_text() for ax in fig.axes for t in ax.texts]
    for r in verdicts(rows).itertuples():
        assert sum(h.startswith(f"{r.claim} [") and h.endswith(r.verdict) for h in headers) == 2
    assert all(any(line.get_xdata()[0] == 0 for line in ax.lines) for ax in fig.axes)
    assert "seed" not in " ".join(headers)  # the report's claims are the reference report's


def test_every_accuracy_figure_shows_chance_and_every_figure_names_its_axes():
    sweep = pd.DataFrame(
        [
            {"field": "n_prototypes", "value": v, "aug": "swav", "seed": 0, "final_loss": 5.0}
            | {"linear_top1": 6.0, "linear_top1_se": 0.5, "knn_top1": 5.0, "knn_top1_se": 0.5}
            for v in (30, 300, 3000)
        ]
    )
    sweep_fig = plots.sweep_figure(sweep, "n_prototypes")
    assert [_chance(ax) for ax in sweep_fig.axes] == [[1.0], [1.0], []]  # no chance for a loss
    assert "reference report's value" in sweep_fig._suptitle.get_text()
    assert _chance(plots.finetune_curves(_row()).axes[0]) == [1.0]
    superclass = plots.superclass_bars({f"g{i}": float(i) for i in range(20)})
    assert _chance(superclass.axes[0]) == [1.0] and superclass.axes[0].get_title()
    figures = [
        sweep_fig,
        plots.accuracy_vs_labels(_results(), "finetune"),
        plots.knn_bars(_knn(2)),
        plots.loss_curves({("flip", 0): _metrics()}),
        plots.claims_forest(_claims_rows()),
        plots.usage_histogram(torch.tensor([3, 1, 0])),
        plots.tsne_scatter(torch.randn(40, 2), torch.arange(40) % 20, [str(i) for i in range(20)]),
    ]
    for fig in figures:
        titled = [f for f in (fig, *fig.subfigs) if f._suptitle is not None]
        assert titled or all(ax.get_title() for ax in fig.axes), fig
        assert any(ax.get_xlabel() for ax in fig.axes), fig  # shared x axes: the lowest says it
        for ax in fig.axes:
            assert ax.get_ylabel() or [t.get_text() for t in ax.get_yticklabels()], ax


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

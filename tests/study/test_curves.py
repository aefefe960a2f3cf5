"""results/<preset>/curves.csv and the figure that draws a user's run against it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from swavnb.study import plots
from swavnb.study.curves import COLUMNS, read_curves, spread, write_curves
from swavnb.study.results import collect_metrics, write_results


def _metrics(aug: str, seed: int, losses: list[float], knn: bool = True) -> dict:
    epochs = [
        {
            "epoch": e + 1,
            "loss": loss,
            "lr": 0.1 / (e + 1),
            "img_per_s": 100.0,
            "seconds": 2.0,
            "usage_entropy": 0.9 - 0.01 * e,
            "prototypes_used": 0.95,
            **({"online_knn_top1": 2.0 + e + seed, "online_knn_seconds": 0.5} if knn else {}),
        }
        for e, loss in enumerate(losses)
    ]
    config = {"preset": "smoke", "aug": aug, "seed": seed, "n_prototypes": 30}
    return {"config": config, "device": "cpu", "epochs": epochs, "alarms": []}


def _runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for aug, seed, losses, knn in [
        ("flip", 0, [3.0, 2.0, 1.5], True),
        ("flip", 1, [3.2, 2.4, 1.7], True),
        ("swav", 0, [3.4, 3.3], False),  # written before the online k-NN
    ]:
        folder = runs / "smoke" / aug / f"seed-{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(_metrics(aug, seed, losses, knn)))
    custom = runs / "smoke" / "custom" / "lr-0.5" / "flip" / "seed-0"  # not the study's
    custom.mkdir(parents=True)
    (custom / "metrics.json").write_text(json.dumps(_metrics("flip", 0, [9.0])))
    return runs


def test_write_results_writes_every_study_epoch_to_curves_csv(tmp_path):
    write_results("smoke", _runs(tmp_path), tmp_path / "results")
    curves = pd.read_csv(tmp_path / "results" / "smoke" / "curves.csv")
    assert tuple(curves.columns) == COLUMNS
    assert len(curves) == 3 + 3 + 2 and set(curves["preset"]) == {"smoke"}
    flip1 = curves[(curves["aug"] == "flip") & (curves["seed"] == 1)]
    assert list(flip1["epoch"]) == [1, 2, 3] and list(flip1["loss"]) == [3.2, 2.4, 1.7]
    assert list(flip1["online_knn_top1"]) == [3.0, 4.0, 5.0]
    assert flip1["lr"].tolist() == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert curves[curves["aug"] == "swav"]["online_knn_top1"].isna().all()
    assert 9.0 not in curves["loss"].tolist()  # custom runs stay out
    # what read_curves gives back, for one aug
    flip = read_curves("smoke", "flip", tmp_path / "results")
    assert len(flip) == 6 and set(flip["aug"]) == {"flip"}


def test_no_runs_writes_no_curves_and_a_missing_file_reads_empty(tmp_path):
    assert write_curves({}, "smoke", tmp_path) is None
    assert not (tmp_path / "curves.csv").exists()
    empty = read_curves("smoke", "flip", tmp_path)
    assert len(empty) == 0 and tuple(empty.columns) == COLUMNS


def test_curves_csv_is_written_atomically_with_the_projects_writer(tmp_path, monkeypatch):
    written = []
    import swavnb.study.curves as curves

    real = curves.write_text
    monkeypatch.setattr(curves, "write_text", lambda p, d: written.append(p) or real(p, d))
    path = write_curves(collect_metrics(_runs(tmp_path) / "smoke"), "smoke", tmp_path / "out")
    assert written == [path] == [tmp_path / "out" / "curves.csv"]


def test_spread_is_the_mean_lowest_and_highest_over_seeds_per_epoch(tmp_path):
    curves = read_curves("smoke", "flip", _written(tmp_path))
    loss = spread(curves, "loss")
    assert loss["epoch"].tolist() == [1, 2, 3]
    assert loss["mean"].tolist() == pytest.approx([3.1, 2.2, 1.6])
    assert loss["low"].tolist() == [3.0, 2.0, 1.5] and loss["high"].tolist() == [3.2, 2.4, 1.7]
    assert loss["seeds"].tolist() == [2, 2, 2]
    swav = read_curves("smoke", "swav", tmp_path / "results")
    assert len(spread(swav, "online_knn_top1")) == 0  # no seed has it


def _written(tmp_path: Path) -> Path:
    write_results("smoke", _runs(tmp_path), tmp_path / "results")
    return tmp_path / "results"


def _line(ax, label: str):
    return next(line for line in ax.lines if line.get_label() == label)


def test_reference_curves_draw_the_run_over_the_studys_band_with_log_k_and_chance(tmp_path):
    reference = read_curves("smoke", None, _written(tmp_path))
    run = _metrics("flip", 7, [3.3, 3.35, 3.36])
    run["alarms"] = [{"epoch": 2, "kind": "loss_plateau"}]
    fig = plots.reference_curves(run, reference)
    loss, knn, usage = fig.axes
    assert "flip" in fig.get_suptitle() and "against the study's 2 seeds" in fig.get_suptitle()
    assert _line(loss, "this run").get_ydata().tolist() == [3.3, 3.35, 3.36]
    study = _line(loss, "study: mean of 2 seeds (band: lowest to highest)")
    assert study.get_ydata().tolist() == pytest.approx([3.1, 2.2, 1.6])  # flip's only
    assert len(loss.collections) == 1  # the band
    band = loss.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(1.5) and band[:, 1].max() == pytest.approx(3.2)
    log_k = _line(loss, "log K = 3.40 (K = 30)")
    assert log_k.get_ydata()[0] == pytest.approx(math.log(30))
    assert _line(loss, "collapse alarm").get_xdata()[0] == 2
    assert _line(knn, "chance (1 %)").get_ydata()[0] == 1.0
    assert _line(knn, "this run").get_ydata().tolist() == [9.0, 10.0, 11.0]
    for ax, label in zip(
        fig.axes, ("SwAV loss", "online k-NN top-1 (%)", "prototype usage"), strict=True
    ):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel().startswith(label)
    assert len(usage.collections) == 1


def test_reference_curves_without_reference_draw_the_run_alone_and_say_so(tmp_path):
    run = _metrics("jitter", 0, [3.0, 2.0])
    for reference in (
        None,
        read_curves("smoke", None, tmp_path),
        read_curves("smoke", None, _written(tmp_path)),
    ):
        fig = plots.reference_curves(run, reference)  # no curves at all, or none for jitter
        assert "alone: no committed curves for smoke/jitter" in fig.get_suptitle()
        loss = fig.axes[0]
        assert not loss.collections
        assert [line.get_label() for line in loss.lines] == ["this run", "log K = 3.40 (K = 30)"]
    # a run without the online k-NN: the panel says so
    fig = plots.reference_curves(_metrics("jitter", 0, [3.0], knn=False), None)
    assert [t.get_text() for t in fig.axes[1].texts] == ["not recorded"]


def test_training_and_loss_curves_draw_log_k_where_the_config_gives_k():
    run = _metrics("flip", 0, [3.0, 2.0])
    loss = plots.training_curves(run).axes[0]
    assert np.allclose(_line(loss, "log K = 3.40 (K = 30)").get_ydata(), math.log(30))
    other = _metrics("swav", 0, [6.0, 5.0])
    other["config"]["n_prototypes"] = 300
    # a panel per strategy: each draws the log K of its own runs' K
    flip, swav, _usage = plots.loss_curves({("flip", 0): run, ("swav", 0): other}).axes
    assert [line.get_label() for line in flip.lines if "log K" in line.get_label()] == [
        "log K = 3.40 (K = 30)"
    ]
    assert np.allclose(_line(swav, "log K = 5.70 (K = 300)").get_ydata(), math.log(300))

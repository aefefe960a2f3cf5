"""The fast path and the reference train the same run: the comparison runs end to end on our
trainer, and its verdict says "within noise" exactly when the paths differ less than two seeds (the
verdict at a meaningful size is the committed measurement's job)."""

from __future__ import annotations

import json

import pytest

from swavnb.base.device import device_kind
from swavnb.data.cifar import batch_indices
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import Pretrainer
from swavnb.speed.loss_curve import main, verdict


def test_loss_curve_compares_both_paths_and_a_rerun_over_the_same_steps(tmp_path):
    out = tmp_path / "curve.json"
    report = main(
        [
            "--preset",
            "smoke",
            "--aug",
            "flip",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--workers",
            "1",
            "--windows",
            "2",
            "--json",
            str(out),
            "--figures",
            str(tmp_path),
        ]
    )
    assert json.loads(out.read_text()) == report
    steps = 200 // 32  # smoke: 200 images, batch 32, one epoch
    assert report["steps"] == steps
    assert list(report["curves"]) == ["ours", "reference", "ours, seed 1"]
    assert all(len(curve) == steps for curve in report["curves"].values())
    assert report["curves"]["ours, seed 1"] != report["curves"]["ours"]
    # "ours" is the pretraining run itself: its first step is that of a fresh Pretrainer
    config = pretrain_config("smoke", aug="flip", epochs=1, device="cpu")
    trainer = Pretrainer(config, tmp_path / "run", progress=False)
    first = next(batch_indices(len(trainer.images), config.batch_size, config.seed, 0))
    assert trainer.scheduled_step(0, 0, first)[0].item() == report["curves"]["ours"][0]
    kind = device_kind("cpu")  # e.g. cpu-avx2
    assert {p.name for p in tmp_path.glob("loss-curve-*")} == {
        f"loss-curve-{kind}.png",
        f"loss-curve-{kind}.svg",
    }


def test_verdict_is_within_noise_only_when_the_paths_differ_less_than_two_seeds():
    ours = [5.0, 4.0, 3.0, 2.0]
    rerun = [loss + 0.2 for loss in ours]  # another seed, 0.2 away
    close = verdict(ours, [loss - 0.1 for loss in ours], rerun, n_windows=2)
    assert close["mean_path_gap"] == pytest.approx(0.1)
    assert close["mean_seed_gap"] == pytest.approx(0.2) and close["within_noise"]
    assert not verdict(ours, [loss + 0.3 for loss in ours], rerun, n_windows=2)["within_noise"]
    # windows compare the trend: step-to-step noise that averages out within a window is no gap
    noisy = [5.1, 3.9, 3.2, 1.8]
    assert verdict(ours, noisy, rerun, n_windows=2)["mean_path_gap"] == pytest.approx(0.0)
    assert verdict(ours, noisy, rerun, n_windows=4)["mean_path_gap"] == pytest.approx(0.15)

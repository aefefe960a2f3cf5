"""The fast path and the reference train the same run: the comparison runs end to end (no verdict
asserted: that is the committed measurement's job)."""

from __future__ import annotations

import json

import pytest

from swavnb.device import device_kind
from swavnb.loss_curve import main


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
    ours = report["curves"]["ours"]
    assert report["window_means"]["ours"] == pytest.approx([sum(ours[:3]) / 3, sum(ours[3:]) / 3])
    assert report["curves"]["ours, seed 1"] != ours
    assert report["within_noise"] == (report["mean_path_gap"] <= report["mean_seed_gap"])
    kind = device_kind("cpu")  # e.g. cpu-avx2
    assert {p.name for p in tmp_path.glob("loss-curve-*")} == {
        f"loss-curve-{kind}.png",
        f"loss-curve-{kind}.svg",
    }

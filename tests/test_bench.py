"""The benchmark runs end to end and reports what the README quotes (no timing asserted)."""
from __future__ import annotations

import json

import pytest

from swavnb.bench import main


def test_bench_writes_ratios_and_step_shares(tmp_path):
    out = tmp_path / "bench.json"
    report = main(["--device", "cpu", "--augs", "flip,swav", "--batches", "8", "--steps", "1", "--repeats", "1",
                   "--warmup", "1", "--images", "200", "--workers", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == report
    assert {"device", "torch", "threads", "cases"} <= set(report)
    assert [case["case"] for case in report["cases"]] == ["flip", "swav"]
    for case in report["cases"]:
        assert case["ratio"] == pytest.approx(case["ours_img_per_s"] / case["reference_img_per_s"])
        assert set(case["ours_step_share"]) == {"augment", "forward", "sinkhorn_loss", "backward_update"}
        assert sum(case["ours_step_share"].values()) == pytest.approx(1.0)


def test_loss_curve_compares_both_paths_and_a_rerun_over_the_same_steps(tmp_path):
    out = tmp_path / "curve.json"
    report = main(["--loss-curve", "--preset", "smoke", "--augs", "flip", "--curve-epochs", "1", "--device", "cpu",
                   "--workers", "1", "--windows", "2", "--json", str(out), "--figures", str(tmp_path)])
    assert json.loads(out.read_text()) == report
    steps = 200 // 32  # smoke: 200 images, batch 32, one epoch
    assert report["steps"] == steps
    assert list(report["curves"]) == ["ours", "reference", "ours, seed 1"]
    assert all(len(curve) == steps for curve in report["curves"].values())
    ours = report["curves"]["ours"]
    assert report["window_means"]["ours"] == pytest.approx([sum(ours[:3]) / 3, sum(ours[3:]) / 3])
    assert report["curves"]["ours, seed 1"] != ours
    assert report["within_noise"] == (report["mean_path_gap"] <= report["mean_seed_gap"])
    assert (tmp_path / "loss-curve-cpu.png").exists() and (tmp_path / "loss-curve-cpu.svg").exists()

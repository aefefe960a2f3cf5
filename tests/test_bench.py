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

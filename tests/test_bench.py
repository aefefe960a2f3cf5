"""The benchmark runs end to end and reports what the README quotes (no timing asserted)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from swavnb.bench import (
    _convolutions_use_tf32,
    _float32_matmul_like_convolutions,
    main,
    step_flops_per_image,
)
from swavnb.config import pretrain_config
from swavnb.precision import native_bf16
from swavnb.train import Pretrainer


def test_bench_writes_ratios_and_step_shares(tmp_path):
    out = tmp_path / "bench.json"
    # eager: test_train checks that compiling changes nothing but the speed
    report = main(
        [
            "--device",
            "cpu",
            "--augs",
            "flip,swav",
            "--batches",
            "8",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--images",
            "200",
            "--workers",
            "1",
            "--peak-size",
            "256",
            "--eager",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == report and report["ours_compiled"] is False
    assert {"device", "torch", "threads", "cases"} <= set(report)
    assert [case["case"] for case in report["cases"]] == ["flip", "swav"]
    for case in report["cases"]:
        assert case["ratio"] == pytest.approx(case["ours_img_per_s"] / case["reference_img_per_s"])
        assert set(case["ours_step_share"]) == {
            "augment",
            "forward",
            "sinkhorn_loss",
            "backward_update",
        }
        assert sum(case["ours_step_share"].values()) == pytest.approx(1.0)
        # achieved compute is throughput x FLOPs per image; the ceiling is the ratio at the matmul
        # peak of ours' precision, which auto picks from the hardware (float32 where bf16 would be
        # emulated)
        peak, precision = case["matmul_peak_gflop_per_s"], case["ours_precision"]
        assert (
            precision == report["ours_precision"] == ("bf16" if native_bf16("cpu") else "float32")
        )
        assert set(peak) == {"float32", precision} and min(peak.values()) > 0
        ours_rate = case["ours_img_per_s"] * case["gflop_per_image"]
        reference_rate = case["reference_img_per_s"] * case["gflop_per_image"]
        assert case["ours_gflop_per_s"] == pytest.approx(ours_rate)
        assert case["reference_gflop_per_s"] == pytest.approx(reference_rate)
        assert case["ours_share_of_peak"] == pytest.approx(ours_rate / peak[precision])
        assert case["reference_share_of_fp32_peak"] == pytest.approx(
            reference_rate / peak["float32"]
        )
        assert case["ratio_ceiling"] == pytest.approx(peak[precision] / reference_rate)
        assert case["ratio"] == pytest.approx(case["ratio_ceiling"] * case["ours_share_of_peak"])
    flip, swav = report["cases"]
    assert swav["gflop_per_image"] > flip["gflop_per_image"]  # the local crops add compute


def test_step_flops_are_forward_and_backward_of_every_view(tmp_path):
    trainer = Pretrainer(
        pretrain_config("smoke", aug="flip", device="cpu", image_size=32), tmp_path, progress=False
    )
    weights, draws = copy.deepcopy(trainer.model.state_dict()), trainer.generator.get_state()
    per_image = step_flops_per_image(trainer, images=4)
    # the timed trainer is untouched: same weights and BN statistics, no gradients, same
    # augmentation draws next
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())
    assert all(p.grad is None for p in trainer.model.parameters())
    assert torch.equal(trainer.generator.get_state(), draws)
    assert step_flops_per_image(trainer, images=2) == pytest.approx(per_image)  # a per-image count
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        trainer.model(trainer.make_views(torch.arange(4)))
    forward = counter.get_total_flops() / 4  # both views
    # backward costs two forwards (input and weight gradients), less the stem's unused input
    # gradient
    assert 2.99 * forward < per_image < 3.0 * forward
    # ResNet-18 with the CIFAR stem is ~0.56 GMAC per 32 px image: 1.11 GFLOP forward per view
    assert forward / 2 == pytest.approx(1.11e9, rel=0.02)


def test_float32_peak_follows_the_convolutions_tf32_setting_and_restores_the_matmul_one():
    matmul = torch.backends.cuda.matmul
    name = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, name)
    with _float32_matmul_like_convolutions(gpu=True):
        inside = getattr(matmul, name)
    assert inside in (("tf32", True) if _convolutions_use_tf32() else ("ieee", False))
    assert getattr(matmul, name) == before
    with _float32_matmul_like_convolutions(gpu=False):  # a CPU run touches no CUDA flag
        assert getattr(matmul, name) == before

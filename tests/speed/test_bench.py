"""The benchmark runs end to end, times every phase of the real step and counts the network's FLOPs
(no timing asserted)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from swavnb.base.precision import native_bf16
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import Pretrainer
from swavnb.speed.bench import (
    _convolutions_use_tf32,
    _float32_matmul_like_convolutions,
    main,
    step_flops_per_image,
)


def test_bench_times_every_phase_of_the_step_and_counts_its_flops(tmp_path):
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
        # every phase of the real step was timed, in the order it runs
        assert list(case["ours_step_share"]) == [
            "augment",
            "forward",
            "sinkhorn_loss",
            "backward_update",
        ]
        assert min(case["ours_step_share"].values()) > 0
        # ours' precision is the one auto picks from the hardware (float32 where bf16 would be
        # emulated), and its peak is measured beside float32's
        precision = case["ours_precision"]
        assert (
            precision == report["ours_precision"] == ("bf16" if native_bf16("cpu") else "float32")
        )
        assert set(case["matmul_peak_gflop_per_s"]) == {"float32", precision}
    # FLOPs per image of the paper preset at 32 px: forward + backward ~3 forwards of ResNet-18's
    # 1.11 GFLOP per 32 px view; swav's 4 local crops at 16 px cost a quarter of a view each
    flip, swav = report["cases"]
    assert flip["gflop_per_image"] == pytest.approx(3 * 2 * 1.11, rel=0.02)
    assert swav["gflop_per_image"] / flip["gflop_per_image"] == pytest.approx(1.5, rel=0.02)


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

"""Device choice and the words results and logs use for it."""

from __future__ import annotations

import os

import pytest
import torch

from swavnb.base import device
from swavnb.base.device import (
    available_cores,
    device_kind,
    device_name,
    hardware,
    pick_device,
    run_facts,
)


def test_auto_is_the_cpu_without_a_gpu_and_cuda_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU is visible; use --device cpu or auto"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="choose auto, cuda or cpu"):
        pick_device("tpu")


def test_the_cpu_is_named_with_its_capability_and_threads():
    name = device_name(torch.device("cpu"))
    assert name.startswith("cpu: ")
    assert f"({torch.backends.cpu.get_cpu_capability()}" in name  # AVX2 vs AVX512: other machines
    assert name.endswith(f", {torch.get_num_threads()} threads")
    assert run_facts(torch.device("cpu"), 2)["device"] == name


def test_the_device_line_says_the_precision_amp_resolves_to():
    assert hardware("cpu", "false") == f"{device_name(torch.device('cpu'))}, float32"
    assert hardware("cpu", "true").endswith(", bf16")


def test_the_device_kind_tells_cpu_kinds_apart_in_a_file_name(monkeypatch):
    monkeypatch.setattr(device, "cpu_capability", lambda: "AVX512 + AVX512_BF16")
    assert device_kind("cpu") == "cpu-avx512-avx512_bf16"
    monkeypatch.setattr(device, "cpu_capability", lambda: "AVX512")  # no bf16: another kind
    assert device_kind("cpu") == "cpu-avx512"
    monkeypatch.setattr(device, "cpu_capability", lambda: "AVX2")
    assert device_kind(torch.device("cpu")) == "cpu-avx2"


def test_the_cores_are_those_this_process_may_use():
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert available_cores() == len(os.sched_getaffinity(0))

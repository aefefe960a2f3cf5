"""Precision follows the hardware: auto = bf16 only where it is native; true / false force it."""

from __future__ import annotations

import inspect

import pytest
import torch

from swavnb.base.precision import check_amp, cpu_capability, native_bf16, use_bf16
from swavnb.evaluation import clusters, finetuning, probes
from swavnb.evaluation.config import FinetuneConfig, finetune_config
from swavnb.pretraining.config import PretrainConfig, pretrain_config


def _cpu_has(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "bf16"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_auto_uses_bf16_on_a_cpu_only_where_it_is_native(monkeypatch, avx512_bf16, amx, bf16):
    _cpu_has(monkeypatch, avx512_bf16, amx)
    assert native_bf16("cpu") is bf16
    assert use_bf16("auto", "cpu") is bf16
    # forcing ignores the hardware either way
    assert use_bf16("true", "cpu") is True and use_bf16("false", "cpu") is False
    capability = cpu_capability()
    assert capability.startswith(torch.backends.cpu.get_cpu_capability())
    assert ("AVX512_BF16" in capability) is avx512_bf16 and ("AMX" in capability) is amx


def test_auto_on_a_gpu_asks_for_native_bf16_not_emulation(monkeypatch):
    asked = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["including_emulation"] = including_emulation
        return False  # e.g. a pre-Ampere card, which only emulates bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert use_bf16("auto", "cuda") is False and asked == {"including_emulation": False}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("true", "true"),
        ("False", "false"),
        ("1", "true"),
        ("no", "false"),
        (True, "true"),
        (False, "false"),  # a notebook's bool, or a checkpoint written when amp was a bool
    ],
)
def test_amp_values_from_flags_notebooks_and_old_configs(value, expected):
    assert check_amp(value) == expected
    assert pretrain_config("smoke", amp=value).amp == expected
    assert finetune_config("smoke", amp=value).amp == expected


def test_an_unknown_amp_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown amp 'bf16'; choose one of auto, true, false"):
        pretrain_config("smoke", amp="bf16")
    with pytest.raises(ValueError, match=r"unknown amp 'maybe'"):
        finetune_config("quick", amp="maybe")


def test_no_default_forces_bf16_without_asking_the_hardware():
    assert PretrainConfig().amp == "auto" and FinetuneConfig().amp == "auto"
    for preset in ("paper", "swav", "quick", "smoke"):
        assert pretrain_config(preset).amp == "auto" and finetune_config(preset).amp == "auto"
    functions = [probes.precise_batchnorm, probes.extract_features, clusters.prototype_scores]
    for function in functions:
        assert inspect.signature(function).parameters["amp"].default == "auto", function.__name__
    assert "amp" not in inspect.signature(finetuning.finetune).parameters  # it follows its config

"""Which precision a run computes in: bf16 autocast only where the hardware runs bf16 natively.

A CPU without AVX512_BF16 or AMX (e.g. AVX2-only Zen 3, most laptops) emulates bf16 and runs
it 5-90x slower than float32, so ``amp="auto"`` (every default) asks the hardware.
"""

from __future__ import annotations

import torch

AMP_CHOICES = ("auto", "true", "false")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
# torch's own cpuinfo probes (torch.cpu); each names a CPU feature that computes bf16 in hardware
_NATIVE_BF16_PROBES = {"AVX512_BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}


def auto_true_false(value: str | bool, name: str, auto_means: str) -> str:
    """``auto`` / ``true`` / ``false`` from a flag, a notebook parameter or an old config's bool.

    Raises:
        ValueError: naming the setting, the choices and what ``auto`` means, for anything else.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text == "auto":
        return text
    if text in _TRUE or text in _FALSE:
        return "true" if text in _TRUE else "false"
    raise ValueError(
        f"unknown {name} {value!r}; choose one of {', '.join(AMP_CHOICES)} (auto = {auto_means})"
    )


def check_amp(value: str | bool) -> str:
    """The amp setting (:func:`auto_true_false`)."""
    return auto_true_false(value, "amp", "bf16 only where the hardware runs it natively")


def _cpu_features() -> list[str]:
    """The native-bf16 CPU features torch's cpuinfo reports (absent probes count as absent)."""
    found = []
    for name, probe in _NATIVE_BF16_PROBES.items():
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            found.append(name)
    return found


def cpu_capability() -> str:
    """The CPU's vector capability as torch dispatches to it, plus its native bf16 units.

    E.g. ``AVX2`` (Zen 3: no bf16 hardware) or ``AVX512 + AVX512_BF16`` (Zen 4).
    """
    return " + ".join([torch.backends.cpu.get_cpu_capability(), *_cpu_features()])


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 in hardware: a bf16 CUDA GPU, or a CPU with AVX512_BF16 or
    AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.4 has no emulation flag and reports only native support
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(_cpu_features())
    return False


def use_bf16(amp: str | bool, device: torch.device | str) -> bool:
    """Resolve an ``amp`` setting on ``device``: ``auto`` asks the hardware, ``true`` / ``false``
    force it."""
    amp = check_amp(amp)
    return native_bf16(device) if amp == "auto" else amp == "true"


def precision_name(bf16: bool) -> str:
    """What results and logs record: ``bf16`` (autocast) or ``float32``."""
    return "bf16" if bf16 else "float32"


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``bf16``, else a disabled (float32) one."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

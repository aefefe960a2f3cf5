"""Which device a run uses, and how results and logs name it: GPU model, or CPU model with its
vector capability and threads, plus the precision ``amp`` resolves to there."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

from swavnb.base.precision import cpu_capability, precision_name, use_bf16


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is the local GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto"
            )
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; choose auto, cuda or cpu")


def device_name(device: torch.device) -> str:
    """The hardware in words, for results and logs: the GPU's name, or the CPU model, capability and
    threads.

    The capability tells apart CPUs sold under one name (``AMD EPYC`` is AVX2-only Zen 3 or
    AVX512 + bf16 Zen 4), which decides the precision and the speed of a run.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"cpu: {model} ({cpu_capability()}), {torch.get_num_threads()} threads"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, as a container or job scheduler sets
    it), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads each of ``jobs`` steps side by side gets: its share of the cores (one job keeps
    the process's own)."""
    return torch.get_num_threads() if jobs <= 1 else max(1, available_cores() // jobs)


# the study's --jobs, passed to each step it starts: their throughput is time-shared
JOBS_ENV = "SWAVNB_SHARED_WITH_JOBS"
# cuBLAS's deterministic workspace (CUDA >= 10.2); it must precede the process's first matmul
CUBLAS_DETERMINISTIC = ":4096:8"


def shared_with_jobs() -> int:
    """How many study steps may run side by side with this process (``study --jobs``; 1 = alone)."""
    return int(os.environ.get(JOBS_ENV, "1"))


def set_deterministic() -> dict[str, Any]:
    """Make this process's kernels repeatable on CUDA (torch's reproducibility notes); returns the
    flags set.

    cuDNN's deterministic algorithms and no benchmarking, torch's deterministic kernels (which also
    turn off Inductor's numerics-changing autotuning) and cuBLAS's fixed workspace, which takes
    effect only before the process's first CUDA matmul (every study step is a fresh process). An op
    with no deterministic CUDA kernel then raises, naming itself, rather than silently varying.
    Process-wide, as torch's flags are.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    return {
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }


def run_facts(device: torch.device, workers: int) -> dict[str, Any]:
    """What a reader needs to compare two reports: device, torch version, threads, reference
    workers."""
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reference_workers": workers,
    }


def hardware(device: str = "auto", amp: str | bool = "auto") -> str:
    """What ``device`` (auto / cuda / cpu) runs on and in which precision ``amp`` resolves to there,
    in words: the notebooks' and the study's device line."""
    resolved = pick_device(device)
    return f"{device_name(resolved)}, {precision_name(use_bf16(amp, resolved))}"


def device_kind(device: torch.device | str = "auto") -> str:
    """The hardware kind as a file-name part, for measurement files: ``cpu-avx2``,
    ``cpu-avx512-avx512_bf16``, ``nvidia-h200``; so one kind's figures never overwrite another's."""
    resolved = pick_device(device) if isinstance(device, str) else device
    name = (
        torch.cuda.get_device_name(resolved)
        if resolved.type == "cuda"
        else f"cpu {cpu_capability()}"
    )
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")

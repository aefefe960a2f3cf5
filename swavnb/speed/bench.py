"""``python -m swavnb.bench``: pretraining throughput of swavnb vs the standard pipeline, one
process, one run.

Cases: ``flip`` (2 x 32 px views) and ``swav`` multi-crop, each at the given batch
sizes. *ours* is ``Pretrainer.train_step`` exactly as ``pretrain`` runs the ``paper``
preset (dataset resident on the device, batched on-device augmentation, bf16 autocast where
the hardware runs bf16 natively and float32 elsewhere, channels_last, ``torch.compile``, which
compiles during the warm-up); *reference* is
torchvision PIL transforms in a ``DataLoader`` with workers, float32, with the same model
and ``swav_loss``. Throughput counts each image once whatever its number of views; the
median of several timed repetitions after warm-up is reported.

How close to the hardware: the same run counts the step's FLOPs (torch's
``FlopCounterMode``: convolutions and matmuls, forward + backward) and, next to each
case, times a large matmul on the device in ours' precision and in float32. ``ratio_ceiling``
estimates the ratio ours would reach if every counted FLOP ran at ours' matmul peak, against
the reference as measured: a target well above it is not reachable by a faster
pipeline around the same network.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from swavnb.base.device import available_cores, pick_device, run_facts
from swavnb.base.files import write_json
from swavnb.base.precision import autocast, precision_name, use_bf16
from swavnb.data.cifar import CifarSplit, epoch_permutation
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.recipe import training_images
from swavnb.pretraining.train import Pretrainer
from swavnb.speed.reference import ReferenceTrainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory of the case, or the process's peak RSS on the CPU (monotone over
    cases)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _timed(step, n_steps: int, warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Seconds per repetition of ``n_steps`` calls of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(n_steps):
            step()
        _sync(device)
        times.append(time.perf_counter() - tic)
    return times


def matmul_peak_flops(
    device: torch.device, dtype: torch.dtype, size: int = 0, repeats: int = 5
) -> float:
    """FLOP/s of a large square matmul in ``dtype``, best of ``repeats``: the device's practical
    compute peak.

    On CUDA, float32 uses TF32 exactly when cuDNN does, so the peak is that of the reference's
    float32 convolutions (TF32 by default) rather than of strict float32.
    """
    gpu = device.type == "cuda"
    size = size or (
        8192 if gpu else 4096
    )  # compute-bound; 0.3-0.8 s per repetition on the 2-core CPU
    calls = 20 if gpu else 1
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    with _float32_matmul_like_convolutions(gpu):
        times = _timed(lambda: a @ b, n_steps=calls, warmup=2, repeats=repeats, device=device)
    return 2 * size**3 * calls / min(times)


def _convolutions_use_tf32() -> bool:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(
        conv, "fp32_precision"
    ):  # torch >= 2.9; don't mix with the legacy flags
        return conv.fp32_precision == "tf32"
    return torch.backends.cudnn.allow_tf32


@contextlib.contextmanager
def _float32_matmul_like_convolutions(gpu: bool) -> Iterator[None]:
    """On CUDA, float32 matmuls use TF32 exactly when cuDNN's float32 convolutions do; nothing to do
    on a CPU."""
    if not gpu:
        yield
        return
    matmul = torch.backends.cuda.matmul
    name = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    saved = getattr(matmul, name)
    tf32 = _convolutions_use_tf32()
    setattr(matmul, name, ("tf32" if tf32 else "ieee") if name == "fp32_precision" else tf32)
    try:
        yield
    finally:
        setattr(matmul, name, saved)


def step_flops_per_image(trainer: Pretrainer, images: int = 8) -> float:
    """Convolution and matmul FLOPs of one training step (forward + backward, all views) per image.

    Counted on a copy of the model with the augmentation generator restored afterwards, so the
    timed trainer's weights, gradients and later augmentation draws are untouched. BatchNorm,
    activations and the optimiser are not counted: they are what separates a step from the peak.
    """
    model = copy.deepcopy(trainer.model)
    generator_state = trainer.generator.get_state()
    views = trainer.make_views(torch.arange(images, device=trainer.device))
    trainer.generator.set_state(generator_state)
    with FlopCounterMode(display=False) as counter:
        with autocast(trainer.device, trainer.bf16):
            _, scores = model(views)
        trainer.loss(scores).backward()
    return counter.get_total_flops() / images


def cycling_steps(trainer: Pretrainer) -> Callable[..., None]:
    """One ``train_step`` per call (``phase_done`` passed on), over epoch 0's batches again and
    again."""
    batch = trainer.config.batch_size
    order = epoch_permutation(len(trainer.images), trainer.config.seed, 0).to(trainer.device)
    counter = iter(range(10**9))

    def step(phase_done: Callable[[str], None] = lambda phase: None) -> None:
        i = next(counter) % trainer.per_epoch
        trainer.train_step(order[i * batch : (i + 1) * batch], i, phase_done)

    return step


def bench_ours(aug: str, batch: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config = pretrain_config(
        "paper",
        aug=aug,
        batch_size=batch,
        device=args.device,
        train_images=args.images,
        compile=not args.eager,
        amp=args.amp,
    )
    trainer = Pretrainer(config, out / f"ours-{aug}-{batch}", progress=False)
    device = trainer.device
    _reset_memory(device)
    flops = step_flops_per_image(trainer)
    times = _timed(cycling_steps(trainer), args.steps, args.warmup, args.repeats, device)
    phases: dict[str, float] = {}
    clock = [0.0]

    def phase_done(phase: str) -> None:  # a device sync between phases, so each is timed on its own
        _sync(device)
        now = time.perf_counter()
        phases[phase] = phases.get(phase, 0.0) + now - clock[0]
        clock[0] = now

    phased_step = cycling_steps(trainer)  # the timed run's batches again, from the first
    for _ in range(args.steps):
        _sync(device)
        clock[0] = time.perf_counter()
        phased_step(phase_done)
    total = sum(phases.values())
    return {
        "img_per_s": batch * args.steps / statistics.median(times),
        "peak_mem_mb": _peak_memory_mb(device),
        "share": {name: value / total for name, value in phases.items()},
        "device": device,
        "flops": flops,
    }


def bench_reference(
    aug: str, batch: int, args: argparse.Namespace, images: torch.Tensor, device: torch.device
) -> dict[str, Any]:
    config = pretrain_config("paper", aug=aug, batch_size=batch)
    trainer = ReferenceTrainer(config, images, args.workers, device)
    _reset_memory(device)
    counter = iter(range(10**9))
    times = _timed(
        lambda: trainer.train_step(next(counter)), args.steps, args.warmup, args.repeats, device
    )
    return {
        "img_per_s": batch * args.steps / statistics.median(times),
        "peak_mem_mb": _peak_memory_mb(device),
    }


HEADER = (
    f"{'case':<6}{'batch':>6}{'ours img/s':>12}{'ref img/s':>11}"
    f"{'ratio':>7}{'ceiling':>9}{'ours/peak':>10}"
    f"{'peak ours/fp32':>16}{'augment':>9}{'forward':>9}{'sk+loss':>9}{'bwd+opt':>9}"
)


def _row(case: dict[str, Any]) -> str:
    share, peak = case["ours_step_share"], case["matmul_peak_gflop_per_s"]
    peaks = f"{peak[case['ours_precision']]:.0f}/{peak['float32']:.0f}"
    return (
        f"{case['case']:<6}{case['batch']:>6}"
        f"{case['ours_img_per_s']:>12.1f}{case['reference_img_per_s']:>11.1f}"
        f"{case['ratio']:>6.2f}x{case['ratio_ceiling']:>8.2f}x"
        f"{100 * case['ours_share_of_peak']:>9.0f}%"
        f"{peaks:>16}" + "".join(f"{100 * share[k]:>8.1f}%" for k in share)
    )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m swavnb.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--augs", default="flip,swav", help="cases, comma-separated")
    parser.add_argument(
        "--batches", default="", help="batch sizes (default: 256 on GPU; 64,256 on CPU)"
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="steps per timed repetition (default 20 GPU / 3 CPU)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=0, help="reference DataLoader workers (default: CPU count)"
    )
    parser.add_argument(
        "--images", type=int, default=0, help="training images held (0 = all 50,000)"
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="ours without torch.compile (pretrain's --compile false)",
    )
    parser.add_argument(
        "--amp", default="auto", help="ours' precision: auto (bf16 where native), true, false"
    )
    parser.add_argument(
        "--peak-size", type=int, default=0, help="peak matmul side (default 4096 CPU, 8192 GPU)"
    )
    parser.add_argument("--json", default="", help="write the results here")
    return parser.parse_args(argv)


def _case(
    aug: str,
    batch: int,
    args: argparse.Namespace,
    train: CifarSplit,
    device: torch.device,
    dtypes: dict[str, torch.dtype],
    tmp: Path,
) -> dict[str, Any]:
    """One case: ours and the reference at ``aug`` and ``batch``, beside the matmul peaks of
    ``dtypes`` (float32, and bf16 where ours runs it)."""
    ours_precision = "bf16" if "bf16" in dtypes else "float32"
    # measured next to each case, so clock or thermal drift over a long run does not skew its shares
    peak = {
        name: matmul_peak_flops(device, dtype, args.peak_size) for name, dtype in dtypes.items()
    }
    ours = bench_ours(aug, batch, args, tmp)
    reference = bench_reference(aug, batch, args, train.images, ours.pop("device"))
    return {
        "case": aug,
        "batch": batch,
        "ours_precision": ours_precision,
        "ours_img_per_s": ours["img_per_s"],
        "reference_img_per_s": reference["img_per_s"],
        "ratio": ours["img_per_s"] / reference["img_per_s"],
        "ours_peak_mem_mb": ours["peak_mem_mb"],
        "reference_peak_mem_mb": reference["peak_mem_mb"],
        "ours_step_share": ours["share"],
        **_roofline(ours, reference, peak, ours_precision),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _arguments(argv)
    gpu = torch.cuda.is_available() and args.device != "cpu"
    args.steps = args.steps or (20 if gpu else 3)
    args.workers = args.workers or available_cores()
    batches = [int(b) for b in (args.batches or ("256" if gpu else "64,256")).split(",")]

    # the images ours trains on (Pretrainer picks the same subset from train_images), loaded once
    # for every case
    train = training_images(
        pretrain_config("paper", train_images=args.images, batch_size=min(batches))
    )
    device = pick_device(args.device)
    ours_precision = precision_name(use_bf16(args.amp, device))
    # the peak of each pipeline's own precision: a bf16 peak is not measured where bf16 is emulated
    # (minutes)
    dtypes = {
        "float32": torch.float32,
        **({"bf16": torch.bfloat16} if ours_precision == "bf16" else {}),
    }
    tic = time.perf_counter()
    cases = []
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for aug in args.augs.split(","):
            for batch in batches:
                cases.append(_case(aug, batch, args, train, device, dtypes, Path(tmp)))
                print(_row(cases[-1]), flush=True)
    report = {
        **run_facts(torch.device("cuda" if gpu else "cpu"), args.workers),
        "ours_compiled": not args.eager,
        "ours_precision": ours_precision,
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "float32_peak_uses_tf32": gpu and _convolutions_use_tf32(),
        "cases": cases,
        "seconds": time.perf_counter() - tic,
    }
    if args.json:
        write_json(args.json, report)
    return report


def _roofline(
    ours: dict[str, Any], reference: dict[str, Any], peak: dict[str, float], precision: str
) -> dict[str, Any]:
    """Achieved compute of both pipelines (same model, same views: same FLOPs per image) against the
    matmul peaks.

    Ours is set against the peak of its own ``precision`` (bf16 or float32), the float32 reference
    against float32's.
    """
    ours_rate, reference_rate = (run["img_per_s"] * ours["flops"] for run in (ours, reference))
    return {
        "matmul_peak_gflop_per_s": {dtype: flops / 1e9 for dtype, flops in peak.items()},
        "gflop_per_image": ours["flops"] / 1e9,
        "ours_gflop_per_s": ours_rate / 1e9,
        "reference_gflop_per_s": reference_rate / 1e9,
        "ours_share_of_peak": ours_rate / peak[precision],
        "reference_share_of_fp32_peak": reference_rate / peak["float32"],
        "ratio_ceiling": peak[precision] / reference_rate,
    }


if __name__ == "__main__":
    main()

"""``python -m swavnb.bench``: pretraining throughput of swavnb vs the standard pipeline, one process, one run.

Cases: ``flip`` (2 x 32 px views) and ``swav`` multi-crop, each at the given batch
sizes. *ours* is ``Pretrainer.train_step`` exactly as ``pretrain`` runs it (dataset
resident on the device, batched on-device augmentation, bf16 autocast,
channels_last); *reference* is torchvision PIL transforms in a ``DataLoader`` with
workers, float32, with the same model and ``swav_loss``. Throughput counts each
image once whatever its number of views; the median of several timed repetitions
after warm-up is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from swavnb.config import pretrain_config
from swavnb.data import epoch_permutation, label_subset, load_cifar100
from swavnb.distributed import device_name
from swavnb.loss import swav_loss
from swavnb.model import SwAVModel
from swavnb.reference import reference_loader
from swavnb.train import Pretrainer, make_augmentation


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory of the case, or the process's peak RSS on the CPU (monotone over cases)."""
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


def bench_ours(aug: str, batch: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config = pretrain_config("paper", aug=aug, batch_size=batch, device=args.device, train_images=args.images,
                             compile=args.compile)
    trainer = Pretrainer(config, out / f"ours-{aug}-{batch}", progress=False)
    device = trainer.device
    _reset_memory(device)
    order = epoch_permutation(len(trainer.images), config.seed, 0, device)
    counter = iter(range(10**9))

    def step() -> None:
        i = next(counter) % trainer.per_epoch
        trainer.train_step(order[i * batch : (i + 1) * batch], i)

    times = _timed(step, args.steps, args.warmup, args.repeats, device)
    phases: dict[str, float] = {}
    clock = [0.0]

    def phase_done(phase: str) -> None:  # a device sync between phases, so each is timed on its own
        _sync(device)
        now = time.perf_counter()
        phases[phase] = phases.get(phase, 0.0) + now - clock[0]
        clock[0] = now

    for i in range(args.steps):
        _sync(device)
        clock[0] = time.perf_counter()
        step = i % trainer.per_epoch
        trainer.train_step(order[step * batch : (step + 1) * batch], step, phase_done)
    total = sum(phases.values())
    return {"img_per_s": batch * args.steps / statistics.median(times), "peak_mem_mb": _peak_memory_mb(device),
            "share": {name: value / total for name, value in phases.items()}, "device": device}


def bench_reference(aug: str, batch: int, args: argparse.Namespace, images: torch.Tensor,
                    device: torch.device) -> dict[str, Any]:
    config = pretrain_config("paper", aug=aug, batch_size=batch)
    augment = make_augmentation(config)
    torch.manual_seed(0)
    model = SwAVModel(config.feat_dim, config.n_prototypes, config.head, config.hidden_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = reference_loader(images, aug, batch, args.workers, multicrop=augment.multicrop)
    _reset_memory(device)
    batches = iter(())

    def step() -> None:
        nonlocal batches
        views = next(batches, None)
        if views is None:
            batches = iter(loader)
            views = next(batches)
        model.normalize_prototypes()
        _, scores = model([v.to(device, non_blocking=True) for v in views])
        loss = swav_loss(scores, augment.n_assign)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = _timed(step, args.steps, args.warmup, args.repeats, device)
    return {"img_per_s": batch * args.steps / statistics.median(times), "peak_mem_mb": _peak_memory_mb(device)}


HEADER = (f"{'case':<6}{'batch':>6}{'ours img/s':>12}{'ref img/s':>11}{'ratio':>7}"
          f"{'augment':>9}{'forward':>9}{'sk+loss':>9}{'bwd+opt':>9}")


def _row(case: dict[str, Any]) -> str:
    share = case["ours_step_share"]
    return (f"{case['case']:<6}{case['batch']:>6}{case['ours_img_per_s']:>12.1f}{case['reference_img_per_s']:>11.1f}"
            f"{case['ratio']:>6.2f}x" + "".join(f"{100 * share[k]:>8.1f}%" for k in share))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m swavnb.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--augs", default="flip,swav", help="cases, comma-separated")
    parser.add_argument("--batches", default="", help="batch sizes (default: 256 on GPU, 64 on CPU)")
    parser.add_argument("--steps", type=int, default=0, help="steps per timed repetition (default 20 GPU / 3 CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="reference DataLoader workers (default: CPU count)")
    parser.add_argument("--images", type=int, default=0, help="training images held (0 = all 50,000)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model too")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and args.device != "cpu"
    args.steps = args.steps or (20 if gpu else 3)
    args.workers = args.workers or len(os.sched_getaffinity(0))
    batches = [int(b) for b in (args.batches or ("256" if gpu else "64")).split(",")]

    train = load_cifar100("train")
    if args.images:
        train = train.subset(label_subset(train.fine, args.images / len(train)))
    cases = []
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for aug in args.augs.split(","):
            for batch in batches:
                ours = bench_ours(aug, batch, args, Path(tmp))
                reference = bench_reference(aug, batch, args, train.images, ours.pop("device"))
                case = {"case": aug, "batch": batch, "ours_img_per_s": ours["img_per_s"],
                        "reference_img_per_s": reference["img_per_s"],
                        "ratio": ours["img_per_s"] / reference["img_per_s"],
                        "ours_peak_mem_mb": ours["peak_mem_mb"], "reference_peak_mem_mb": reference["peak_mem_mb"],
                        "ours_step_share": ours["share"]}
                cases.append(case)
                print(_row(case), flush=True)
    report = {
        "device": device_name(torch.device("cuda" if gpu else "cpu")),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "reference_workers": args.workers,
        "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup, "cases": cases,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()

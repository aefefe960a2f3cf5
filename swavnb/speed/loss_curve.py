"""``python -m swavnb.loss_curve``: does the fast training path train like the standard one?

The same preset, seed and initial weights train three times: *ours* (``Pretrainer``: dataset on
the device, batched on-device augmentation, the precision ``amp=auto`` picks), the *reference*
(float32, torchvision PIL transforms in a ``DataLoader``), and *ours* again with seed + 1, which
measures how far an honest rerun moves the curve.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from swavnb.base.device import available_cores, device_kind, pick_device, run_facts
from swavnb.base.files import write_json
from swavnb.data.cifar import batch_indices
from swavnb.pretraining.config import PretrainConfig, pretrain_config
from swavnb.pretraining.recipe import training_images
from swavnb.pretraining.train import Pretrainer
from swavnb.speed.reference import ReferenceTrainer


def ours_losses(config: PretrainConfig, out: Path) -> tuple[list[float], dict[str, Any]]:
    """Per-step losses of ``Pretrainer.train_step`` over ``config.epochs``, and the model's initial
    weights."""
    trainer = Pretrainer(config, out, progress=False)
    init = copy.deepcopy(trainer.model.state_dict())
    losses = []
    for epoch in range(config.epochs):
        for step, index in enumerate(
            batch_indices(
                len(trainer.images), config.batch_size, config.seed, epoch, trainer.device
            )
        ):
            losses.append(trainer.scheduled_step(epoch, step, index)[0].item())
    return losses, init


def window_means(losses: list[float], n_windows: int) -> list[float]:
    return [float(chunk.mean()) for chunk in torch.tensor(losses).chunk(n_windows)]


def compare(config: PretrainConfig, workers: int, windows: int, out: Path) -> dict[str, Any]:
    """Does the fast path train like the standard one? Same preset, seed and initial weights, three
    runs.

    ``ours`` and ``reference`` (float32, torchvision PIL loader) start from identical
    weights with the same seed; ``ours, seed + 1`` measures how far an honest rerun
    moves the curve. The fast path passes when its mean gap to the reference over
    ``windows`` equal windows of steps is no larger than the gap between the
    two seeds.
    """
    ours, init = ours_losses(config, out / "ours")
    rerun, _ = ours_losses(dataclasses.replace(config, seed=config.seed + 1), out / "rerun")
    reference = ReferenceTrainer(
        config,
        training_images(config).images,
        workers,
        pick_device(config.device),
        init_state=init,
    )
    reference_losses = [reference.train_step(step).item() for step in range(len(ours))]
    return {
        "preset": config.preset,
        "aug": config.aug,
        "seed": config.seed,
        "epochs": config.epochs,
        "batch": config.batch_size,
        "steps": len(ours),
        "curves": {
            "ours": ours,
            "reference": reference_losses,
            f"ours, seed {config.seed + 1}": rerun,
        },
        **verdict(ours, reference_losses, rerun, windows),
    }


def verdict(
    ours: list[float], reference: list[float], rerun: list[float], n_windows: int
) -> dict[str, Any]:
    """Window means of the three curves, ours' mean gap to the reference and to the rerun over
    ``n_windows`` equal windows of steps, and whether the first is no larger than the second."""
    windows = {
        name: window_means(curve, n_windows)
        for name, curve in (("ours", ours), ("reference", reference), ("rerun", rerun))
    }
    path_gap = [abs(a - b) for a, b in zip(windows["ours"], windows["reference"], strict=True)]
    seed_gap = [abs(a - b) for a, b in zip(windows["ours"], windows["rerun"], strict=True)]
    mean_path_gap, mean_seed_gap = sum(path_gap) / len(path_gap), sum(seed_gap) / len(seed_gap)
    return {
        "window_means": windows,
        "mean_path_gap": mean_path_gap,
        "mean_seed_gap": mean_seed_gap,
        "within_noise": mean_path_gap <= mean_seed_gap,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m swavnb.loss_curve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", default="quick", help="pretraining preset of the compared runs")
    parser.add_argument("--aug", default="flip", help="view strategy of the compared runs")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each compared run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--workers", type=int, default=0, help="reference DataLoader workers (default: CPU count)"
    )
    parser.add_argument(
        "--windows", type=int, default=6, help="equal step windows whose mean losses are compared"
    )
    parser.add_argument("--json", default="", help="write the comparison (JSON) here")
    parser.add_argument(
        "--figures",
        default="",
        help="also save the curves as FIGURES/loss-curve-<device kind>.png/svg (e.g. cpu-avx2)",
    )
    args = parser.parse_args(argv)
    config = pretrain_config(
        args.preset, aug=args.aug, epochs=args.epochs, device=args.device, seed=args.seed
    )
    device = pick_device(config.device)
    workers = args.workers or available_cores()
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = compare(config, workers, args.windows, Path(tmp))
    report.update(run_facts(device, workers), seconds=time.perf_counter() - tic)
    print(
        f"{report['preset']}/{report['aug']}, {report['steps']} steps of batch {report['batch']}, "
        f"{args.windows} windows of mean loss:"
    )
    for name, means in report["window_means"].items():
        print(f"  {name:<10}" + "".join(f"{m:8.3f}" for m in means))
    verdict = "within" if report["within_noise"] else "OUTSIDE"
    print(
        f"mean gap ours-reference {report['mean_path_gap']:.4f} "
        f"vs seed-to-seed {report['mean_seed_gap']:.4f}: "
        f"{verdict} noise ({report['seconds']:.0f} s on {report['device']})"
    )
    if args.json:
        write_json(args.json, report)
    if args.figures:
        from swavnb.study.plots import save_figure, step_loss_curves

        title = f"{report['preset']}/{report['aug']}: fast path vs reference ({report['device']})"
        save_figure(
            step_loss_curves(report["curves"], title=title),
            args.figures,
            f"loss-curve-{device_kind(device)}",
        )
    return report


if __name__ == "__main__":
    main()

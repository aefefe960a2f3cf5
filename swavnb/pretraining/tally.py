"""What an epoch of pretraining accumulates (loss, steps, seconds, prototype usage) and the
record it leaves in ``metrics.json``.

A mid-epoch checkpoint saves the tally so far, summed over the ranks, so a resumed epoch reports
what an uninterrupted one does: rank 0 resumes with the sums, the other ranks from zero.
"""

from __future__ import annotations

from typing import Any

import torch

from swavnb.base.distributed import Runtime
from swavnb.method.usage import usage_summary

Tally = dict[
    str, Any
]  # loss (float64 sum), steps, seconds, usage (K counts): as checkpoints hold it


def new_tally(n_prototypes: int, device: torch.device) -> Tally:
    return {
        "loss": torch.zeros((), device=device, dtype=torch.float64),
        "steps": 0,
        "seconds": 0.0,
        "usage": torch.zeros(n_prototypes, dtype=torch.int64, device=device),
    }


def resumed_tally(saved: Tally, runtime: Runtime) -> Tally:
    """A saved tally on this rank's device; only rank 0 carries its sums."""
    tally = {k: v.to(runtime.device) if torch.is_tensor(v) else v for k, v in saved.items()}
    if not runtime.is_main:
        tally["loss"].zero_()
        tally["usage"].zero_()
    return tally


def saved_tally(tally: Tally, runtime: Runtime) -> Tally:
    """The tally with loss and usage summed over the ranks, on the CPU, as a checkpoint keeps it."""
    summed = dict(tally)
    if runtime.distributed:
        for key in ("loss", "usage"):
            summed[key] = tally[key].clone()
            torch.distributed.all_reduce(summed[key])
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in summed.items()}


def epoch_record(
    tally: Tally, runtime: Runtime, epoch: int, lr: float, batch_size: int, precision: str
) -> dict[str, Any]:
    """The finished epoch's line in ``metrics.json`` (every rank's steps summed)."""
    if runtime.distributed:
        torch.distributed.all_reduce(tally["loss"])
        torch.distributed.all_reduce(tally["usage"])
        tally["loss"] /= runtime.world_size
    return {
        "epoch": epoch,
        "loss": tally["loss"].item() / tally["steps"],
        "lr": lr,
        "img_per_s": tally["steps"] * batch_size / tally["seconds"],
        "seconds": tally["seconds"],
        "precision": precision,
        **usage_summary(tally["usage"]),
    }

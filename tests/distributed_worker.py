"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2`` (gloo, CPU).

Checks that (1) Sinkhorn on each rank's shard equals the single-process codes of the
concatenated batch and (2) after several DDP pretraining steps both ranks hold the
same weights. Rank 0 writes the measured differences to ``OUT/report.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from swavnb.config import pretrain_config
from swavnb.sinkhorn import sinkhorn
from swavnb.train import Pretrainer


def reference_codes(scores: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """Eq. 3-4 on one process, in float64 (the SwAV authors' loop, transposed to (B, K))."""
    q = torch.exp(scores.double() / epsilon)
    q /= q.sum()
    batch, prototypes = q.shape
    for _ in range(n_iters):
        q /= q.sum(dim=0, keepdim=True) * prototypes
        q /= q.sum(dim=1, keepdim=True) * batch
    return (q * batch).float()


def main(out: Path) -> None:
    config = pretrain_config(
        "smoke",
        aug="flip",
        device="cpu",
        train_images=64,
        batch_size=16,
        epochs=1,
        n_prototypes=20,
        feat_dim=8,
        queue_length=32,
        image_size=8,
        local_size=4,
    )
    trainer = Pretrainer(
        config, out / "run", progress=False
    )  # joins the gloo group torchrun describes
    rank, world = dist.get_rank(), dist.get_world_size()

    full = (
        torch.rand(2 * 6, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )  # same on every rank
    shard = full.chunk(world)[rank]
    codes = sinkhorn(shard, epsilon=0.05, n_iters=3)
    gathered = [torch.empty_like(codes) for _ in range(world)]
    dist.all_gather(gathered, codes)
    sinkhorn_diff = (torch.cat(gathered) - reference_codes(full, 0.05, 3)).abs().max().item()

    before = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    trainer.fit()
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    others = [torch.empty_like(params) for _ in range(world)]
    dist.all_gather(others, params)
    weight_diff = max((other - params).abs().max().item() for other in others)
    if rank == 0:
        (out / "report.json").write_text(
            json.dumps(
                {
                    "world_size": world,
                    "sinkhorn_max_abs_diff": sinkhorn_diff,
                    "weight_max_abs_diff": weight_diff,
                    "steps": trainer.per_epoch,
                    "weight_change": (params - before).abs().max().item(),
                }
            )
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

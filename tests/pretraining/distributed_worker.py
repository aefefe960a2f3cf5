"""Run by tests/pretraining/test_distributed.py as ``torchrun --nproc_per_node=2
distributed_worker.py OUT``
(gloo, CPU).

``OUT/broken`` holds the run tests/pretraining/sigkill_pretrain.py killed mid-epoch (queue and
prototype
freezing on). This script resumes it to the end and trains
``OUT/straight`` uninterrupted (the test compares their checkpoints); checks Sinkhorn on each rank's
shard against the codes of the concatenated batch; trains ``OUT/shards`` with views that depend on
the image alone and BatchNorm on its running statistics, recording each step's first-view scores
and every rank's final queue (the test replays the global batches in one process). Rank 0 writes
``OUT/report.json`` and ``OUT/shards.pt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from sigkill_pretrain import KILLED_RUN
from torch import nn

from swavnb.method.augment import eval_transform
from swavnb.method.sinkhorn import sinkhorn
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.folder import saved_state
from swavnb.pretraining.train import Pretrainer

# SGD: Adam's first steps move a weight by +-lr whatever its gradient, so float noise would flip
# whole steps; the queue is full from step 2 on and joins Sinkhorn at once; float32 on every CPU:
# bf16 autocast (amp=auto on AVX512_BF16 / AMX) rounds 8- and 16-image batches apart by ~4e-3
SHARDED = dict(
    device="cpu",
    amp="false",
    train_images=64,
    batch_size=16,
    epochs=1,
    n_prototypes=20,
    feat_dim=8,
    image_size=8,
    local_size=4,
    queue_length=32,
    optimizer="sgd",
    lr=0.05,
)


def per_sample_network(trainer: Pretrainer) -> None:
    """Make a sample's scores depend on that sample alone, so 2 ranks and one process over the same
    global batch compute the same thing: views are the image and its mirror (no random draws, so
    no generator per rank), and BatchNorm normalises with its running statistics (per-rank batch
    statistics differ from the global batch's; SyncBatchNorm needs a GPU)."""

    def make_views(index: torch.Tensor) -> list[torch.Tensor]:
        x = eval_transform(trainer.images[index])  # (B, 3, S, S)
        return [x, x.flip(-1)]

    trainer.make_views = make_views
    for module in trainer.model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = lambda mode=True, module=module: module  # fit's model.train() skips it


def record_scores(trainer: Pretrainer) -> list[torch.Tensor]:
    """Each step's first-view scores (B_rank, K), appended as the trainer runs."""
    scores, train_step = [], trainer.train_step

    def recording(index, global_step, *args, **kwargs):
        loss, first = train_step(index, global_step, *args, **kwargs)
        scores.append(first.clone())
        return loss, first

    trainer.train_step = recording
    return scores


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


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
    # no more mid-epoch checkpoints (writing them changes nothing else): fewer files to write
    config = pretrain_config("smoke", aug="flip", **{**KILLED_RUN, "checkpoint_every_steps": 0})
    # joins torchrun's gloo group; resumes the killed run from its checkpoint, as pretrain() does
    resumed = Pretrainer(config, out / "broken", False, saved_state(out / "broken"))
    rank, world = dist.get_rank(), dist.get_world_size()
    resumed_from = (resumed.epoch, resumed.start_step)
    resumed.fit()
    Pretrainer(config, out / "straight", progress=False).fit()

    full = torch.rand(2 * 6, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1  # every rank
    codes = sinkhorn(full.chunk(world)[rank], epsilon=0.05, n_iters=3)
    sinkhorn_diff = (torch.cat(_gather(codes)) - reference_codes(full, 0.05, 3)).abs().max().item()

    trainer = Pretrainer(pretrain_config("smoke", aug="flip", **SHARDED), out / "shards", False)
    per_sample_network(trainer)
    scores = record_scores(trainer)
    before = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    trainer.fit()
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    weight_diff = max((other - params).abs().max().item() for other in _gather(params))
    shards = {
        "scores": [torch.cat(_gather(step)) for step in scores],  # (B, K) per step, rank order
        "queue": torch.cat(_gather(trainer.queue.embeddings), dim=1),  # (n_assign, queue_length, D)
    }
    if rank == 0:
        torch.save(shards, out / "shards.pt")
        report = {
            "world_size": world,
            "resumed_from": resumed_from,
            "sinkhorn_max_abs_diff": sinkhorn_diff,
            "rank_batch": len(scores[0]),
            "weight_max_abs_diff": weight_diff,
            "weight_change": (params - before).abs().max().item(),
        }
        (out / "report.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""``python tests/pretraining/sigkill_pretrain.py STEP ARGS...``: ``python -m swavnb.pretrain
ARGS...`` that
SIGKILLs itself at the start of global step STEP (every rank, under torchrun).

The resume tests kill a run here rather than after a delay, so the kill lands where they need it
(mid-epoch, after a checkpoint and some lost work) on any machine.
"""

from __future__ import annotations

import os
import signal
import sys

from swavnb import pretrain
from swavnb.base import distributed
from swavnb.pretraining.train import Pretrainer

# 100 images (64 requested, at least one per class), batch 16: 6 steps per epoch. Killed in epoch 2
# one step after its mid-epoch checkpoint (step 3), with the queue (2 batches) full and in use and
# the prototypes frozen until step 10, after the resume point
KILLED_RUN = dict(
    device="cpu",
    train_images=64,
    batch_size=16,
    epochs=2,
    n_prototypes=20,
    feat_dim=8,
    image_size=8,
    local_size=4,
    queue_length=32,
    queue_start_epoch=1,
    freeze_prototypes_epochs=1.75,
    checkpoint_every_steps=3,
)
KILL_STEP = 10


def pretrain_args(out: os.PathLike, fields: dict | None = None) -> list[str]:
    """The command-line arguments of a smoke-preset ``flip`` run into ``out`` with ``fields``
    (default :data:`KILLED_RUN`)."""
    args = ["--preset", "smoke", "--aug", "flip", "--out", str(out), "--no-progress"]
    for key, value in (KILLED_RUN if fields is None else fields).items():
        args += [f"--{key}", str(value)]
    return args


def main(kill_step: int, argv: list[str]) -> None:
    train_step = Pretrainer.train_step

    def dying(self, index, global_step, *args, **kwargs):
        if global_step == kill_step:
            distributed.barrier()  # rank 0's last checkpoint is on disk before any rank dies
            os.kill(os.getpid(), signal.SIGKILL)
        return train_step(self, index, global_step, *args, **kwargs)

    Pretrainer.train_step = dying
    pretrain.main(argv)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])

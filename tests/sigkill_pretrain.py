"""``python tests/sigkill_pretrain.py STEP ARGS...``: ``python -m swavnb.pretrain ARGS...`` that
SIGKILLs itself at the start of global step STEP (every rank, under torchrun).

The resume tests kill a run here rather than after a delay, so the kill lands where they need it
(mid-epoch, after a checkpoint and some lost work) on any machine.
"""

from __future__ import annotations

import os
import signal
import sys

from swavnb import distributed, pretrain
from swavnb.train import Pretrainer


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

"""SwAV's queue: the embeddings of the last batches, newest first, that join Sinkhorn once the
queue is full, so equipartition spans more samples than one small batch.

Under torchrun each rank keeps its share of the global queue (``queue_length / world_size`` rows);
a checkpoint holds them side by side, in rank order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from swavnb.base.distributed import Runtime


class EmbeddingQueue:
    """This rank's queue: (n_assign, rows, D) embeddings, one block of rows per view that is
    assigned codes."""

    def __init__(self, n_assign: int, rows: int, dim: int, device: torch.device) -> None:
        self.embeddings = torch.zeros(n_assign, rows, dim, device=device)
        self.pushes = 0  # batches pushed so far: the queue is full once they fill its rows

    def scores(self, prototypes: torch.Tensor, batch: int) -> list[torch.Tensor] | None:
        """The queued embeddings' scores against ``prototypes`` (K, D), one (rows, K) per view,
        once ``batch``-sized pushes have filled the queue; None before."""
        if self.pushes * batch < self.embeddings.shape[1]:
            return None
        with torch.no_grad():
            return [F.linear(view, prototypes) for view in self.embeddings]

    def push(self, embeddings: list[torch.Tensor]) -> None:
        """Shift the queue by one batch and put the batch's embeddings (one per view) first."""
        with torch.no_grad():
            batch = len(embeddings[0])
            self.embeddings[:, batch:] = self.embeddings[:, :-batch].clone()
            self.embeddings[:, :batch] = torch.stack(
                [e.detach() for e in embeddings[: len(self.embeddings)]]
            )
        self.pushes += 1

    def gathered(self, runtime: Runtime) -> torch.Tensor:
        """Every rank's queue side by side on the CPU: (n_assign, queue_length, D)."""
        if not runtime.distributed:
            return self.embeddings.cpu()
        parts = [torch.empty_like(self.embeddings) for _ in range(runtime.world_size)]
        torch.distributed.all_gather(parts, self.embeddings)
        return torch.cat(parts, dim=1).cpu()

    def load(self, saved: torch.Tensor, pushes: int, runtime: Runtime, source: str) -> None:
        """This rank's rows of a queue saved by :meth:`gathered`.

        Raises:
            ValueError: ``saved`` cannot be shared by this run's ranks; ``source`` names it.
        """
        rows, world = self.embeddings.shape[1], runtime.world_size
        if saved.shape[1] != rows * world:
            raise ValueError(
                f"'{source}' holds a queue of {saved.shape[1]} rows, which {world} "
                f"processes cannot share as {rows} each; resume with as many processes as it ran"
            )
        self.embeddings.copy_(saved[:, runtime.rank * rows : (runtime.rank + 1) * rows])
        self.pushes = pushes

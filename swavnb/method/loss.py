"""SwAV's swapped-prediction loss (seed eq. 12), generalised to multi-crop."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from swavnb.method.sinkhorn import sinkhorn


def swav_loss(
    scores: Sequence[torch.Tensor],
    n_assign: int = 2,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    n_iters: int = 3,
    queue_scores: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Predict each view's cluster code from every other view of the same images.

    For each of the first ``n_assign`` crops, codes ``q`` come from Sinkhorn on that
    crop's scores (the crop's queue rows, if given, join Sinkhorn and are dropped
    afterwards). Every other crop ``v`` is asked to predict ``q`` through
    ``softmax(scores_v / temperature)``; the cross-entropies are summed over ``v``,
    divided by (number of crops - 1) and averaged over the ``n_assign`` crops. With
    two crops this is exactly the reference report's eq. 12. Codes carry no gradient.

    Args:
        scores: one (B, K) tensor per crop, crop-to-prototype similarities; the
            first ``n_assign`` are the (global) crops whose codes are computed.
        n_assign: how many leading crops get codes (2 in SwAV).
        temperature: softmax temperature of the predictions.
        epsilon: Sinkhorn regularisation.
        n_iters: Sinkhorn rounds.
        queue_scores: optional, one entry per assigned crop: (Q, K) scores of that
            crop's queued embeddings from earlier batches, or None.

    Returns:
        Scalar loss, averaged over the batch.

    Reference:
        Caron et al., NeurIPS 2020, eq. (1)-(2) and sec. 3.2 (multi-crop).
    """
    n_crops = len(scores)
    if n_crops < 2:
        raise ValueError(f"swav_loss needs at least 2 crops of the same images, got {n_crops}")
    if not 1 <= n_assign <= n_crops:
        raise ValueError(
            f"n_assign must be in [1, {n_crops}] (the number of crops), got {n_assign}"
        )
    batch, n_prototypes = scores[0].shape
    for crop, s in enumerate(scores):
        if s.shape != (batch, n_prototypes):
            raise ValueError(
                f"all crops must have scores of shape {(batch, n_prototypes)}, "
                f"crop {crop} has {tuple(s.shape)}"
            )
    if queue_scores is not None and len(queue_scores) != n_assign:
        raise ValueError(
            f"queue_scores needs one entry per assigned crop ({n_assign}), got {len(queue_scores)}"
        )

    log_probs = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]  # each (B, K)
    total = scores[0].new_zeros((), dtype=torch.float32)
    for crop in range(n_assign):
        with torch.no_grad():
            assign_scores = scores[crop].detach()
            queued = None if queue_scores is None else queue_scores[crop]
            if queued is not None:
                assign_scores = torch.cat([assign_scores, queued.detach().to(assign_scores.dtype)])
            codes = sinkhorn(assign_scores, epsilon=epsilon, n_iters=n_iters)[:batch]  # (B, K)
        cross_entropy = sum(
            -(codes * log_probs[other]).sum(dim=1).mean()
            for other in range(n_crops)
            if other != crop
        )
        total = total + cross_entropy / (n_crops - 1)
    return total / n_assign

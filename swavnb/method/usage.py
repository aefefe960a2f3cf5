"""How evenly images use the prototypes: per-prototype counts of nearest-prototype hits and their
entropy, the sign of collapse that pretraining logs every epoch and the probes draw."""

from __future__ import annotations

import math

import torch


def prototype_usage(scores: torch.Tensor) -> torch.Tensor:
    """How many images have each prototype as their nearest: (K,) counts.

    A healthy SwAV model spreads images over many prototypes; a collapsed one
    piles them onto a few.

    Args:
        scores: (N, K) image-prototype scores (:func:`prototype_scores`), computed
            once and shared with the cluster scores and the gallery.
    """
    if scores.dim() != 2:
        raise ValueError(
            f"scores must be (N, K) image-prototype scores, got shape {tuple(scores.shape)}"
        )
    nearest = scores.argmax(dim=1)  # (N,)
    # a scatter, not bincount: on a GPU bincount reads its size back to the host, a sync per step
    counts = torch.zeros(scores.shape[1], dtype=torch.int64, device=scores.device)
    return counts.scatter_add_(0, nearest, torch.ones_like(nearest))


def usage_summary(counts: torch.Tensor) -> dict[str, float]:
    """Assignment diagnostics from per-prototype counts of nearest-prototype hits.

    A collapsing run sends everything to a handful of prototypes: the entropy of
    the counts (normalised by log K, so 1 = uniform) falls towards 0 and the share
    of prototypes used drops.
    """
    p = counts.double().cpu() / counts.sum().clamp(min=1).item()
    nonzero = p[p > 0]
    entropy = -(nonzero * nonzero.log()).sum() / math.log(len(counts))
    return {"usage_entropy": float(entropy), "prototypes_used": float((counts > 0).double().mean())}

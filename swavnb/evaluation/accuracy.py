"""Accuracy metrics of the study: top-k and per-superclass."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Percentage of rows whose label is among the ``k`` highest scores, for each k.

    Args:
        logits: (N, C) class scores.
        labels: (N,) true classes.

    Returns:
        {k: accuracy in percent}, like the reference report's tables.
    """
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} score rows for {labels.shape[0]} labels")
    top = logits.topk(max(ks), dim=1).indices  # (N, max k)
    hits = top == labels.view(-1, 1).to(top.device)
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def per_group_accuracy(
    predictions: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, names: Sequence[str]
) -> dict[str, float]:
    """Top-1 accuracy (percent) of fine-label predictions within each group (e.g. superclass)."""
    correct = (predictions.cpu() == labels.cpu()).float()
    groups = groups.cpu()
    return {
        name: 100.0 * correct[groups == g].mean().item()
        for g, name in enumerate(names)
        if (groups == g).any()
    }

"""Weighted k-NN on frozen backbone features: the features of clean images and the neighbours' vote.

The probes (:mod:`swavnb.evaluation.probes`) and the online k-NN of a pretraining
(:mod:`swavnb.pretraining.online_knn`) share these, so both measure the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swavnb.base.precision import autocast, use_bf16
from swavnb.method.augment import eval_transform


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    amp: str | bool = "auto",
    channels_last: bool = True,
) -> torch.Tensor:
    """Pooled backbone features of uint8 images, in eval mode, without augmentation.

    Args:
        backbone: maps (B, 3, 32, 32) normalised images to (B, D) features; its train / eval mode
            is restored afterwards.
        images: (N, 3, 32, 32) uint8, on any device.
        amp: ``auto`` (bf16 where the hardware runs it natively), or True / False to force it.

    Returns:
        (N, D) float32 features on the CPU.
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = eval_transform(images[start : start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, use_bf16(amp, device)):
            chunks.append(backbone(x).float().cpu())
    backbone.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int = 100,
    chunk: int = 1000,
) -> torch.Tensor:
    """Weighted k-NN class scores (Wu et al. 2018, as used by DINO and solo-learn).

    Neighbours are the ``k`` most cosine-similar training features; each votes for
    its class with weight ``exp(similarity / temperature)``.

    Args:
        train_features: (N, D) features of the labelled pool, on the CPU.
        train_labels: (N,) their classes.
        test_features: (Q, D) features to classify, on the CPU.

    Returns:
        (N_test, n_classes) scores; their top-k gives top-1 / top-5 predictions.
    """
    if k < 1 or k > len(train_features):
        raise ValueError(f"k must be in [1, {len(train_features)}] (training features), got {k}")
    bank = F.normalize(train_features.float(), dim=1)  # (N, D)
    scores = []
    for start in range(0, len(test_features), chunk):
        query = F.normalize(test_features[start : start + chunk].float(), dim=1)  # (Q, D)
        similarity, neighbour = (query @ bank.T).topk(k, dim=1)  # (Q, k)
        votes = torch.zeros(len(query), n_classes)
        votes.scatter_add_(1, train_labels[neighbour].cpu(), (similarity / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)

"""Frozen-feature probes: BN statistics, weighted k-NN accuracy, t-SNE, retrieval (feature
extraction and the k-NN vote: :mod:`swavnb.method.knn`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swavnb.base.precision import autocast, use_bf16
from swavnb.evaluation.accuracy import topk_accuracy
from swavnb.method.augment import eval_transform

# feature extraction and the weighted vote live in swavnb.method.knn, shared with pretraining's
# online k-NN; imported here, so swavnb.evaluation.probes.extract_features / knn_scores still work
from swavnb.method.knn import extract_features, knn_scores


@torch.no_grad()
def precise_batchnorm(
    backbone: nn.Module,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    amp: str | bool = "auto",
    channels_last: bool = True,
) -> nn.Module:
    """A copy of ``backbone`` whose BatchNorm statistics are recomputed on clean ``images``.

    Training leaves each BN layer an exponential moving average of the statistics of the
    last batches it saw: augmented views, with multi-crop a mix of global and small local
    crops (the local ones last), so eval-mode features of clean whole images get normalised
    with the statistics of another input distribution. PreciseBN replaces the average by the
    mean over clean, unaugmented images; the weights stay untouched. A random-init backbone,
    whose running statistics are the defaults (mean 0, variance 1), gets the statistics of
    the data too, so every encoder is evaluated with statistics of the same images.

    Reference: Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, section 3 (PreciseBN).

    Args:
        backbone: maps (B, 3, S, S) normalised images to features; it is not modified.
        images: (N, 3, S, S) uint8 training images (never the test images: that would leak).
        batch_size: the per-batch means and (unbiased) variances of batches of this size are
            averaged, each batch weighing the same (a shorter last batch included).
        amp: ``auto`` (bf16 where the hardware runs it natively), or True / False to force it.

    Returns:
        The recalibrated copy, in eval mode, on ``device``.
    """
    if len(images) == 0:
        raise ValueError("precise_batchnorm needs at least one image to measure statistics on")
    device = torch.device(device)
    model = copy.deepcopy(backbone).to(device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(
            "the backbone has no BatchNorm layers, so it has no statistics to recompute; "
            "use bn_stats='ema'"
        )
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = (
            None  # None = cumulative mean over batches instead of an exponential average
        )
    model.train()
    for start in range(0, len(images), batch_size):
        x = eval_transform(images[start : start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, use_bf16(amp, device)):
            model(x)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    n_classes: int = 100,
) -> dict[int, dict[str, float]]:
    """{k: {"top1": %, "top5": %}} of weighted k-NN for each k."""
    results = {}
    for k in ks:
        accuracy = topk_accuracy(
            knn_scores(train_features, train_labels, test_features, k, temperature, n_classes),
            test_labels,
        )
        results[int(k)] = {"top1": accuracy[1], "top5": accuracy[5]}
    return results


def tsne_embedding(features: torch.Tensor, seed: int = 0, perplexity: float = 30.0) -> torch.Tensor:
    """2-D t-SNE (scikit-learn) of L2-normalised features: (N, D) -> (N, 2)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(perplexity, (len(features) - 1) / 3)  # sklearn requires perplexity < N
    points = F.normalize(features.float(), dim=1).numpy()
    # one OpenMP thread: sklearn's threads sync every iteration, which on a busy CPU made 2,000
    # points 4x slower
    with threadpool_limits(1, user_api="openmp"):
        embedding = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(points)
    return torch.from_numpy(embedding)


def nearest_neighbours(query: torch.Tensor, bank: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Indices (Q, n) of the ``n`` most cosine-similar rows of ``bank`` for each query row."""
    similarity = F.normalize(query.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    return similarity.topk(n, dim=1).indices


__all__ = [
    "precise_batchnorm",
    "extract_features",
    "knn_scores",
    "knn_accuracy",
    "tsne_embedding",
    "nearest_neighbours",
]

"""Online k-NN: whether a pretraining's features learn, measured after every epoch.

The probes' weighted k-NN (:mod:`swavnb.evaluation.probes`), made small enough to run after each
epoch: a fixed, class-stratified pool of labelled training images and a fixed test subset, both
drawn from the run's seed by :func:`swavnb.data.cifar.label_subset`'s own generator (no global RNG
is touched, so the training is the same with it on or off). With the same seed the pool lies inside
the probes' pool and the test subset inside their test subset (smaller fractions of the same
per-class order). Features are the backbone's 512-d pooled features in eval mode, normalised by the
BatchNorm running averages pretraining keeps, not by the probes' recomputed (precise) statistics,
and computed without autograd.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from swavnb.data.cifar import CifarSplit, label_subset, load_cifar100
from swavnb.method.knn import extract_features, knn_scores
from swavnb.pretraining.config import PretrainConfig

# the probes' first k and temperature (FinetuneConfig.knn_k, knn_temperature)
K, TEMPERATURE = 20, 0.07
BN_STATISTICS = "pretraining's running averages (eval mode), not the probes' precise BN"


def _stratified(split: CifarSplit, images: int, seed: int) -> CifarSplit:
    """About ``images`` of ``split``, the same share of each class (at least one each)."""
    return split.subset(label_subset(split.fine, min(1.0, images / len(split)), seed))


@dataclass
class OnlineKnn:
    """A pretraining's fixed k-NN pool and test subset, at the run's resolution, on the CPU."""

    pool: CifarSplit
    test: CifarSplit

    @classmethod
    def for_run(cls, config: PretrainConfig) -> OnlineKnn | None:
        """The run's pool and test subset, or None where ``config.online_knn_pool`` is 0."""
        if not config.online_knn_pool:
            return None
        root = config.data_root or None
        pool = _stratified(load_cifar100("train", root), config.online_knn_pool, config.seed)
        test = _stratified(load_cifar100("test", root), config.online_knn_test, config.seed)
        return cls(pool.resized(config.image_size), test.resized(config.image_size))

    @property
    def k(self) -> int:
        return min(K, len(self.pool))

    def describe(self) -> dict[str, Any]:
        """What the figures are, as ``metrics.json`` records it."""
        return {
            "pool_images": len(self.pool),
            "test_images": len(self.test),
            "k": self.k,
            "temperature": TEMPERATURE,
            "features": "backbone, pooled",
            "bn_statistics": BN_STATISTICS,
        }

    def measure(
        self,
        backbone: nn.Module,
        device: torch.device,
        bf16: bool,
        channels_last: bool = True,
    ) -> dict[str, float]:
        """Weighted k-NN top-1 of ``backbone``'s features (its train / eval mode is restored).

        Args:
            backbone: maps normalised images to pooled features.
            bf16: autocast as the training does.

        Returns:
            {"online_knn_top1": percent, "online_knn_seconds": its cost in seconds}.
        """
        tic = time.perf_counter()
        options = dict(device=device, amp=bf16, channels_last=channels_last)
        pool = extract_features(backbone, self.pool.images, **options)
        test = extract_features(backbone, self.test.images, **options)
        scores = knn_scores(pool, self.pool.fine, test, self.k, TEMPERATURE)
        top1 = 100.0 * (scores.argmax(dim=1) == self.test.fine).double().mean().item()
        return {"online_knn_top1": top1, "online_knn_seconds": time.perf_counter() - tic}

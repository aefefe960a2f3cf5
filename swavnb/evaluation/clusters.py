"""How well an encoder's clusters match CIFAR-100's classes: NMI, ARI, purity, and the images behind
a prototype.

SwAV is online clustering, so besides classifiers its clusters can be scored directly, as
DeepCluster (Caron et al. 2018) and SeLa (Asano et al. 2020) do: the test images' assignments
(a) to the encoder's own prototypes and (b) to k-means on its frozen features, against the fine
labels and the 20 superclasses. (b) gives every encoder, random init included, the same footing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swavnb.base.precision import autocast, use_bf16
from swavnb.method.augment import eval_transform
from swavnb.method.usage import prototype_usage

SCORES = ("nmi", "ari", "purity")
METHODS = ("prototypes", "kmeans")
COLUMNS = ("preset", "aug", "method", "target", "clusters", "score", "value")


def purity(assignments: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose cluster's majority class is their own class (each cluster weighted by
    its size).

    Args:
        assignments: (N,) cluster index per image.
        labels: (N,) class index per image.
    """
    assignments, labels = assignments.long().cpu(), labels.long().cpu()
    if len(assignments) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need one cluster per label, got {len(assignments)} clusters for {len(labels)} labels"
        )
    table = torch.zeros(int(assignments.max()) + 1, int(labels.max()) + 1, dtype=torch.int64)
    table.index_put_(
        (assignments, labels), torch.ones_like(labels), accumulate=True
    )  # (clusters, classes)
    return float(table.max(dim=1).values.sum()) / len(labels)


def cluster_scores(assignments: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """NMI and ARI (scikit-learn's) and :func:`purity` of an assignment against the labels, each in
    [0, 1] (ARI can dip below 0 for worse-than-chance agreement)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a, y = assignments.long().cpu().numpy(), labels.long().cpu().numpy()
    return {
        "nmi": float(normalized_mutual_info_score(y, a)),
        "ari": float(adjusted_rand_score(y, a)),
        "purity": purity(assignments, labels),
    }


@torch.no_grad()
def prototype_scores(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    amp: str | bool = "auto",
) -> torch.Tensor:
    """(N, K) float32 scores of uint8 ``images`` against a SwAV model's prototypes, in eval mode, on
    the CPU."""
    device = torch.device(device)
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        with autocast(device, use_bf16(amp, device)):
            _, scores = model([eval_transform(images[start : start + batch_size].to(device))])
        chunks.append(scores[0].float().cpu())
    return torch.cat(chunks)


def kmeans_assignments(features: torch.Tensor, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """(N,) k-means clusters (scikit-learn, seeded) of L2-normalised features, as SwAV's cosine
    prototypes see them."""
    from sklearn.cluster import KMeans

    if not 1 <= n_clusters <= len(features):
        raise ValueError(
            f"n_clusters must be in [1, {len(features)}] (the number of images), got {n_clusters}"
        )
    points = F.normalize(features.float(), dim=1).numpy()
    labels = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(points)
    return torch.from_numpy(labels.astype(np.int64))


def cluster_assignments(
    features: torch.Tensor,
    scores: torch.Tensor | None = None,
    n_clusters: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Each image's cluster under every method that applies: k-means on the frozen ``features``
    for any encoder, and the nearest prototype when the encoder has prototypes.

    Args:
        features: (N, D) frozen features.
        scores: (N, K) image-prototype scores (:func:`prototype_scores`), or None for an encoder
            without prototypes (random init).
        n_clusters: k-means clusters; default K, so both methods cut the images alike. Required
            without ``scores``.

    Returns:
        {method: (N,) cluster per image}, methods from :data:`METHODS`, ``kmeans`` first.
    """
    if n_clusters is None:
        if scores is None:
            raise ValueError("without prototype scores, say how many k-means clusters: n_clusters")
        n_clusters = scores.shape[1]
    assignments = {"kmeans": kmeans_assignments(features, n_clusters, seed=seed)}
    if scores is not None:
        assignments["prototypes"] = scores.argmax(dim=1)  # (N,)
    return assignments


def score_rows(
    assignments: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    preset: str,
    aug: str,
    n_clusters: int,
) -> list[dict[str, Any]]:
    """Tidy rows, one per (method, target, score), for ``clusters.json`` and ``clusters.csv``.

    Args:
        assignments: {method: (N,) clusters}, methods from :data:`METHODS`.
        targets: {target name: (N,) labels}, e.g. ``{"fine": ..., "superclass": ...}``.
    """
    rows = []
    for method, assigned in assignments.items():
        for target, labels in targets.items():
            for score, value in cluster_scores(assigned, labels).items():
                rows.append(
                    {
                        "preset": preset,
                        "aug": aug,
                        "method": method,
                        "target": target,
                        "clusters": n_clusters,
                        "score": score,
                        "value": round(value, 4),
                    }
                )
    return rows


def gallery(
    scores: torch.Tensor, labels: torch.Tensor, n_prototypes: int = 8, n_images: int = 8
) -> list[dict[str, Any]]:
    """The ``n_prototypes`` most-used prototypes and, for each, the ``n_images`` images scoring
    highest on it.

    Args:
        scores: (N, K) image-prototype scores (:func:`prototype_scores`).
        labels: (N,) class per image, for each row's majority class and purity.

    Returns:
        One dict per row, most used first: prototype, images (indices, best first), uses (images
        whose nearest prototype it is), majority (class among the row's images) and purity (its
        share there).
    """
    uses = prototype_usage(scores)  # (K,)
    rows = []
    for prototype in uses.argsort(descending=True, stable=True)[:n_prototypes].tolist():
        top = scores[:, prototype].topk(min(n_images, len(scores))).indices
        counts = torch.bincount(labels[top].long())
        rows.append(
            {
                "prototype": prototype,
                "images": top.tolist(),
                "uses": int(uses[prototype]),
                "majority": int(counts.argmax()),
                "purity": float(counts.max()) / len(top),
            }
        )
    return rows


def majority_names(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """Each gallery row's label: its majority class and purity, e.g. ``apple (6/8)``."""
    return [
        f"{names[row['majority']]} "
        f"({round(row['purity'] * len(row['images']))}/{len(row['images'])})"
        for row in rows
    ]

"""BN recalibration, feature extraction, k-NN, t-SNE and retrieval probes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swavnb.evaluation.probes import (
    extract_features,
    knn_accuracy,
    knn_scores,
    nearest_neighbours,
    precise_batchnorm,
    tsne_embedding,
)
from swavnb.method.augment import eval_transform
from swavnb.method.model import SwAVModel, cifar_resnet18


def _clusters(n_per_class: int, n_classes: int, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Noisy samples around fixed class centres (the same centres for every ``seed``)."""
    centres = F.normalize(
        torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(0)), dim=1
    )
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    noise_draw = torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed + 1))
    return centres[labels] + noise * noise_draw, labels


def test_knn_is_perfect_on_separated_clusters_and_chance_on_noise():
    train, train_labels = _clusters(20, 10)
    test, test_labels = _clusters(5, 10, seed=1)
    result = knn_accuracy(train, train_labels, test, test_labels, ks=(5,), n_classes=10)
    assert result[5]["top1"] == 100.0
    noise = torch.randn(200, 16)
    chance = knn_accuracy(
        noise,
        torch.randint(0, 10, (200,)),
        torch.randn(500, 16),
        torch.randint(0, 10, (500,)),
        ks=(20,),
        n_classes=10,
    )
    assert chance[20]["top1"] < 25.0


def test_knn_scores_match_the_weighted_vote_formula():
    train, labels = torch.randn(30, 4), torch.randint(0, 3, (30,))
    query = torch.randn(2, 4)
    scores = knn_scores(train, labels, query, k=5, temperature=0.5, n_classes=3)
    similarity = F.normalize(query, dim=1) @ F.normalize(train, dim=1).T
    for row in range(2):
        top = similarity[row].topk(5)
        expected = torch.zeros(3)
        for sim, idx in zip(top.values, top.indices, strict=True):
            expected[labels[idx]] += torch.exp(sim / 0.5)
        assert torch.allclose(scores[row], expected, atol=1e-5)


def test_knn_rejects_k_larger_than_the_bank():
    with pytest.raises(ValueError, match="k must be in"):
        knn_scores(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), k=10)


def test_tsne_keeps_clusters_apart_and_neighbours_are_the_nearest():
    features, labels = _clusters(10, 3)
    embedding = tsne_embedding(features, seed=0)
    assert embedding.shape == (30, 2)
    # every point's nearest other point in the plane is of its own cluster
    distance = torch.cdist(embedding, embedding).fill_diagonal_(float("inf"))
    assert torch.equal(labels[distance.argmin(dim=1)], labels)
    assert torch.equal(tsne_embedding(features, seed=0), embedding)  # reproducible from its seed
    neighbours = nearest_neighbours(features[:4], features, n=3)
    assert neighbours.shape == (4, 3)
    assert torch.equal(neighbours[:, 0], torch.arange(4))  # itself first
    assert torch.equal(labels[neighbours], labels[:4, None].expand(4, 3))  # then its cluster


def test_features_from_a_model():
    model = SwAVModel(feat_dim=8, n_prototypes=7)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    features = extract_features(model.backbone, images, batch_size=4, amp=False)
    assert features.shape == (10, 512) and features.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        expected = model.backbone(eval_transform(images))
    assert torch.allclose(
        features, expected, atol=1e-4
    )  # eval mode, no augmentation, batching irrelevant


def _stem_statistics(
    backbone: nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased variance of what the first BN layer sees."""
    with torch.no_grad():
        stem = backbone.conv1(eval_transform(images))  # (N, 64, S, S)
    return stem.mean(dim=(0, 2, 3)), stem.var(dim=(0, 2, 3))


def test_precise_batchnorm_averages_the_statistics_of_clean_batches():
    torch.manual_seed(0)
    backbone = cifar_resnet18()
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    one_batch = precise_batchnorm(backbone, images, batch_size=16, amp=False, channels_last=False)
    mean, var = _stem_statistics(backbone, images)
    assert torch.allclose(one_batch.bn1.running_mean, mean, atol=1e-5)
    assert torch.allclose(one_batch.bn1.running_var, var, rtol=1e-4)
    # equal batches count equally: the running mean is the mean over every image, the running
    # variance the mean of the two batches' variances
    two_batches = precise_batchnorm(backbone, images, batch_size=8, amp=False, channels_last=False)
    assert torch.allclose(two_batches.bn1.running_mean, mean, atol=1e-5)
    halves = [_stem_statistics(backbone, half)[1] for half in images.split(8)]
    assert torch.allclose(two_batches.bn1.running_var, (halves[0] + halves[1]) / 2, rtol=1e-4)
    assert not one_batch.training and one_batch.bn1.momentum == backbone.bn1.momentum


def test_precise_batchnorm_ignores_stale_statistics_and_leaves_the_input_alone():
    torch.manual_seed(0)
    backbone = cifar_resnet18()
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8)
    stale = cifar_resnet18()
    stale.load_state_dict(backbone.state_dict())
    for module in stale.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(
                0, 3
            )  # what a different input distribution would leave behind
            module.running_var.uniform_(0.1, 10)
    before = {k: v.clone() for k, v in stale.state_dict().items()}
    fresh_features = extract_features(
        precise_batchnorm(backbone, images, amp=False), images, amp=False
    )
    stale_features = extract_features(
        precise_batchnorm(stale, images, amp=False), images, amp=False
    )
    assert torch.allclose(fresh_features, stale_features, atol=1e-4)
    assert not torch.allclose(extract_features(stale, images, amp=False), stale_features, atol=1e-2)
    assert all(torch.equal(before[k], v) for k, v in stale.state_dict().items())


def test_precise_batchnorm_rejects_what_it_cannot_measure():
    with pytest.raises(ValueError, match="no BatchNorm layers.*bn_stats='ema'"):
        precise_batchnorm(
            nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)),
            torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        )
    with pytest.raises(ValueError, match="at least one image"):
        precise_batchnorm(cifar_resnet18(), torch.zeros(0, 3, 8, 8, dtype=torch.uint8))

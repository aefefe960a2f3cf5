"""Label-fraction evaluation: rows, modes, random-init baseline, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from swavnb.config import finetune_config, pretrain_config
from swavnb.features import (
    evaluation_data,
    frozen_features,
    knn_by_bn_stats,
    load_encoder,
)
from swavnb.finetune import finetune
from swavnb.layout import SCRATCH
from swavnb.probes import extract_features, knn_accuracy, precise_batchnorm
from swavnb.train import pretrain

TINY = dict(
    train_images=200,
    test_images=100,
    epochs=1,
    min_steps=2,
    batch_size=50,
    linear_epochs=3,
    n_evals=2,
)
ROW = {
    "preset",
    "aug",
    "mode",
    "fraction",
    "top1",
    "top5",
    "epochs",
    "seconds",
    "device",
    "precision",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    pretrain(
        pretrain_config(
            "smoke",
            aug="jitter",
            train_images=32,
            batch_size=16,
            epochs=1,
            n_prototypes=10,
            feat_dim=8,
        ),
        out,
        progress=False,
    )
    return out / "checkpoint.pt"


@pytest.mark.parametrize("mode", ["finetune", "linear"])
def test_row_for_a_pretrained_backbone(tmp_path, checkpoint, mode):
    row = finetune(
        str(checkpoint),
        0.5,
        mode,
        tmp_path / "out",
        finetune_config("smoke", **TINY),
        cache_dir=tmp_path / "cache",
    )
    assert (
        ROW <= set(row)
        and row["aug"] == "jitter"
        and row["mode"] == mode
        and row["preset"] == "smoke"
    )
    assert 0 <= row["top1"] <= row["top5"] <= 100
    assert (
        row["n_labels"] == 100 and row["test_images"] == 100
    )  # stratified: half of 2 per class, 1 per class
    assert len(row["curves"]) == 2 and len(row["per_superclass"]) == 20
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == row


def test_linear_reuses_cached_features(tmp_path, checkpoint):
    config = finetune_config("smoke", **TINY)
    first = finetune(
        str(checkpoint), 1.0, "linear", tmp_path / "a", config, cache_dir=tmp_path / "cache"
    )
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2  # train pool and test features
    second = finetune(
        str(checkpoint), 1.0, "linear", tmp_path / "b", config, cache_dir=tmp_path / "cache"
    )
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached
    assert second["top1"] == first["top1"] and second["top5"] == first["top5"]


def test_bn_settings_are_cached_apart_and_precise_statistics_come_from_the_pool(
    tmp_path, checkpoint
):
    config = finetune_config("smoke", **TINY)
    backbone, encoder = load_encoder(str(checkpoint), config.seed)
    pool, test = evaluation_data(config)
    cache, tag = tmp_path / "cache", encoder.tag
    precise = frozen_features(backbone, pool, test, torch.device("cpu"), config, cache, tag)
    ema = frozen_features(
        backbone, pool, test, torch.device("cpu"), config, cache, tag, bn_stats="ema"
    )
    assert len(list(cache.iterdir())) == 4 and not torch.allclose(precise[1], ema[1])
    assert torch.allclose(ema[1], extract_features(backbone, test.images, amp=config.amp))
    recalibrated = precise_batchnorm(
        backbone, pool.images, amp=config.amp
    )  # the pool's statistics, not the test's
    assert torch.allclose(
        precise[1], extract_features(recalibrated, test.images, amp=config.amp), atol=1e-5
    )
    row = finetune(str(checkpoint), 1.0, "linear", tmp_path / "out", config, cache_dir=cache)
    assert (
        row["bn_stats"] == "precise" and len(list(cache.iterdir())) == 4
    )  # the linear run reused them
    # another pool gives other precise statistics, so the same test images get new features, not
    # stale ones
    smaller = finetune_config("smoke", **{**TINY, "train_images": 100})
    other_pool, _ = evaluation_data(smaller)
    _, other_test = frozen_features(
        backbone, other_pool, test, torch.device("cpu"), smaller, cache, tag
    )
    assert len(list(cache.iterdir())) == 6
    recalibrated = precise_batchnorm(backbone, other_pool.images, amp=config.amp)
    assert torch.allclose(
        other_test, extract_features(recalibrated, test.images, amp=config.amp), atol=1e-5
    )


def test_knn_under_both_bn_settings_is_knn_of_each_settings_frozen_features(tmp_path, checkpoint):
    config = finetune_config("smoke", **TINY, knn_k=(5, 20))
    backbone, encoder = load_encoder(str(checkpoint), config.seed)
    pool, test = evaluation_data(config)
    cache, tag = tmp_path / "cache", encoder.tag
    knn = knn_by_bn_stats(backbone, pool, test, torch.device("cpu"), config, cache, tag)
    assert list(knn) == ["precise", "ema"] and len(list(cache.iterdir())) == 4
    for bn_stats, rows in knn.items():
        features = frozen_features(
            backbone, pool, test, torch.device("cpu"), config, cache, tag, bn_stats
        )
        expected = knn_accuracy(
            features[0],
            pool.fine,
            features[1],
            test.fine,
            ks=(5, 20),
            temperature=config.knn_temperature,
        )
        assert rows == expected
    assert knn["precise"] != knn["ema"]  # the statistics alone change the neighbours
    ema_only = finetune_config("smoke", **TINY, knn_k=(5,), bn_stats="ema")
    assert list(
        knn_by_bn_stats(backbone, pool, test, torch.device("cpu"), ema_only, cache, tag)
    ) == ["ema"]


def test_random_init_baseline_is_labelled_scratch(tmp_path):
    row = finetune("none", 0.5, "finetune", tmp_path, finetune_config("smoke", **TINY))
    assert row["aug"] == SCRATCH and row["checkpoint"] == "none"


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1])
def test_fraction_outside_unit_interval(tmp_path, fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        finetune("none", fraction, "finetune", tmp_path, finetune_config("smoke", **TINY))


def test_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="unknown mode 'probe'; choose one of finetune, linear"):
        finetune("none", 0.1, "probe", tmp_path, finetune_config("smoke", **TINY))


def test_resolution_must_match_the_checkpoint(tmp_path, checkpoint):
    with pytest.raises(
        ValueError, match="pretrained at 16 px but evaluation is at 8 px; pass --image_size 16"
    ):
        finetune(
            str(checkpoint), 0.5, "linear", tmp_path, finetune_config("smoke", **TINY, image_size=8)
        )


def test_low_resolution_evaluation_runs_at_that_size(tmp_path):
    row = finetune(
        "none", 0.5, "finetune", tmp_path, finetune_config("smoke", **TINY, image_size=8)
    )
    assert row["image_size"] == 8 and 0 <= row["top1"] <= row["top5"] <= 100

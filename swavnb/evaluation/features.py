"""Features of a backbone: load it (or a random one), the evaluation images, frozen features and
their cache, and the weighted k-NN of those features under both BN settings.

Label-fraction evaluation (:mod:`swavnb.evaluation.finetuning`), the probes notebook and the
headless study share these, so each backbone's frozen features are extracted once per BN setting.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swavnb.base.checkpoint import load_checkpoint
from swavnb.base.files import atomic_save
from swavnb.base.layout import (
    FEATURES,
    NO_CHECKPOINT,
    SCRATCH,
    encoder_folder,
    is_random_init,
    resolve,
    shown,
)
from swavnb.base.precision import precision_name, use_bf16
from swavnb.data.cifar import CifarSplit, label_subset, load_cifar100
from swavnb.evaluation.config import FinetuneConfig, check_bn_stats
from swavnb.evaluation.probes import extract_features, knn_accuracy, precise_batchnorm
from swavnb.method.model import SwAVModel, cifar_resnet18


@dataclass(frozen=True)
class Encoder:
    """The backbone an evaluation or probe runs on, as its rows and run folders name it."""

    aug: str  # its view strategy, or "scratch" for random init
    seed: int  # its pretraining seed (random init: the seed its weights were drawn with)
    run_id: str  # the pretraining run it came from: results of another run are stale
    preset: str  # the preset it was pretrained with (random init: the evaluation's)
    checkpoint: str  # as rows show it: from the project root, or "none"
    folder: Path  # where its evaluations and probes go

    @property
    def identity(self) -> dict[str, Any]:
        """Which encoder, as a run folder's manifest records it (:mod:`swavnb.base.run_guard`)."""
        return {"aug": self.aug, "preset": self.preset, "seed": self.seed}

    @property
    def tag(self) -> str:
        """Its key in the feature cache: the pretraining run, so a redone one never reads the
        features of the weights it replaced."""
        return self.run_id or f"{SCRATCH}-seed{self.seed}"


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict: the run id of a checkpoint written before runs had one."""
    digest = hashlib.sha1()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def read_encoder(
    checkpoint: str | os.PathLike | None,
    seed: int,
    preset: str = "quick",
    runs_dir: str | os.PathLike = "runs",
    state: dict[str, Any] | None = None,
) -> Encoder:
    """Which :class:`Encoder` a checkpoint (or ``none``) is, without building its network.

    Args:
        seed: the evaluation's seed; a random-init encoder is the one drawn with it.
        preset, runs_dir: where a random-init encoder's folder is (``runs/<preset>/scratch/...``).
        state: the checkpoint, when the caller has loaded it already.
    """
    if is_random_init(checkpoint):
        folder = encoder_folder(None, preset, seed, runs_dir)
        return Encoder(SCRATCH, seed, "", preset, NO_CHECKPOINT, folder)
    checkpoint = resolve(checkpoint)
    state = state if state is not None else load_checkpoint(checkpoint)
    config = state["config"]
    return Encoder(
        config["aug"],
        config["seed"],
        state.get("run_id") or weights_digest(state["model"]),
        config["preset"],
        shown(checkpoint),
        checkpoint.parent,
    )


def load_encoder(
    checkpoint: str | os.PathLike | None,
    seed: int,
    image_size: int | None = None,
    preset: str = "quick",
    runs_dir: str | os.PathLike = "runs",
) -> tuple[nn.Module, Encoder]:
    """The pretrained ResNet-18 of a checkpoint, or a random one drawn with ``seed``, and the
    :class:`Encoder` it is (:func:`read_encoder`).

    Args:
        image_size: the resolution it will be evaluated at; if given, it must be the
            checkpoint's pretraining resolution (features do not transfer across scales).
    """
    if is_random_init(checkpoint):
        torch.manual_seed(seed)
        return cifar_resnet18(), read_encoder(None, seed, preset, runs_dir)
    checkpoint = resolve(checkpoint)
    state = load_checkpoint(checkpoint)
    if not state["finished"]:
        raise ValueError(
            f"'{shown(checkpoint)}' is an unfinished pretraining run; "
            "rerun its pretrain command to finish it"
        )
    trained_at = state["config"].get("image_size", 32)
    if image_size is not None and image_size != trained_at:
        raise ValueError(
            f"'{shown(checkpoint)}' was pretrained at {trained_at} px "
            f"but evaluation is at {image_size} px; "
            f"pass --image_size {trained_at} (or the preset it was trained with)"
        )
    model = SwAVModel(**state["model_hparams"])
    model.load_state_dict(state["model"])
    return model.backbone, read_encoder(checkpoint, seed, preset, runs_dir, state)


def load_backbone(
    checkpoint: str | None, seed: int, image_size: int | None = None
) -> tuple[nn.Module, str]:
    """:func:`load_encoder`'s backbone and its row's aug label."""
    backbone, encoder = load_encoder(checkpoint, seed, image_size)
    return backbone, encoder.aug


def evaluation_data(config: FinetuneConfig) -> tuple[CifarSplit, CifarSplit]:
    """The labelled pool and the test images of a preset (stratified subsets on CPU presets)."""
    train = load_cifar100("train", config.data_root or None)
    test = load_cifar100("test", config.data_root or None)
    if config.train_images:
        train = train.subset(
            label_subset(train.fine, config.train_images / len(train), config.seed)
        )
    if config.test_images:
        test = test.subset(label_subset(test.fine, config.test_images / len(test), config.seed))
    return train.resized(config.image_size), test.resized(config.image_size)


def _cache_path(
    cache: Path | None,
    tag: str,
    split: CifarSplit,
    pool: CifarSplit,
    config: FinetuneConfig,
    bn_stats: str,
    precision: str,
) -> Path | None:
    if cache is None:
        return None
    # precise statistics come from the pool: another pool means other test features too
    signature = (
        f"{tag}|{len(split)}|{split.images.shape[-1]}px|{config.seed}"
        f"|{split.fine[:50].tolist()}|{precision}"
        f"|bn-{bn_stats}|pool-{len(pool)}-{pool.fine[:50].tolist()}"
    )
    return cache / FEATURES.format(key=hashlib.sha1(signature.encode()).hexdigest()[:12])


def _read_cache(path: Path, rows: int) -> torch.Tensor | None:
    """The features cached in ``path`` if they read back whole (``rows`` finite float rows), else
    None, said in one line: a cut-off or damaged cache is extracted again, never an error."""
    try:
        features = torch.load(path, weights_only=True)
        problem = (
            ""
            if isinstance(features, torch.Tensor)
            and features.dim() == 2
            and features.shape[0] == rows
            and features.is_floating_point()
            and bool(torch.isfinite(features).all())
            else f"not {rows} rows of finite features"
        )
    except Exception as error:  # a cut-off file fails inside torch's zip reader in many ways
        problem = type(error).__name__
    if not problem:
        return features
    print(
        f"feature cache '{shown(path)}' is damaged ({problem}): extracting again", file=sys.stderr
    )
    return None


def frozen_features(
    backbone: nn.Module,
    pool: CifarSplit,
    test: CifarSplit,
    device: torch.device,
    config: FinetuneConfig,
    cache: Path | None,
    tag: str,
    bn_stats: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-backbone features of the labelled pool and the test images, kept on disk.

    Linear evaluation of the five fractions and the probes share them, so each backbone is
    extracted once per BN setting.

    Args:
        tag: identifies the backbone (:attr:`Encoder.tag`).
        bn_stats: ``precise`` (BN statistics recomputed on the pool's clean images, see
            :func:`swavnb.evaluation.probes.precise_batchnorm`) or ``ema``; default
            ``config.bn_stats``.

    Returns:
        (N_pool, 512) and (N_test, 512) float32 features on the CPU.
    """
    bn_stats = check_bn_stats(bn_stats or config.bn_stats)
    bf16 = use_bf16(config.amp, device)
    paths = [
        _cache_path(cache, f"{tag}|{name}", split, pool, config, bn_stats, precision_name(bf16))
        for name, split in (("train", pool), ("test", test))
    ]
    if all(path is not None and path.exists() for path in paths):
        cached = [
            _read_cache(path, len(split)) for path, split in zip(paths, (pool, test), strict=True)
        ]
        if all(features is not None for features in cached):
            return cached[0], cached[1]
    options = dict(amp=bf16, channels_last=config.channels_last)
    backbone = backbone.to(device)
    if bn_stats == "precise":  # from the pool, never the test images
        backbone = precise_batchnorm(backbone, pool.images, device, **options)
    features = []
    for split, path in zip((pool, test), paths, strict=True):
        features.append(extract_features(backbone, split.images, device, **options))
        if path is not None:
            atomic_save(features[-1], path)
    return features[0], features[1]


def knn_by_bn_stats(
    backbone: nn.Module,
    pool: CifarSplit,
    test: CifarSplit,
    device: torch.device,
    config: FinetuneConfig,
    cache: Path | None,
    tag: str,
    settings: tuple[str, ...] | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """Weighted k-NN of frozen features under the preset's BN statistics and under pretraining's
    (``ema``): the effect of the statistics alone, with everything else equal.

    Args:
        settings: the BN settings to measure (default the preset's, then ``ema``).
        tag: identifies the backbone (:attr:`Encoder.tag`); features come from the cache when
            :func:`frozen_features` has extracted them already.

    Returns:
        {bn_stats: {k: {"top1": %, "top5": %}}}, the preset's setting first.
    """
    knn = {}
    # once when the preset's is ema
    for bn_stats in dict.fromkeys(settings or (config.bn_stats, "ema")):
        pool_features, test_features = frozen_features(
            backbone, pool, test, device, config, cache, tag, bn_stats
        )
        knn[bn_stats] = knn_accuracy(
            pool_features,
            pool.fine,
            test_features,
            test.fine,
            ks=config.knn_k,
            temperature=config.knn_temperature,
        )
    return knn

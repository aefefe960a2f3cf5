"""What a pretraining config builds: the training images, the network, the views, the optimiser
and the learning-rate schedule."""

from __future__ import annotations

import math
import sys

import torch

from swavnb.base.distributed import Runtime
from swavnb.data.cifar import CifarSplit, label_subset, load_cifar100
from swavnb.method.augment import Augmentation, MultiCrop
from swavnb.method.model import SwAVModel
from swavnb.pretraining.config import PretrainConfig

# which images BatchNorm's batch statistics cover, as metrics.json records it
BN_BATCH, BN_SYNCED, BN_PER_RANK = "batch", "global batch (SyncBatchNorm)", "each rank's shard"


def training_images(config: PretrainConfig) -> CifarSplit:
    """The training split a run learns from (all of it, or the preset's stratified subset), at its
    resolution."""
    train = load_cifar100("train", config.data_root or None)
    if config.train_images:
        train = train.subset(
            label_subset(train.fine, config.train_images / len(train), config.seed)
        )
    return train.resized(config.image_size)


def make_augmentation(config: PretrainConfig) -> Augmentation:
    """The run's views: its ``aug``, with multi-crop's sizes and scales."""
    crop = MultiCrop(
        global_size=config.image_size,
        n_local=config.n_local_crops,
        local_size=config.local_size,
        global_scale=(config.global_scale_min, 1.0),
        local_scale=(config.local_scale_min, config.local_scale_max),
    )
    return Augmentation(config.aug, multicrop=crop)


def batchnorm_scope(runtime: Runtime) -> str:
    """:data:`BN_SYNCED` under torchrun on CUDA, :data:`BN_PER_RANK` elsewhere under torchrun
    (torch's SyncBatchNorm refuses CPU tensors), :data:`BN_BATCH` in one process."""
    if not runtime.distributed:
        return BN_BATCH
    return BN_SYNCED if runtime.device.type == "cuda" else BN_PER_RANK


def make_model(config: PretrainConfig, runtime: Runtime) -> torch.nn.Module:
    """The SwAV network on the run's device, its BatchNorm as :func:`batchnorm_scope` says; the
    global RNG draws its initialisation."""
    model = SwAVModel(config.feat_dim, config.n_prototypes, config.head, config.hidden_dim)
    model = model.to(runtime.device)
    scope = batchnorm_scope(runtime)
    if scope == BN_SYNCED:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif scope == BN_PER_RANK and runtime.is_main:
        print(
            "BatchNorm normalises each rank's shard alone (torch's SyncBatchNorm runs on GPUs "
            "only), so this multi-process CPU run is not the one-process run",
            file=sys.stderr,
            flush=True,
        )
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(
    config: PretrainConfig, model: torch.nn.Module, fused: bool = True
) -> torch.optim.Optimizer:
    """The run's optimiser. ``fused`` Adam updates all parameters in one kernel (same maths, fewer
    memory passes); fused SGD is not used: it fails once frozen prototypes join without a momentum
    buffer."""
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
    )


def learning_rate(config: PretrainConfig, step: int, total_steps: int) -> float:
    """Linear warm-up, then constant or cosine decay, as a function of the global step."""
    per_epoch = max(1, total_steps // config.epochs)
    warmup = int(config.warmup_epochs * per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    final = config.lr * config.final_lr_ratio
    return final + 0.5 * (config.lr - final) * (1 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group at ``lr`` (the schedule's value for the step about to run)."""
    for group in optimizer.param_groups:
        group["lr"] = lr

"""Label-fraction evaluation of a pretrained (or random) backbone: fine-tuning the whole network
(the reference report's protocol) or a linear classifier on frozen features
(``python -m swavnb.finetune``)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swavnb.base import folder_lock
from swavnb.base.device import device_name, pick_device
from swavnb.base.errors import NonFiniteLossError, setting
from swavnb.base.files import write_json
from swavnb.base.layout import RESULT, SCRATCH, resolve, shown
from swavnb.base.precision import autocast, precision_name, use_bf16
from swavnb.data.cifar import CifarSplit, batch_indices, check_fraction, label_subset
from swavnb.evaluation.accuracy import per_group_accuracy, topk_accuracy
from swavnb.evaluation.config import MODES, FinetuneConfig
from swavnb.evaluation.features import Encoder, evaluation_data, frozen_features
from swavnb.evaluation.folders import open_evaluation
from swavnb.evaluation.intervals import accuracy_se
from swavnb.evaluation.probes import extract_features
from swavnb.method.augment import finetune_transform, view_seed
from swavnb.method.model import BACKBONE_DIM


def _n_steps(config: FinetuneConfig, n_labelled: int, epochs: int) -> tuple[int, int]:
    batch = min(config.batch_size, n_labelled)
    return max(config.min_steps, epochs * math.ceil(n_labelled / batch)), batch


def planned_steps(config: FinetuneConfig, fraction: float) -> tuple[int, int]:
    """(labelled images, fine-tuning steps) of one evaluation, known before any data is read: the
    pool is class-stratified (100 classes), and so is every fraction of it (at least one per class).
    """
    per_class = (config.train_images or 50_000) // 100
    n_labelled = 100 * max(1, round(fraction * per_class))
    return n_labelled, _n_steps(config, n_labelled, config.epochs)[0]


def seconds_per_step(config: FinetuneConfig, steps: int = 5, threads: int = 0) -> float:
    """Time of one fine-tuning step here, measured on random images at the preset's size, on
    ``threads`` torch threads (0: the process's own)."""
    held = torch.get_num_threads()
    torch.set_num_threads(threads or held)
    try:
        return _time_steps(config, steps)
    finally:
        torch.set_num_threads(held)


def _time_steps(config: FinetuneConfig, steps: int) -> float:
    from swavnb.method.model import cifar_resnet18

    device = pick_device(config.device)
    model = nn.Sequential(cifar_resnet18(), nn.Linear(BACKBONE_DIM, 100)).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    size, batch = config.image_size, config.batch_size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 100, (batch,), device=device)
    bf16 = use_bf16(config.amp, device)
    tic = 0.0
    for step in range(steps + 1):  # the first step warms up: not timed
        if step == 1:
            tic = time.perf_counter()
        with autocast(device, bf16):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    float(loss.detach())  # waits for the device
    return (time.perf_counter() - tic) / steps


def _eval_points(n_steps: int, n_evals: int) -> set[int]:
    return {round(n_steps * (i + 1) / n_evals) for i in range(max(1, n_evals))}


def _first_bad(first: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """``first`` (the first step whose loss was NaN or inf, -1 while none) after ``step``, kept on
    the device: a check per step would make the GPU wait for the host."""
    return torch.where((first < 0) & ~torch.isfinite(loss.detach()), step, first)


def _cosine(step: int, n_steps: int) -> float:
    """The share of its base rate a cosine schedule gives ``step`` (0-based) of ``n_steps``."""
    return 0.5 * (1 + math.cos(math.pi * step / n_steps))


def _stop_if_not_finite(
    first: torch.Tensor,
    logits: torch.Tensor,
    steps_done: int,
    per_epoch: int,
    lr_at: Callable[[int], str],
    advice: str,
) -> None:
    """Raise NonFiniteLossError when a loss so far, or the test logits, are NaN or inf: such a
    model scores at chance, and its row would pass for a result.

    Args:
        first: :func:`_first_bad`'s step (0-based), -1 when every loss was finite.
        logits: the test logits after ``steps_done`` steps.
        per_epoch: steps per epoch, to name the epoch.
        lr_at: the learning rates at a step (0-based), as the message names them.
        advice: which settings to lower.
    """
    step = int(first)
    if step < 0 and bool(torch.isfinite(logits).all()):
        return
    what = "the loss was NaN or inf" if step >= 0 else "the test logits were NaN or inf"
    step = step if step >= 0 else steps_done - 1
    raise NonFiniteLossError(
        f"{what} at epoch {step // per_epoch + 1} step {step + 1} ({lr_at(step)}); {advice}. "
        "No result was written."
    )


def _finetune_optimizer(
    model: nn.Sequential, backbone_lr: float, config: FinetuneConfig
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum: the backbone (``model[0]``) at ``backbone_lr``, the head at
    ``lr_head``; each group keeps its base rate for the cosine schedule."""
    return torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": backbone_lr, "base_lr": backbone_lr},
            {"params": model[1].parameters(), "lr": config.lr_head, "base_lr": config.lr_head},
        ],
        momentum=0.9,
        nesterov=True,
        weight_decay=config.weight_decay,
    )


def train_finetune(
    backbone: nn.Module,
    pretrained: bool,
    train: CifarSplit,
    test: CifarSplit,
    config: FinetuneConfig,
    device: torch.device,
) -> tuple[torch.Tensor, list[dict], float]:
    """Train backbone + linear head end to end (SGD, cosine); returns test logits, curves,
    epochs."""
    torch.manual_seed(config.seed)
    model = (
        nn.Sequential(backbone, nn.Linear(BACKBONE_DIM, 100))
        .to(device)
        .to(memory_format=torch.channels_last)
    )
    # a random backbone has nothing to preserve: from scratch every layer gets the head's rate
    backbone_lr = config.lr_backbone if pretrained else config.lr_head
    optimizer = _finetune_optimizer(model, backbone_lr, config)
    n_steps, batch = _n_steps(config, len(train), config.epochs)
    evals = _eval_points(n_steps, config.n_evals)
    generator = torch.Generator(device=device)  # reseeded every step, as in pretraining
    images, labels = train.images.to(device), train.fine.to(device)
    # on the device between evaluations: a .item() per step would make the GPU wait for the host
    zero = lambda: {
        "loss": torch.zeros((), dtype=torch.float64, device=device),
        "correct": torch.zeros((), dtype=torch.int64, device=device),
        "seen": 0,
    }
    curves, step, epoch, running = [], 0, 0, zero()
    bf16 = use_bf16(config.amp, device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    per_epoch = math.ceil(len(train) / batch)
    advice = (
        f"lower {setting('lr_head')} (and {setting('lr_backbone')}), or try {setting('amp')} false"
    )
    lr_at = lambda s: (
        f"lr_head {config.lr_head * _cosine(s, n_steps):.3g}, "
        f"lr_backbone {backbone_lr * _cosine(s, n_steps):.3g}"
    )
    while step < n_steps:
        for index in batch_indices(len(train), batch, config.seed, epoch, device, drop_last=False):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / n_steps))
            generator.manual_seed(view_seed(config.seed, step))
            x = finetune_transform(images[index], generator).contiguous(
                memory_format=torch.channels_last
            )
            with autocast(device, bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            first_bad = _first_bad(first_bad, loss, step)
            step += 1
            running["loss"] += loss.detach().double() * len(index)
            running["correct"] += (logits.argmax(1) == labels[index]).sum()
            running["seen"] += len(index)
            if step in evals:
                test_logits = extract_features(model, test.images, device, amp=bf16)  # (N, 100)
                _stop_if_not_finite(first_bad, test_logits, step, per_epoch, lr_at, advice)
                accuracy = topk_accuracy(test_logits, test.fine)
                curves.append(
                    {
                        "step": step,
                        "epoch": step * batch / len(train),
                        "train_loss": float(running["loss"]) / running["seen"],
                        "train_top1": 100.0 * int(running["correct"]) / running["seen"],
                        "test_top1": accuracy[1],
                        "test_top5": accuracy[5],
                    }
                )
                running = zero()
            if step == n_steps:
                break
        epoch += 1
    # the last evaluation is at the last step (_eval_points): its logits are the final model's
    return test_logits, curves, n_steps * batch / len(train)


def train_linear(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    config: FinetuneConfig,
) -> tuple[torch.Tensor, list[dict], float]:
    """Linear classifier on frozen features (Adam, cosine); returns test logits, curves, epochs."""
    torch.manual_seed(config.seed)
    mean, std = (
        train_features.mean(0),
        train_features.std(0) + 1e-6,
    )  # standardised: one lr fits every backbone
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    classifier = nn.Linear(x_train.shape[1], 100)
    optimizer = torch.optim.AdamW(
        classifier.parameters(), lr=config.linear_lr, weight_decay=config.weight_decay
    )
    n_steps, batch = _n_steps(config, len(x_train), config.linear_epochs)
    evals = _eval_points(n_steps, config.n_evals)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, n_steps)
    curves, step, epoch = [], 0, 0
    first_bad, per_epoch = torch.full((), -1, dtype=torch.int64), math.ceil(len(x_train) / batch)
    while step < n_steps:
        for index in batch_indices(len(x_train), batch, config.seed, epoch, drop_last=False):
            loss = F.cross_entropy(classifier(x_train[index]), train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            first_bad = _first_bad(first_bad, loss, step)
            step += 1
            if step in evals:
                with torch.no_grad():
                    test_logits = classifier(x_test)
                    lr_at = lambda s: f"linear_lr {config.linear_lr * _cosine(s, n_steps):.3g}"
                    advice = f"lower {setting('linear_lr')}"
                    _stop_if_not_finite(first_bad, test_logits, step, per_epoch, lr_at, advice)
                    accuracy = topk_accuracy(test_logits, test_labels)
                    train_top1 = topk_accuracy(classifier(x_train), train_labels, ks=(1,))[1]
                curves.append(
                    {
                        "step": step,
                        "epoch": step * batch / len(x_train),
                        "train_loss": loss.item(),
                        "train_top1": train_top1,
                        "test_top1": accuracy[1],
                        "test_top5": accuracy[5],
                    }
                )
            if step == n_steps:
                break
        epoch += 1
    with torch.no_grad():
        return classifier(x_test), curves, n_steps * batch / len(x_train)


def finetune(
    checkpoint: str | None,
    fraction: float,
    mode: str,
    out_dir: str | os.PathLike | None,
    config: FinetuneConfig,
    cache_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike = "runs",
) -> dict[str, Any]:
    """Evaluate one (backbone, label fraction, mode) cell of the study; writes
    ``out_dir/result.json``.

    Args:
        checkpoint: a pretraining ``checkpoint.pt``, or None / ``"none"`` for random init.
        fraction: share of the labelled pool used, in (0, 1] (stratified, nested subsets).
        mode: ``finetune`` (whole network, the reference report's protocol) or ``linear`` (frozen
            features).
        out_dir: None or '' derives it from the run: ``<mode>-<fraction>`` in the encoder's folder
            (:func:`swavnb.base.layout.evaluation_folder`), as the study does.
        config: evaluation settings (a preset: :func:`swavnb.evaluation.config.finetune_config`).
        cache_dir: where ``linear`` keeps extracted features (default: the encoder's folder).
        runs_dir: where a random-init encoder's folder is. Relative paths are taken from the
            project root.

    Raises:
        RunFolderError: ``out_dir`` holds another run; RunFolderBusy: another process writes it.

    Returns:
        The result row: preset, aug, mode, fraction, top1, top5 (percent), epochs, seconds,
        device, plus curves and per-superclass accuracy.
    """
    fraction = check_fraction(fraction)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    tic = time.perf_counter()
    device = pick_device(config.device)
    backbone, encoder, out = open_evaluation(
        checkpoint, mode, config, out_dir, runs_dir, fraction, hold=True
    )
    try:  # held from the claim to the row: no other run takes the folder over in between
        pool, test = evaluation_data(config)
        chosen = label_subset(pool.fine, fraction, config.seed)
        labelled = pool.subset(chosen)
        if mode == "finetune":
            logits, curves, epochs = train_finetune(
                backbone, encoder.aug != SCRATCH, labelled, test, config, device
            )
        else:
            cache = resolve(cache_dir or encoder.folder)
            pool_features, test_features = frozen_features(
                backbone, pool, test, device, config, cache, encoder.tag
            )
            logits, curves, epochs = train_linear(
                pool_features[chosen], pool.fine[chosen], test_features, test.fine, config
            )
        trained = {"epochs": epochs, "seconds": time.perf_counter() - tic, "curves": curves}
        row = _row(
            config, encoder, mode, fraction, logits, test, len(labelled), device, out, trained
        )
        write_json(out / RESULT, row)
    finally:
        folder_lock.release(out)
    return row


def _row(
    config: FinetuneConfig,
    encoder: Encoder,
    mode: str,
    fraction: float,
    logits: torch.Tensor,
    test: CifarSplit,
    n_labels: int,
    device: torch.device,
    out: Path,
    trained: dict[str, Any],
) -> dict[str, Any]:
    """One evaluation's row: its accuracies and their errors, and how and where it ran
    (``trained``: its epochs, seconds and curves)."""
    accuracy = topk_accuracy(logits, test.fine)
    return {
        "preset": config.preset,
        "aug": encoder.aug,
        "mode": mode,
        "fraction": fraction,
        "top1": accuracy[1],
        "top5": accuracy[5],
        # the binomial error of the test measurement (swavnb.evaluation.intervals)
        "top1_se": round(accuracy_se(accuracy[1], len(test)), 4),
        "top5_se": round(accuracy_se(accuracy[5], len(test)), 4),
        "epochs": round(trained["epochs"], 2),
        "seconds": round(trained["seconds"], 1),
        "device": device_name(device),
        "precision": precision_name(use_bf16(config.amp, device)),
        "n_labels": n_labels,
        "test_images": len(test),
        "image_size": config.image_size,
        # fine-tuning trains the BN statistics with the rest; frozen features use config.bn_stats
        "bn_stats": config.bn_stats if mode == "linear" else "trained",
        "seed": config.seed,
        "encoder_seed": encoder.seed,
        "checkpoint": encoder.checkpoint,
        "run_id": encoder.run_id,
        "out_dir": shown(out),
        "curves": trained["curves"],
        "per_superclass": per_group_accuracy(
            logits.argmax(1), test.fine, test.coarse, test.coarse_names
        ),
    }

"""The standard way people write the SwAV input pipeline, kept as the benchmark's baseline.

torchvision PIL transforms per image inside a ``DataLoader`` with worker processes,
float32 tensors: what ``swavnb.method.augment`` replaces with batched on-device ops.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from swavnb.method.augment import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    REPORT_JITTER,
    SWAV_JITTER,
    ColorJitter,
    MultiCrop,
)
from swavnb.method.loss import swav_loss
from swavnb.method.model import SwAVModel
from swavnb.pretraining.config import PretrainConfig
from swavnb.pretraining.recipe import (
    learning_rate,
    make_augmentation,
    make_optimizer,
    set_learning_rate,
)


def _jitter(jitter: ColorJitter) -> T.RandomApply:
    colour = T.ColorJitter(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
    return T.RandomApply([colour], p=jitter.p)


def view_transforms(
    name: str, multicrop: MultiCrop | None = None, n_views: int = 2
) -> list[T.Compose]:
    """One torchvision pipeline per view, matching ``swavnb.method.augment.Augmentation(name)``."""
    finish = [T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    if name == "flip":
        return [T.Compose([T.RandomHorizontalFlip(), *finish])] * n_views
    if name == "jitter":
        return [T.Compose([T.RandomHorizontalFlip(), _jitter(REPORT_JITTER), *finish])] * n_views
    if name == "swav":
        crop = multicrop or MultiCrop()
        layout = [(crop.global_size, crop.global_scale)] * crop.n_global
        layout += [(crop.local_size, crop.local_scale)] * crop.n_local
        return [
            T.Compose(
                [
                    T.RandomResizedCrop(size, scale=scale),
                    T.RandomHorizontalFlip(),
                    _jitter(SWAV_JITTER),
                    T.RandomGrayscale(p=0.2),
                    *finish,
                ]
            )
            for size, scale in layout
        ]
    raise ValueError(f"unknown augmentation {name!r}")


class MultiViewDataset(Dataset):
    """uint8 CIFAR images -> list of augmented views per image, via PIL."""

    def __init__(self, images: torch.Tensor, pipelines: list[T.Compose]) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3) for PIL
        self.pipelines = pipelines

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        image = Image.fromarray(self.images[index])
        return [pipeline(image) for pipeline in self.pipelines]


def reference_loader(
    images: torch.Tensor,
    name: str,
    batch_size: int,
    workers: int,
    seed: int = 0,
    multicrop: MultiCrop | None = None,
    device: torch.device | str = "cpu",
) -> DataLoader:
    """A shuffling, batch-dropping loader that yields lists of (B, 3, S, S) float32 views.

    For a CUDA ``device`` its batches come in pinned memory, as SwAV's own loader gives them, so
    that the trainer's ``non_blocking`` copies really overlap; on a CPU pinning would only cost.
    """
    dataset = MultiViewDataset(images.cpu(), view_transforms(name, multicrop))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


class ReferenceTrainer:
    """The reference report's training step fed by :func:`reference_loader`, in float32: the
    baseline of the benchmark.

    Same model, ``swav_loss``, optimiser, learning-rate schedule and prototype freezing
    as ``Pretrainer``; only the input pipeline and the precision differ. The queue is
    left out: the presets the benchmark compares (``paper``, ``quick``) have none.

    Args:
        config: the run's pretraining config (aug, batch size, loss and optimiser settings).
        images: (N, 3, 32, 32) uint8 training images.
        workers: DataLoader worker processes.
        device: where the model trains.
        init_state: a ``SwAVModel`` state dict to start from (so both paths share one init).
    """

    def __init__(
        self,
        config: PretrainConfig,
        images: torch.Tensor,
        workers: int,
        device: torch.device,
        init_state: dict[str, Any] | None = None,
    ) -> None:
        if config.queue_length:
            raise ValueError("the reference path has no queue; compare runs with --queue_length 0")
        self.config, self.device = config, device
        self.augment = make_augmentation(config)
        torch.manual_seed(config.seed)
        self.model = SwAVModel(
            config.feat_dim, config.n_prototypes, config.head, config.hidden_dim
        ).to(device)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.optimizer = make_optimizer(
            config, self.model, fused=False
        )  # torch's default, as people write it
        self.loader = reference_loader(
            images,
            config.aug,
            config.batch_size,
            workers,
            config.seed,
            self.augment.multicrop,
            device,
        )
        self.total_steps = len(self.loader) * config.epochs
        self.freeze_steps = int(config.freeze_prototypes_epochs * len(self.loader))
        self.batches = iter(())

    def train_step(self, global_step: int) -> torch.Tensor:
        """One step on the loader's next batch (a new epoch starts when it runs out); returns the
        loss."""
        views = next(self.batches, None)
        if views is None:
            self.batches = iter(self.loader)
            views = next(self.batches)
        set_learning_rate(self.optimizer, learning_rate(self.config, global_step, self.total_steps))
        self.model.normalize_prototypes()
        _, scores = self.model([v.to(self.device, non_blocking=True) for v in views])
        config = self.config
        loss = swav_loss(
            scores, self.augment.n_assign, config.temperature, config.epsilon, config.sinkhorn_iters
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if global_step < self.freeze_steps:
            self.model.prototypes.weight.grad = None
        self.optimizer.step()
        return loss.detach()

"""The standard way people write the SwAV input pipeline, kept as the benchmark's baseline.

torchvision PIL transforms per image inside a ``DataLoader`` with worker processes,
float32 tensors: what ``swavnb.augment`` replaces with batched on-device ops.
"""
from __future__ import annotations

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from swavnb.augment import CIFAR100_MEAN, CIFAR100_STD, SEED_JITTER, SWAV_JITTER, ColorJitter, MultiCrop


def _jitter(jitter: ColorJitter) -> T.RandomApply:
    colour = T.ColorJitter(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
    return T.RandomApply([colour], p=jitter.p)


def view_transforms(name: str, multicrop: MultiCrop | None = None, n_views: int = 2) -> list[T.Compose]:
    """One torchvision pipeline per view, matching ``swavnb.augment.Augmentation(name)``."""
    finish = [T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    if name == "flip":
        return [T.Compose([T.RandomHorizontalFlip(), *finish])] * n_views
    if name == "jitter":
        return [T.Compose([T.RandomHorizontalFlip(), _jitter(SEED_JITTER), *finish])] * n_views
    if name == "swav":
        crop = multicrop or MultiCrop()
        layout = [(crop.global_size, crop.global_scale)] * crop.n_global
        layout += [(crop.local_size, crop.local_scale)] * crop.n_local
        return [T.Compose([T.RandomResizedCrop(size, scale=scale), T.RandomHorizontalFlip(), _jitter(SWAV_JITTER),
                           T.RandomGrayscale(p=0.2), *finish]) for size, scale in layout]
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


def reference_loader(images: torch.Tensor, name: str, batch_size: int, workers: int, seed: int = 0,
                     multicrop: MultiCrop | None = None) -> DataLoader:
    """A shuffling, batch-dropping loader that yields lists of (B, 3, S, S) float32 views."""
    dataset = MultiViewDataset(images.cpu(), view_transforms(name, multicrop))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))

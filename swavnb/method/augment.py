"""Batched, on-device view generation for the three strategies of the study.

Every random parameter is drawn per image from one ``torch.Generator`` on the
images' device (on a GPU the colour ops' order follows that generator's host-side
state), so a batch is augmented in a handful of tensor ops (no per-image PIL, no
host round trip) and a run is reproducible from its seed. Colour ops are
torchvision's definitions with per-image factors (:mod:`swavnb.method.colour`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from swavnb.method import colour

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
AUGMENTATIONS = ("flip", "jitter", "swav")


@dataclass(frozen=True)
class MultiCrop:
    """Crop sizes and scales of the ``swav`` strategy (SwAV sec. 3.2, scaled to 32 px)."""

    n_global: int = 2  # views that get Sinkhorn codes; SwAV uses 2
    global_size: int = 32  # the training images' resolution (CIFAR's 32 px, or a CPU preset's 16)
    global_scale: tuple[float, float] = (0.14, 1.0)  # area range of SwAV's 224 px crops
    n_local: int = 4  # cheap low-resolution views that only predict codes
    local_size: int = 16  # 96/224 of 32 px, rounded up to a multiple of 8
    local_scale: tuple[float, float] = (0.05, 0.14)  # area range of SwAV's 96 px crops

    def __post_init__(self) -> None:
        if self.n_global < 1 or self.n_local < 0:
            raise ValueError(
                f"need n_global >= 1 and n_local >= 0, got {self.n_global}, {self.n_local}"
            )
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(low, high)}")


@dataclass(frozen=True)
class ColorJitter:
    """Per-image colour jitter strengths, as torchvision's ``ColorJitter`` takes them."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # fraction of the colour wheel, at most 0.5
    p: float = 1.0  # probability an image is jittered at all


# the reference report's first strategy: the usual torchvision strengths, always on
REPORT_JITTER = ColorJitter()
SWAV_JITTER = ColorJitter(
    0.8, 0.8, 0.8, 0.2, p=0.8
)  # SwAV's strength-1.0 recipe (solo-learn's CIFAR values)


def view_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of the views one rank draws at one global step: a function of (seed, step, rank)
    only, as the batch order is of (seed, epoch) (:func:`swavnb.data.cifar.epoch_permutation`).

    Reseeding the generator with it before every step makes a resumed run draw what an
    uninterrupted one does on every rank, with no generator state to save (a CUDA generator's
    state would not load into a CPU one). ``Generator.manual_seed`` is host-side: no device sync.
    """
    digest = hashlib.blake2b(f"views|{seed}|{step}|{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")  # [0, 2**64): manual_seed's range


def _uniform(
    low: float, high: float, n: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _bernoulli(p: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < p


def _per_image(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> float32 in [0, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.float().div_(255.0)


@functools.cache
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-100's channel mean and std, (1, 3, 1, 1) each, copied to ``device`` once: a copy per
    call would make the GPU wait for the host at every view."""
    mean = torch.tensor(CIFAR100_MEAN, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(CIFAR100_STD, device=device).view(1, 3, 1, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = _statistics(x.device)
    return (x - mean) / std


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 0.5."""
    flip = _bernoulli(0.5, x.shape[0], generator, x.device)
    return torch.where(_per_image(flip), x.flip(-1), x)


def _op_order(n_ops: int, generator: torch.Generator, device: torch.device) -> list[int]:
    """A random order of ``n_ops`` ops, known on the host.

    On the CPU it is drawn from ``generator``, as it always was (the CPU's random stream is
    unchanged); on a GPU from the generator's seed and Philox offset, host integers that every draw
    advances, so the GPU never waits for a read-back and the order still follows the run's seed
    and resumes with the generator's state.
    """
    if device.type == "cpu":
        return torch.randperm(n_ops, generator=generator, device=device).tolist()
    host = random.Random(generator.initial_seed() * 2**64 + generator.get_offset())
    return host.sample(range(n_ops), n_ops)


def color_jitter(x: torch.Tensor, generator: torch.Generator, jitter: ColorJitter) -> torch.Tensor:
    """torchvision-style colour jitter with independent factors per image.

    The four ops run in one random order per batch (torchvision draws one per image);
    images not selected (probability ``1 - p``) get identity factors.
    """
    n, device = x.shape[0], x.device
    active = _bernoulli(jitter.p, n, generator, device)

    def factor(strength: float) -> torch.Tensor:
        drawn = _uniform(max(0.0, 1 - strength), 1 + strength, n, generator, device)
        return torch.where(active, drawn, torch.ones_like(drawn))

    brightness, contrast, saturation = (
        factor(jitter.brightness),
        factor(jitter.contrast),
        factor(jitter.saturation),
    )
    hue = torch.where(
        active,
        _uniform(-jitter.hue, jitter.hue, n, generator, device),
        torch.zeros(n, device=device),
    )
    ops = (
        lambda y: colour.brightness(y, brightness),
        lambda y: colour.contrast(y, contrast),
        lambda y: colour.saturation(y, saturation),
        lambda y: colour.hue(y, hue),
    )
    for op in _op_order(len(ops), generator, device):
        x = ops[op](x)
    return x


def random_grayscale(x: torch.Tensor, generator: torch.Generator, p: float = 0.2) -> torch.Tensor:
    gray = colour.grayscale(x).expand_as(x)
    return torch.where(_per_image(_bernoulli(p, x.shape[0], generator, x.device)), gray, x)


def random_resized_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Per-image random resized crop and horizontal flip in one bilinear resample.

    Each image gets an area share from ``scale`` and an aspect ratio (log-uniform)
    from ``ratio``; a side that would leave the image is clipped to it (torchvision
    instead retries, then falls back to a centre crop). Crop and mirror become one
    affine grid, so the batch is resampled by a single ``grid_sample``.

    Returns:
        (B, 3, size, size) float.
    """
    n, device = x.shape[0], x.device
    area = _uniform(scale[0], scale[1], n, generator, device)
    log_ratio = _uniform(math.log(ratio[0]), math.log(ratio[1]), n, generator, device)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # share of the image width
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (width / 2) + (1 - width) * torch.rand(n, generator=generator, device=device)
    centre_y = (height / 2) + (1 - height) * torch.rand(n, generator=generator, device=device)
    mirror = torch.where(_bernoulli(0.5, n, generator, device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)  # output [-1, 1] -> input [-1, 1]
    theta[:, 0, 0] = width * mirror
    theta[:, 0, 2] = 2 * centre_x - 1
    theta[:, 1, 1] = height
    theta[:, 1, 2] = 2 * centre_y - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class Augmentation:
    """Turns a uint8 batch into the list of normalised float views a strategy prescribes.

    Args:
        name: ``flip`` (the reference report's second strategy: 2 views, flip),
            ``jitter`` (its first: 2 views, flip + colour jitter) or ``swav`` (SwAV's recipe:
            random resized multi-crop, flip, strong colour jitter, grayscale).
        multicrop: crop layout of ``swav`` (ignored by the others).
        n_views: views per image for ``flip`` and ``jitter``.
    """

    def __init__(self, name: str, multicrop: MultiCrop | None = None, n_views: int = 2) -> None:
        if name not in AUGMENTATIONS:
            raise ValueError(
                f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}"
            )
        self.name = name
        self.multicrop = multicrop or MultiCrop()
        self.n_views = n_views

    @property
    def n_assign(self) -> int:
        """How many leading views are full-resolution views that get codes."""
        return self.multicrop.n_global if self.name == "swav" else self.n_views

    @property
    def view_sizes(self) -> list[int]:
        if self.name != "swav":
            return [self.multicrop.global_size] * self.n_views
        crop = self.multicrop
        return [crop.global_size] * crop.n_global + [crop.local_size] * crop.n_local

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """(B, 3, S, S) uint8 -> list of float32 views, normalised, sized as ``view_sizes``."""
        x = to_unit_float(images)
        if self.name == "swav":
            crop = self.multicrop
            layout = [(crop.global_size, crop.global_scale)] * crop.n_global
            layout += [(crop.local_size, crop.local_scale)] * crop.n_local
            views = []
            for size, scale in layout:
                view = random_resized_crop_flip(x, generator, size, scale)
                view = color_jitter(view, generator, SWAV_JITTER)
                views.append(normalize(random_grayscale(view, generator)))
            return views
        views = []
        for _ in range(self.n_views):
            view = random_flip(x, generator)
            if self.name == "jitter":
                view = color_jitter(view, generator, REPORT_JITTER)
            views.append(normalize(view))
        return views


def eval_transform(images: torch.Tensor) -> torch.Tensor:
    """The deterministic view used for features and test accuracy."""
    return normalize(to_unit_float(images))


def finetune_transform(
    images: torch.Tensor, generator: torch.Generator, max_shift: int | None = None
) -> torch.Tensor:
    """The standard supervised CIFAR augmentation: flip and a random shift of up to
    ``max_shift`` pixels with black padding (pad-4 random crop at 32 px; by default
    an eighth of the image side), one view."""
    x = to_unit_float(images)
    n, size = x.shape[0], x.shape[-1]
    max_shift = size // 8 if max_shift is None else max_shift
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator, device=x.device)
    mirror = torch.where(_bernoulli(0.5, n, generator, x.device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = mirror
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift.float() * 2 / size
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return normalize(
        F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    )


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Back to [0, 1] for display."""
    mean, std = _statistics(x.device)
    return (x * std + mean).clamp(0, 1)

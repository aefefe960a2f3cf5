"""CIFAR-100 as whole-split uint8 tensors, label subsets and device-side batching."""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from swavnb.base.errors import DatasetNotFoundError
from swavnb.base.layout import resolve

DATA_ENV = "SWAVNB_DATA"
OFFLINE_ENV = "SWAVNB_OFFLINE"  # "1": never try to download (air-gapped machines fail fast)
FOLDER = "cifar-100-python"
SPLITS = ("train", "test")
N_CLASSES = 100
N_SUPERCLASSES = 20


@dataclass
class CifarSplit:
    """One CIFAR-100 split held in memory (or on the training device) as tensors."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8: 150 MB for train, cheap to keep on a GPU
    fine: torch.Tensor  # (N,) int64, 100 classes
    coarse: torch.Tensor  # (N,) int64, 20 superclasses
    fine_names: list[str]
    coarse_names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> CifarSplit:
        return self.subset(slice(None), device)

    def resized(self, size: int) -> CifarSplit:
        """The same images at ``size`` px (see :func:`downsample`); labels unchanged."""
        return replace(self, images=downsample(self.images, size))

    def subset(
        self, index: torch.Tensor | slice, device: torch.device | str | None = None
    ) -> CifarSplit:
        device = self.images.device if device is None else torch.device(device)
        if isinstance(index, torch.Tensor):
            index = index.to(self.images.device)
        return CifarSplit(
            images=self.images[index].to(device),
            fine=self.fine[index].to(device),
            coarse=self.coarse[index].to(device),
            fine_names=self.fine_names,
            coarse_names=self.coarse_names,
        )


def check_image_size(size: int) -> int:
    """CIFAR's 32 px or an exact fraction of it (16, 8): anything else would resample unevenly."""
    if size < 8 or 32 % size:
        raise ValueError(f"image_size must be 32, 16 or 8 (32 px divided evenly), got {size}")
    return size


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, 32, 32) uint8 -> (N, 3, size, size) uint8, each pixel the mean of a (32/size)^2 block.

    Lets a CPU preset train and evaluate at lower resolution (16 px is ~3x cheaper for
    ResNet-18) on the same images; 32 returns the input unchanged.
    """
    check_image_size(size)
    if images.shape[-1] == size:
        return images
    return F.avg_pool2d(images.float(), images.shape[-1] // size).round_().to(torch.uint8)


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) ``cifar-100-python/``.

    Order: the argument, else ``$SWAVNB_DATA``, else ``data``; a relative path is taken from the
    project root (:func:`swavnb.base.layout.resolve`), whatever the working directory.
    """
    if data_root:
        return resolve(data_root)
    if os.environ.get(DATA_ENV):
        return resolve(os.environ[DATA_ENV])
    return resolve("data")


def _split_folder(root: Path) -> Path | None:
    """Accept both ``root/cifar-100-python`` and ``root`` being that folder itself."""
    for candidate in (root / FOLDER, root):
        if all((candidate / name).is_file() for name in (*SPLITS, "meta")):
            return candidate
    return None


def _download(root: Path) -> None:
    """Fetch and unpack the official archive (md5-checked) with torchvision's helper."""
    from torchvision.datasets import CIFAR100

    root.mkdir(parents=True, exist_ok=True)
    CIFAR100(str(root), train=True, download=True)


def find_cifar100(data_root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Locate the ``cifar-100-python`` folder, downloading the official archive if allowed.

    Files already on disk are used as they are, without torchvision's md5 check, so
    a copy whose image order differs from the official archive (as the offline copy
    here) loads too.

    Raises:
        DatasetNotFoundError: not on disk and the download failed or was disabled.
    """
    root = resolve_data_root(data_root)
    folder = _split_folder(root)
    if folder is not None:
        return folder
    hint = (
        f"CIFAR-100 not found under '{root.resolve()}' (looked for {FOLDER}/train, test, meta). "
        f"Point the project at a copy with --data_root / data_root=... or the {DATA_ENV} "
        f"environment variable (e.g. {DATA_ENV}=../shared/data), or run with internet access to "
        "download the official archive there."
    )
    if not download or os.environ.get(OFFLINE_ENV) == "1":
        raise DatasetNotFoundError(hint)
    try:
        _download(root)
    except Exception as error:  # any network or archive failure ends the same way for the user
        raise DatasetNotFoundError(f"{hint} The download failed: {error}") from error
    folder = _split_folder(root)
    if folder is None:
        raise DatasetNotFoundError(hint)
    return folder


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DatasetNotFoundError(
            f"'{path}' is not a readable CIFAR-100 pickle ({error}); delete it and download again."
        ) from error


def load_cifar100(
    split: str = "train", data_root: str | os.PathLike | None = None, download: bool = True
) -> CifarSplit:
    """Load a whole CIFAR-100 split as uint8 tensors on the CPU.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        data_root: folder holding ``cifar-100-python/``; default ``$SWAVNB_DATA`` or ``./data``.
        download: fetch the official archive into ``data_root`` when it is missing.

    Returns:
        The split, images (N, 3, 32, 32) uint8 with fine and coarse labels and names.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = find_cifar100(data_root, download=download)
    cached = _read_split(*_file_key(folder / split), *_file_key(folder / "meta"))
    # copies: callers may change their split in place, and the next load must not see it
    return replace(
        cached,
        images=cached.images.clone(),
        fine=cached.fine.clone(),
        coarse=cached.coarse.clone(),
        fine_names=list(cached.fine_names),
        coarse_names=list(cached.coarse_names),
    )


def _file_key(path: Path) -> tuple[Path, int, int]:
    status = path.stat()
    return path.resolve(), status.st_size, status.st_mtime_ns


# read once per process: unpickling the 150 MB train split costs ~0.7 s, which each pretraining,
# evaluation and notebook cell that loads it would otherwise pay again; keyed by size and mtime,
# so a replaced file is read anew
@functools.lru_cache(maxsize=4)
def _read_split(
    path: Path, size: int, mtime_ns: int, meta_path: Path, meta_size: int, meta_mtime_ns: int
) -> CifarSplit:
    raw = _unpickle(path)
    meta = _unpickle(meta_path)
    images = torch.frombuffer(bytearray(raw[b"data"]), dtype=torch.uint8).reshape(-1, 3, 32, 32)
    return CifarSplit(
        images=images,
        fine=torch.tensor(raw[b"fine_labels"], dtype=torch.int64),
        coarse=torch.tensor(raw[b"coarse_labels"], dtype=torch.int64),
        fine_names=[name.decode() for name in meta[b"fine_label_names"]],
        coarse_names=[name.decode() for name in meta[b"coarse_label_names"]],
    )


def check_fraction(fraction: float) -> float:
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(
            f"fraction must be in (0, 1] (e.g. 0.01 for 1 % of the labels), got {fraction}"
        )
    return float(fraction)


def label_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-stratified ``fraction`` of the samples.

    Each class keeps ``round(fraction * n_class)`` samples (at least one), taken from
    the front of a per-class order fixed by ``seed`` alone, so smaller fractions are
    subsets of larger ones (1 % inside 10 % inside 30 % inside 40 %).

    Args:
        labels: (N,) integer class labels.
        fraction: share of each class to keep, in (0, 1].
        seed: fixes the per-class order.

    Returns:
        (M,) sorted int64 indices into ``labels``.
    """
    fraction = check_fraction(fraction)
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)  # one shuffle serves every class
    kept = []
    for cls in torch.unique(labels):
        members = order[labels[order] == cls]
        kept.append(members[: max(1, round(fraction * len(members)))])
    return torch.sort(torch.cat(kept)).values


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch, a function of (seed, epoch) only, on the CPU.

    Drawing it from a fresh generator per epoch lets a resumed run rebuild the exact
    order of an interrupted epoch and skip the steps already done; drawing it on the CPU keeps
    that order when a run resumes on another device (a CUDA generator draws another one).
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_indices(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    device: torch.device | str = "cpu",
    drop_last: bool = True,
    start_step: int = 0,
) -> Iterator[torch.Tensor]:
    """Yield the shuffled index batches of one epoch, starting at ``start_step``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_permutation(n, seed, epoch).to(device)
    stop = n - n % batch_size if drop_last else n
    for begin in range(start_step * batch_size, stop, batch_size):
        yield order[begin : begin + batch_size]


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)

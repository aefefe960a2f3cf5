"""CIFAR-100 loading, dataset discovery, label subsets and epoch batching."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import pytest
import torch

import swavnb.data.cifar as data
from swavnb.base.layout import project_root
from swavnb.data.cifar import (
    DATA_ENV,
    FOLDER,
    DatasetNotFoundError,
    batch_indices,
    downsample,
    find_cifar100,
    label_subset,
    load_cifar100,
    resolve_data_root,
    steps_per_epoch,
)

FRACTIONS = (0.01, 0.1, 0.3, 0.4, 1.0)


def test_train_split_is_the_real_cifar100(train_split):
    assert len(train_split) == 50_000
    assert train_split.images.shape == (50_000, 3, 32, 32)
    assert train_split.images.dtype == torch.uint8
    assert train_split.fine.dtype == torch.int64 and train_split.coarse.dtype == torch.int64
    assert torch.equal(torch.bincount(train_split.fine, minlength=100), torch.full((100,), 500))
    assert torch.equal(torch.bincount(train_split.coarse, minlength=20), torch.full((20,), 2500))
    assert len(train_split.fine_names) == 100 and len(set(train_split.fine_names)) == 100
    assert len(train_split.coarse_names) == 20 and len(set(train_split.coarse_names)) == 20
    assert "apple" in train_split.fine_names and "fish" in train_split.coarse_names
    # Each fine class sits in exactly one superclass, five fine classes per superclass.
    pairs = torch.unique(train_split.fine * 100 + train_split.coarse)
    assert len(pairs) == 100
    assert torch.equal(torch.bincount(pairs % 100, minlength=20), torch.full((20,), 5))
    # Real pictures, not a blank or constant buffer.
    assert 0.3 < train_split.images[:1000].float().mean().item() / 255 < 0.7
    assert train_split.images[:1000].float().std().item() > 30


def test_test_split_is_the_real_cifar100(data_root):
    test = load_cifar100("test", data_root, download=False)
    assert test.images.shape == (10_000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(test.fine, minlength=100), torch.full((100,), 100))
    assert torch.equal(torch.bincount(test.coarse, minlength=20), torch.full((20,), 500))
    assert len(test.fine_names) == 100 and len(test.coarse_names) == 20


def test_a_split_is_read_once_per_process_and_each_load_is_a_copy(data_root, tmp_path, monkeypatch):
    folder = tmp_path / FOLDER
    folder.mkdir()
    (folder / "train").symlink_to(data_root / FOLDER / "train")
    for name in ("test", "meta"):  # copies: files this process has not read yet
        (folder / name).write_bytes((data_root / FOLDER / name).read_bytes())
    reads = []
    unpickle = data._unpickle
    monkeypatch.setattr(data, "_unpickle", lambda path: reads.append(path.name) or unpickle(path))
    first = load_cifar100("test", tmp_path, download=False)
    first.images[0] = 0  # a caller changing its split in place
    first.fine_names[0] = "changed"
    second = load_cifar100("test", tmp_path, download=False)
    assert reads == ["test", "meta"]  # the second load read nothing
    assert second.images[0].any() and second.fine_names[0] == "apple"
    assert second.images.data_ptr() != first.images.data_ptr()
    # a file replaced since is read anew (its size or mtime changed)
    stamp = (folder / "test").stat().st_mtime_ns
    (folder / "test").write_bytes((data_root / FOLDER / "test").read_bytes())
    os.utime(folder / "test", ns=(stamp + 10**9, stamp + 10**9))
    third = load_cifar100("test", tmp_path, download=False)
    assert reads == ["test", "meta", "test", "meta"]
    assert torch.equal(third.images, second.images)


def test_unknown_split_raises(data_root):
    with pytest.raises(ValueError, match="split"):
        load_cifar100("val", data_root, download=False)


def test_missing_dataset_names_folder_and_env_var(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar100("train", tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path.resolve()) in message
    assert DATA_ENV in message
    assert isinstance(info.value, FileNotFoundError)


def test_failed_download_raises_dataset_not_found(tmp_path, monkeypatch):
    calls = []

    def offline(root: Path) -> None:
        calls.append(root)
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download", offline)
    monkeypatch.delenv(
        data.OFFLINE_ENV, raising=False
    )  # an air-gapped developer's setting would skip the attempt
    with pytest.raises(DatasetNotFoundError) as info:
        find_cifar100(tmp_path, download=True)
    assert calls == [tmp_path]
    assert "network is unreachable" in str(info.value)
    assert str(tmp_path.resolve()) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_download_that_leaves_no_files_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda root: None)
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    with pytest.raises(DatasetNotFoundError):
        find_cifar100(tmp_path, download=True)


def test_resolve_data_root_order(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert resolve_data_root() == project_root() / "data"  # data/ in the project, whatever the cwd
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "from_env"))
    assert resolve_data_root() == tmp_path / "from_env"
    assert resolve_data_root(tmp_path / "from_arg") == tmp_path / "from_arg"
    assert resolve_data_root(str(tmp_path / "from_arg")) == tmp_path / "from_arg"


def test_env_var_is_used_when_no_argument(data_root, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(data_root))
    assert find_cifar100(download=False) == data_root / FOLDER


def test_root_may_be_the_cifar_folder_itself(data_root):
    assert find_cifar100(data_root, download=False) == data_root / FOLDER
    assert find_cifar100(data_root / FOLDER, download=False) == data_root / FOLDER
    direct = load_cifar100("test", data_root / FOLDER, download=False)
    assert len(direct) == 10_000


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_label_subset_is_stratified_on_real_labels(train_split, fraction):
    index = label_subset(train_split.fine, fraction, seed=0)
    counts = torch.bincount(train_split.fine[index], minlength=100)
    assert torch.equal(counts, torch.full((100,), round(fraction * 500)))
    assert torch.equal(index, torch.unique(index))  # sorted, no repeats
    assert index.dtype == torch.int64


def test_label_subset_nested(train_split):
    subsets = [set(label_subset(train_split.fine, f, seed=3).tolist()) for f in FRACTIONS]
    for small, large in pairwise(subsets):
        assert small < large
    assert subsets[-1] == set(range(50_000))


def test_label_subset_seeded(train_split):
    first = label_subset(train_split.fine, 0.1, seed=7)
    assert torch.equal(first, label_subset(train_split.fine, 0.1, seed=7))
    assert not torch.equal(first, label_subset(train_split.fine, 0.1, seed=8))


def test_label_subset_keeps_rare_classes():
    # Class sizes 1, 3, 40 and 200: a 1 % subset still keeps one sample of each class.
    labels = torch.cat([torch.full((n,), cls) for cls, n in enumerate((1, 3, 40, 200))])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    counts = torch.bincount(labels[label_subset(labels, 0.01)], minlength=4)
    assert torch.equal(counts, torch.tensor([1, 1, 1, 2]))
    counts = torch.bincount(labels[label_subset(labels, 0.5)], minlength=4)
    assert torch.equal(counts, torch.tensor([max(1, round(0.5 * n)) for n in (1, 3, 40, 200)]))


@pytest.mark.parametrize("fraction", [0, 0.0, 1.5, -0.1])
def test_label_subset_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        label_subset(torch.arange(10) % 2, fraction)


def test_batch_indices_cover_each_sample_at_most_once():
    batches = list(batch_indices(103, 10, seed=0, epoch=0))
    assert len(batches) == steps_per_epoch(103, 10) == 10
    assert all(len(b) == 10 for b in batches)
    seen = torch.cat(batches)
    assert len(torch.unique(seen)) == 100 and seen.min() >= 0 and seen.max() < 103

    batches = list(batch_indices(103, 10, seed=0, epoch=0, drop_last=False))
    assert len(batches) == steps_per_epoch(103, 10, drop_last=False) == 11
    assert len(batches[-1]) == 3
    assert torch.equal(torch.sort(torch.cat(batches)).values, torch.arange(103))


def test_batch_indices_seeded_per_epoch():
    def epoch(seed: int, number: int) -> torch.Tensor:
        return torch.cat(list(batch_indices(200, 16, seed=seed, epoch=number)))

    assert torch.equal(epoch(1, 4), epoch(1, 4))
    assert not torch.equal(epoch(1, 4), epoch(1, 5))
    assert not torch.equal(epoch(1, 4), epoch(2, 4))
    assert not torch.equal(epoch(1, 0), torch.arange(len(epoch(1, 0))))  # actually shuffled


def test_batch_indices_start_step_skips_exactly_the_done_steps():
    full = list(batch_indices(200, 16, seed=3, epoch=2))
    resumed = list(batch_indices(200, 16, seed=3, epoch=2, start_step=5))
    assert len(resumed) == len(full) - 5
    for a, b in zip(full[5:], resumed, strict=True):
        assert torch.equal(a, b)
    assert list(batch_indices(200, 16, seed=3, epoch=2, start_step=len(full))) == []


def test_batch_indices_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        next(batch_indices(10, 0, seed=0, epoch=0))


def test_subset_and_to_keep_labels_with_images(train_split):
    index = torch.tensor([49_999, 0, 123, 7, 123])
    sub = train_split.subset(index)
    assert len(sub) == 5
    for row, i in enumerate(index.tolist()):
        assert torch.equal(sub.images[row], train_split.images[i])
        assert sub.fine[row] == train_split.fine[i] and sub.coarse[row] == train_split.coarse[i]
    assert sub.fine_names == train_split.fine_names and sub.coarse_names == train_split.coarse_names

    chosen = train_split.subset(label_subset(train_split.fine, 0.01))
    assert torch.equal(torch.bincount(chosen.fine, minlength=100), torch.full((100,), 5))

    sliced = train_split.subset(slice(10, 20))
    assert torch.equal(sliced.images, train_split.images[10:20]) and torch.equal(
        sliced.fine, train_split.fine[10:20]
    )

    moved = sub.to("cpu")
    assert moved.images.device.type == "cpu"
    assert torch.equal(moved.images, sub.images) and torch.equal(moved.fine, sub.fine)
    assert torch.equal(moved.coarse, sub.coarse)


def test_downsample_averages_blocks_of_real_images(train_split):
    images = train_split.images[:16]
    half = downsample(images, 16)
    assert half.shape == (16, 3, 16, 16) and half.dtype == torch.uint8
    blocks = images.double().view(16, 3, 16, 2, 16, 2).mean(dim=(3, 5))
    assert (half.double() - blocks).abs().max() <= 0.5  # rounded block means
    assert torch.equal(downsample(images, 32), images)
    small = train_split.subset(slice(0, 16)).resized(8)
    assert small.images.shape[-1] == 8 and torch.equal(small.fine, train_split.fine[:16])


@pytest.mark.parametrize("size", [4, 12, 24, 64])
def test_downsample_rejects_uneven_sizes(train_split, size):
    with pytest.raises(ValueError, match="image_size must be 32, 16 or 8"):
        downsample(train_split.images[:2], size)

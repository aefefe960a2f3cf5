"""Checkpoint files: atomic writes, clear errors, model rebuilt from the file alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from swavnb.base.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from swavnb.base.files import write_json
from swavnb.method.model import SwAVModel
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import pretrain


@pytest.fixture(scope="session")  # built once per worker, however its tests interleave
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = pretrain_config(
        "smoke",
        aug="flip",
        train_images=32,
        batch_size=16,
        epochs=1,
        n_prototypes=12,
        feat_dim=8,
        head="mlp",
        hidden_dim=16,
    )
    pretrain(config, out, progress=False)
    return out / "checkpoint.pt"


def test_from_checkpoint_rebuilds_the_model(trained):
    model = SwAVModel.from_checkpoint(trained)
    saved = load_checkpoint(trained)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert model.hparams == {"feat_dim": 8, "n_prototypes": 12, "head": "mlp", "hidden_dim": 16}
    model.eval()
    assert model.backbone(torch.randn(3, 3, 32, 32)).shape == (3, 512)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"x": torch.arange(3)}, path)
    save_checkpoint({"x": torch.arange(5)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_save_removes_the_temporaries_of_killed_writers_only(tmp_path):
    path = tmp_path / "checkpoint.pt"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no process
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = tmp_path / f".checkpoint.pt.{gone.pid}.00000000.tmp"
        fresh = tmp_path / f".checkpoint.pt.{gone.pid}.11111111.tmp"  # may be another host's
        writing = tmp_path / f".checkpoint.pt.{alive.pid}.22222222.tmp"
        other = tmp_path / f".metrics.json.{gone.pid}.33333333.tmp"  # another file's
        for tmp in (killed, fresh, writing, other):
            tmp.write_bytes(b"partial")
        old = time.time() - 3600
        for tmp in (killed, writing, other):
            os.utime(tmp, (old, old))
        save_checkpoint({"x": torch.ones(2)}, path)
        assert load_checkpoint(path)["x"].tolist() == [1.0, 1.0]
        assert not killed.exists()
        assert fresh.exists() and writing.exists() and other.exists()
    finally:
        alive.kill()
        alive.wait()


def test_saved_files_get_the_permissions_of_any_new_file(tmp_path):
    previous = os.umask(0o022)  # the usual one: new files readable by all, writable by the owner
    try:
        write_json(tmp_path / "result.json", {"top1": 1.0})
        save_checkpoint({"x": torch.arange(3)}, tmp_path / "checkpoint.pt")
    finally:
        os.umask(previous)
    for name in ("result.json", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"x": torch.arange(3)}, path)

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"x": torch.arange(5)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_missing_corrupt_and_foreign_files_are_clear_errors(tmp_path, trained):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    study_run = tmp_path / "runs" / "quick" / "flip" / "seed-0" / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="--preset quick --aug flip --seed 0` to create it"):
        load_checkpoint(study_run)
    with pytest.raises(CheckpointError, match="is a folder; pass the checkpoint.pt inside it"):
        load_checkpoint(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        SwAVModel.from_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a swavnb"):
        SwAVModel.from_checkpoint(foreign)

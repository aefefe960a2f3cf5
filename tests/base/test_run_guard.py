"""Run folders: a manifest says what each holds, a lock who writes it; a full disk is one line."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from swavnb import pretrain
from swavnb.base import cli, files, folder_lock, run_guard
from swavnb.base.errors import DiskFullError, RunFolderBusy, RunFolderError
from swavnb.base.files import write_json
from swavnb.base.layout import LOCK, MANIFEST

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = {"kind": "pretrain", "preset": "smoke", "aug": "flip", "seed": 0, "config": {"lr": 0.1}}


def _claim(folder: Path, *args, **kwargs) -> bool:
    """:func:`run_guard.claim` as a run calls it: under the folder's lock."""
    with folder_lock.locked(folder):
        return run_guard.claim(folder, *args, **kwargs)


def _current(folder: Path, identity: dict, version: str) -> bool:
    held = run_guard.check(folder, identity)
    return held is not None and held["version"] == version


def test_a_folder_holding_another_run_refuses_with_one_line_naming_both(tmp_path):
    assert _claim(tmp_path, IDENTITY, "run-a") is False
    assert _current(tmp_path, IDENTITY, "run-a")
    other = {**IDENTITY, "aug": "swav", "config": {"lr": 0.2}}
    with pytest.raises(RunFolderError) as refused:
        _claim(tmp_path, other, "run-b")
    message = str(refused.value)
    assert "\n" not in message
    assert "holds flip pretraining (seed 0), preset smoke, not swav pretraining" in message
    assert "aug: 'flip' -> 'swav'" in message and "lr: 0.1 -> 0.2" in message
    assert "--out" in message  # the flag a command-line user sets
    assert run_guard.read_manifest(tmp_path)["identity"] == IDENTITY  # untouched


def test_the_same_run_of_a_redone_pretraining_replaces_its_stale_results(tmp_path):
    _claim(tmp_path, IDENTITY, "run-a", replaces=("result.json",))
    write_json(tmp_path / "result.json", {"top1": 1.0})
    assert _claim(tmp_path, IDENTITY, "run-a", replaces=("result.json",)) is False
    assert (tmp_path / "result.json").exists()  # the same pretraining: kept
    assert not _current(tmp_path, IDENTITY, "run-b")  # a redone one: not done
    assert _claim(tmp_path, IDENTITY, "run-b", replaces=("result.json",)) is True
    assert not (tmp_path / "result.json").exists() and _current(tmp_path, IDENTITY, "run-b")


def test_a_second_process_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(
    tmp_path, lock_holder
):
    holder = lock_holder(tmp_path)
    with pytest.raises(RunFolderBusy, match=f"in use by process {holder.pid} on "):
        with folder_lock.locked(tmp_path):
            pass
    holder.kill()
    holder.wait()
    assert (tmp_path / LOCK).exists()  # left behind by the killed process: stale, not held
    with folder_lock.locked(tmp_path), folder_lock.locked(tmp_path):  # taken over; re-entrant
        assert str(os.getpid()) in (tmp_path / LOCK).read_text()


def _another_process_can_lock(folder: Path) -> bool:
    code = (
        "import sys; from swavnb.base import folder_lock\n"
        "with folder_lock.locked(sys.argv[1]): pass"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    assert done.returncode == 0 or "RunFolderBusy" in done.stderr, done.stderr
    return done.returncode == 0


def test_a_released_hold_lets_another_process_in_while_this_one_lives(tmp_path):
    # a notebook's kernel holds its folder until its last cell, not until the kernel is stopped
    with folder_lock.locked(tmp_path, "probes folder", keep=True):
        pass
    assert not _another_process_can_lock(tmp_path)
    folder_lock.release(tmp_path)
    assert _another_process_can_lock(tmp_path)
    folder_lock.release(tmp_path)  # holding none: nothing happens


def test_a_pretraining_command_on_a_folder_in_use_is_one_line_and_exit_2(
    tmp_path, capsys, lock_holder
):
    holder = lock_holder(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.run(pretrain.main, ["--preset", "smoke", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err
    assert err.startswith("error: pretraining run folder") and f"process {holder.pid}" in err
    assert not (tmp_path / MANIFEST).exists()  # refused before anything was written


def test_an_evaluation_of_another_checkpoint_is_refused_and_a_redone_one_replaces_its_results(
    tmp_path,
):
    evaluation = {"kind": "evaluation", "preset": "smoke", "seed": 0, "encoder": {"aug": "flip"}}
    first = "runs/mine/a/checkpoint.pt"
    assert _claim(tmp_path, evaluation, "run-1", ("result.json",), first) is False
    (tmp_path / "result.json").write_text("{}")
    # the same checkpoint pretrained again: its old results are stale and go
    assert _claim(tmp_path, evaluation, "run-2", ("result.json",), first) is True
    assert not (tmp_path / "result.json").exists()
    (tmp_path / "result.json").write_text("{}")
    # another checkpoint of the same aug and seed, sent to the same --out: refused, results kept
    other = "runs/mine/b/checkpoint.pt"
    with pytest.raises(RunFolderError) as refused:
        _claim(tmp_path, evaluation, "run-3", ("result.json",), other)
    message = str(refused.value)
    assert first in message and other in message
    assert "choose another folder" in message and (tmp_path / "result.json").exists()
    # a manifest written before manifests named their checkpoint: replaced as before
    write_json(tmp_path / MANIFEST, {"identity": evaluation, "version": "run-2"})
    assert _claim(tmp_path, evaluation, "run-4", ("result.json",), first) is True


Usage = namedtuple("Usage", "total used free")


def test_a_full_disk_names_the_file_the_space_and_that_the_old_file_is_intact(
    tmp_path, monkeypatch
):
    path = tmp_path / "checkpoint.pt"
    files.atomic_save({"weights": list(range(1000))}, path)
    before = path.read_bytes()
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: Usage(10**9, 10**9 - 100, 100))
    with pytest.raises(DiskFullError) as full:
        files.atomic_save({"weights": list(range(2000))}, path)
    message = str(full.value)
    assert f"no space left to write '{path}' (" in message and "0.1 KiB free" in message
    assert "the previous version is intact" in message and "rerun" in message
    assert path.read_bytes() == before and full.value.errno == errno.ENOSPC
    # a disk that fills up during the write (the free space was read too early)
    monkeypatch.undo()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match="the previous version is intact"):
        write_json(path, {"new": True})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_a_full_disk_mid_pretraining_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    # room for the manifest, not for a checkpoint (ResNet-18's weights alone are 45 MB)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: Usage(10**9, 10**9 - 10**5, 10**5))
    argv = ["--preset", "smoke", "--aug", "flip", "--out", str(tmp_path), "--no-progress"]
    argv += ["--train_images", "32", "--batch_size", "16", "--epochs", "1", "--image_size", "8"]
    argv += ["--local_size", "4", "--n_prototypes", "12", "--feat_dim", "8"]
    tic = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        cli.run(pretrain.main, argv)
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err, err
    assert err.startswith(f"error: no space left to write '{tmp_path / 'checkpoint.pt'}'"), err
    assert "nothing was written" in err and "rerun the same command" in err
    assert time.perf_counter() - tic < 120  # the first write fails: the run stops at once


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() if p.is_file() else b"" for p in folder.iterdir()}


def test_a_lock_that_is_a_link_is_refused_and_its_target_left_alone(tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("the user's own file\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).symlink_to(target)
    with pytest.raises(RunFolderError) as refused:
        with folder_lock.locked(run):
            pass
    message = str(refused.value)
    assert "\n" not in message and f"'{run / LOCK}' is a link (to '{target}')" in message
    assert "remove the link" in message
    assert target.read_text() == "the user's own file\n" and (run / LOCK).is_symlink()
    # from the command line: one line, exit 2, before anything is loaded or written
    with pytest.raises(SystemExit) as exited:
        cli.run(pretrain.main, ["--preset", "smoke", "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err and "is a link" in err, err
    assert target.read_text() == "the user's own file\n" and sorted(_contents(run)) == [LOCK]


def test_out_into_a_folder_of_the_users_own_files_is_refused_and_left_untouched(tmp_path, capsys):
    mine = tmp_path / "my-experiment"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": true}')
    (mine / "notes.txt").write_text("do not lose")
    before = _contents(mine)
    with pytest.raises(SystemExit) as exited:
        cli.run(pretrain.main, ["--preset", "smoke", "--out", str(mine), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err, err
    assert f"'{mine}' holds files this project did not write (notes.txt) and no run.json" in err
    assert "--out" in err
    assert _contents(mine) == before  # no manifest, no lock file, nothing overwritten
    with pytest.raises(RunFolderError, match="holds files this project did not write"):
        _claim(mine, IDENTITY, "run-a", ("result.json",))
    assert _contents(mine) == before


def test_a_folder_of_this_projects_files_without_a_manifest_is_taken(tmp_path):
    # a run from before manifests, or cut off before its first write, in any file system's litter
    for name in ("metrics.json", "features-0123abcd.pt", ".DS_Store", ".nfs0001"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "linear-0.1").mkdir()
    (tmp_path / "probes-seed1").mkdir()
    assert _claim(tmp_path, IDENTITY, "run-a") is False
    assert _current(tmp_path, IDENTITY, "run-a")

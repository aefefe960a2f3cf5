"""Atomic files (checkpoints, feature caches, JSON) and checkpoint loading that fails with a clear
message."""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from swavnb.base.errors import DiskFullError
from swavnb.base.layout import CHECKPOINT, resolve, shown

FORMAT = "swavnb-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not one of ours."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` so that ``path`` always holds either the old or the new file.

    The data goes to a temporary file in the same folder, is flushed to disk, and
    replaces ``path`` with one ``os.replace``; a crash (even ``kill -9``) mid-write
    leaves the previous file intact. A full disk raises :class:`DiskFullError`.
    """
    buffer = io.BytesIO()  # serialised first: its size is known, and torch's writer hides ENOSPC
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (as :func:`atomic_save`)."""
    write_bytes(path, json.dumps(payload, indent=1).encode())


def _disk_full(path: Path, needed: int) -> DiskFullError:
    free = shutil.disk_usage(path.parent).free
    previous = "the previous version is intact" if path.exists() else "nothing was written"
    return DiskFullError(
        errno.ENOSPC,
        f"no space left to write '{shown(path)}' ({needed / 2**20:.1f} MiB needed, "
        f"{free / 2**20:.1f} MiB free); {previous}: free some space and rerun the same command "
        "(a run resumes from its last checkpoint)",
    )


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed, then
    one ``os.replace``.

    Raises:
        DiskFullError: the disk (or quota) is full: checked before writing, and for a write that
            fails anyway; ``path`` keeps its previous content.
    """
    path = resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(path.parent).free < len(data):
        raise _disk_full(path, len(data))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # 0o666 less the umask, as for any new file (mkstemp's 0600 hid results from colleagues)
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(path, len(data)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(path)


def _writer_gone(tmp: Path, min_age_s: float = 60.0) -> bool:
    """Whether the writer that named ``tmp`` (``.<name>.<pid>.<hex>.tmp``) is gone: its pid is not
    alive here and the file is older than ``min_age_s`` (another host's writer keeps it fresh)."""
    try:
        pid = int(tmp.name.split(".")[-3])
        age = time.time() - tmp.stat().st_mtime
    except (ValueError, IndexError, OSError):
        return False
    if pid == os.getpid() or age < min_age_s:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of ``path`` that a killed writer left (a SIGKILL mid-save skips every
    clean-up), so repeated kills of a long run do not fill the disk with checkpoint-sized files."""
    try:
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            if _writer_gone(tmp):
                tmp.unlink(missing_ok=True)
    except OSError:  # best effort: the save itself has succeeded
        pass


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` atomically (see :func:`atomic_save`), tagged as one of our checkpoints."""
    atomic_save({"format": FORMAT, **state}, path)


def _how_to_create(path: Path) -> str:
    """The command that writes ``path``: the study's layout names its preset, aug and seed."""
    preset, aug, seed = path.parts[-4:-1] if len(path.parts) >= 4 else ("", "", "")
    if path.name == CHECKPOINT and seed.startswith("seed-") and seed[5:].isdigit():
        return (
            f"run `python -m swavnb.pretrain --preset {preset} --aug {aug} --seed {seed[5:]}` "
            "to create it"
        )
    return "run `python -m swavnb.pretrain` to create it"


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or not a swavnb checkpoint.
    """
    path = resolve(path)
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a folder; pass the checkpoint.pt inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; {_how_to_create(path)}")
    try:
        # weights_only is safe to use: ours hold tensors, numbers, strings and dicts only
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or unreadable ({type(error).__name__}); "
            "delete it and rerun pretraining to start that run over (a run keeps one checkpoint, "
            "so its progress is lost)"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is not a swavnb pretraining checkpoint (expected format {FORMAT})"
        )
    return state

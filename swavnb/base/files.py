"""Atomic files: every file the package writes (checkpoints, feature caches, JSON, CSV, Markdown,
figures, notebooks) goes through :func:`write_bytes`, so a crash or a full disk leaves the previous
file whole, never an empty or cut-off one that a later run could take for a finished result."""

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

from swavnb.base.errors import DamagedFileError, DiskFullError, ReadOnlyFolderError
from swavnb.base.layout import resolve, shown


def _size(n: int) -> str:
    """A file size as a reader takes it in: MiB, or KiB below one MiB."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _disk_full(path: Path, needed: int) -> DiskFullError:
    free = shutil.disk_usage(path.parent).free
    previous = "the previous version is intact" if path.exists() else "nothing was written"
    return DiskFullError(
        errno.ENOSPC,
        f"no space left to write '{shown(path)}' ({_size(needed)} needed, {_size(free)} free); "
        f"{previous}: free some space and rerun the same command "
        "(a run resumes from its last checkpoint)",
    )


# what a folder that cannot be written gives: a read-only mount, or no permission
_READ_ONLY = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
_READ_ONLY[errno.EPERM] = _READ_ONLY[errno.EACCES]
WRITABLE_FIX = "make it writable, or choose another folder"


def raise_if_read_only(folder: str | os.PathLike, error: OSError, fix: str = WRITABLE_FIX) -> None:
    """Raise :class:`ReadOnlyFolderError` (one line naming ``folder`` and ``fix``) from ``error``
    when it says the folder cannot be written; return otherwise."""
    if error.errno in _READ_ONLY and not isinstance(error, ReadOnlyFolderError):
        folder, reason = resolve(folder), _READ_ONLY[error.errno]
        while not folder.exists() and folder != folder.parent:  # the folder that refused
            folder = folder.parent
        raise ReadOnlyFolderError(
            error.errno, f"cannot write in '{shown(folder)}' ({reason}): {fix}"
        ) from error


def check_writable(folder: str | os.PathLike, fix: str = WRITABLE_FIX) -> None:
    """Fail fast where ``folder`` (or, not there yet, the folder it would be made in) cannot be
    written: a probe file is created and removed there, which is what any later write needs.

    Raises:
        ReadOnlyFolderError: one line naming the folder and ``fix``.
    """
    existing = resolve(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = existing / f".swavnb-write-check.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise_if_read_only(existing, error, fix)
        raise
    probe.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed and
    fsynced, then one ``os.replace``; a crash (even ``kill -9``) mid-write leaves the previous
    file intact.

    Args:
        path: the file; its folder is created if missing. A link at ``path`` is replaced, never
            written through.
        data: the whole content.

    Raises:
        DiskFullError: the disk (or quota) is full: checked before writing, and for a write that
            fails anyway; ``path`` keeps its previous content.
        ReadOnlyFolderError: the folder cannot be written (one line naming it).
    """
    path = resolve(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise_if_read_only(path.parent, error)
        raise
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
        raise_if_read_only(path.parent, error)
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_bytes`); a CSV is
    ``write_text(path, frame.to_csv(index=False))``."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (:func:`write_bytes`)."""
    write_bytes(path, json.dumps(payload, indent=1).encode())


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` of ``obj`` to ``path`` atomically (:func:`write_bytes`)."""
    import torch  # here, not at the top: the light commands (lab, results) write files too

    buffer = io.BytesIO()  # serialised first: its size is known, and torch's writer hides ENOSPC
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON in ``path``.

    Args:
        fix: what redoes the file, for the message when it cannot be read.

    Raises:
        DamagedFileError: ``path`` is not readable JSON (cut off, empty, not text): one line naming
            it and ``fix``.
    """
    path = resolve(path)
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise DamagedFileError(
            f"'{shown(path)}' is damaged (not readable JSON: {error}); {fix}"
        ) from error


def readable_json(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file of readable JSON (:func:`read_json` would succeed)."""
    try:
        read_json(path, "")
    except (DamagedFileError, OSError):
        return False
    return True


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

"""The lock of the process writing a run folder (``.lock``): one process writes a folder at a time.

The lock is an ``flock`` on ``folder/.lock``, which also names the holder: the kernel releases it
when the process ends, however it ends, so a lock left by a killed run is taken over without a
word. What a folder holds is :mod:`swavnb.base.run_guard`'s.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from swavnb.base.errors import RunFolderBusy, RunFolderError, in_notebook
from swavnb.base.files import raise_if_read_only
from swavnb.base.layout import LOCK, resolve, shown

_HELD: dict[Path, Any] = {}  # folder -> open lock file, for the locks this process holds


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.get("started", 0)))
    where = f"process {info.get('pid')} on {info.get('host')}"
    return f"{where} ({info.get('command')}, since {started})"


def _command() -> str:
    """This process as a user would recognise it: ``python -m swavnb.study --preset quick``."""
    if in_notebook():
        return "a Jupyter kernel"
    first = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if first.parent.name == "swavnb":
        first = Path(f"python -m swavnb.{first.stem}")
    return " ".join([str(first.name if first.is_absolute() else first), *sys.argv[1:]])[:200]


@contextlib.contextmanager
def locked(
    folder: str | os.PathLike, what: str = "run folder", keep: bool = False
) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs; re-entrant within a process.

    Args:
        keep: hold it on after the block, until :func:`release` or the process ends (a notebook,
            whose writes come cells later). A block that raises releases it either way, and one
            refused (RunFolderError) leaves no lock file it created.

    Raises:
        RunFolderBusy: another live process holds it; the message names that process.
    """
    folder = resolve(folder)
    if folder in _HELD:
        yield
        return
    created = not os.path.lexists(folder / LOCK)
    _HELD[folder] = _acquire(folder, what)
    try:
        yield
    except BaseException as error:
        if created and isinstance(error, RunFolderError):  # a refused folder keeps nothing
            (folder / LOCK).unlink(missing_ok=True)
        release(folder)
        raise
    if not keep:
        release(folder)


def _open_lock(path: Path) -> Any:
    """``path`` opened for reading and writing, created if missing, never through a link: a
    ``.lock`` that is a link (or not a plain file) is refused, so its target is never truncated.

    Raises:
        RunFolderError: ``path`` is a link or not a plain file; nothing was written.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        handle = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise RunFolderError(
            f"'{shown(path)}' is a link (to '{os.readlink(path)}'), not a lock file of this "
            "project: remove the link (its target is left alone) and rerun"
        ) from None
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        raise RunFolderError(f"'{shown(path)}' is not a plain file: remove it and rerun")
    return os.fdopen(handle, "r+")


def _acquire(folder: Path, what: str) -> Any:
    """Take ``folder``'s flock and write the holder into it; returns the open lock file."""
    path = folder / LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = _open_lock(path)  # kept open while the lock is held
    except OSError as error:  # a read-only file system or folder: one line, nothing written
        raise_if_read_only(folder, error)
        raise
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunFolderBusy(
            f"{what} '{shown(folder)}' is in use by {_holder(path)}: wait for it to finish or stop "
            "it, or choose another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    handle.write(json.dumps({**info, "command": _command()}))
    handle.flush()
    return handle


def release(folder: str | os.PathLike) -> None:
    """Give up this process's lock on ``folder`` (held on by :func:`locked`): a notebook whose
    writes are done, its kernel still alive, no longer keeps a study out of the folder. Nothing
    happens where this process holds none."""
    handle = _HELD.pop(resolve(folder), None)
    if handle is not None:
        handle.close()  # releases the flock

"""Keeps one run out of another's folder: the manifest each run folder carries (``run.json``: what
it holds) and the lock of the process writing it (``.lock``).

A run is the pretraining of one encoder, or one evaluation or probe of one encoder. Its
*identity* (kind, preset, encoder, seed, mode, fraction and the settings that change its result)
says which run it is; its *version* says which pretraining of that encoder it came from (the
checkpoint's run id), so the results of a deleted and redone pretraining are recognised as stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from swavnb.base.errors import RunFolderBusy, RunFolderError, in_notebook, setting
from swavnb.base.files import raise_if_read_only, write_json
from swavnb.base.layout import (
    CHECKPOINT,
    CLUSTERS,
    KNN,
    LOCK,
    MANIFEST,
    METRICS,
    RESULT,
    resolve,
    shown,
)

_HELD: dict[Path, Any] = {}  # folder -> open lock file, for the locks this process holds


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), so a manifest compares equal to what
    it was written from."""
    return json.loads(json.dumps(value))


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None when it has none (a new folder)."""
    path = resolve(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderError(
            f"'{shown(path)}' is unreadable ({type(error).__name__}); delete it if the folder's "
            "run is yours, or choose another folder"
        ) from error


def describe(identity: Mapping[str, Any]) -> str:
    """A run's identity in a few words: ``finetune of swav (seed 0) at 10% of the labels``."""
    encoder = identity.get("encoder") or {}
    what = (
        f"{identity.get('aug')} pretraining (seed {identity.get('seed')})"
        if identity.get("kind") == "pretrain"
        else f"{identity.get('mode', identity.get('kind'))} of {encoder.get('aug')} "
        f"(seed {encoder.get('seed')})"
    )
    if "fraction" in identity:
        what += f" at {100 * identity['fraction']:g}% of the labels"
    if identity.get("kind") != "pretrain" and identity.get("seed") != encoder.get("seed"):
        what += f", evaluation seed {identity.get('seed')}"
    return f"{what}, preset {identity.get('preset')}"


def differences(held: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """Where two identities differ, as ``field: held -> asked`` (config fields by name)."""
    out = []
    for key in sorted({*held, *asked} - {"config"}):
        if held.get(key) != asked.get(key):
            out.append(f"{key}: {held.get(key)!r} -> {asked.get(key)!r}")
    configs = held.get("config") or {}, asked.get("config") or {}
    for key in sorted({*configs[0], *configs[1]}):
        if configs[0].get(key) != configs[1].get(key):
            out.append(f"{key}: {configs[0].get(key)!r} -> {configs[1].get(key)!r}")
    return out


def refusal(
    folder: str | os.PathLike, held: Mapping[str, Any], asked: Mapping[str, Any], fix: str
) -> RunFolderError:
    """The one-line error for a folder that holds ``held`` where ``asked`` was to go."""
    changed = "; ".join(differences(held, asked)[:4])
    return RunFolderError(
        f"'{shown(folder)}' holds {describe(held)}, not {describe(asked)} ({changed}): {fix}"
    )


# what a run folder of this project holds: one holding only these and no manifest is a run from
# before manifests, or one cut off before its first write; anything else is not ours to write into.
# Hidden entries never count: the lock, atomic writes' temporaries, and what file systems and
# tools leave anywhere (.nfs*, .DS_Store, .ipynb_checkpoints)
_OWN_FILES = {CHECKPOINT, METRICS, RESULT, KNN, CLUSTERS, MANIFEST}
_OWN_PATTERN = re.compile(
    r"\..*|features-\w+\.pt"  # hidden entries, cached features
    r"|(finetune|linear)-[0-9.e-]+(-seed\d+)?|(probes|knn)(-seed\d+)?"  # evaluation folders
)


def _foreign(folder: Path) -> list[str]:
    """The entries of ``folder`` (if it exists) that this project never writes there, sorted."""
    try:
        names = sorted(entry.name for entry in folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [name for name in names if name not in _OWN_FILES and not _OWN_PATTERN.fullmatch(name)]


def check_identity(
    folder: str | os.PathLike, identity: Mapping[str, Any], fix: str | None = None
) -> dict[str, Any] | None:
    """Refuse when ``folder`` holds another run than ``identity``; return its manifest (None when it
    has none).

    Args:
        fix: what the message advises (default: another folder, named as the user sets it).

    Raises:
        RunFolderError: one line naming what the folder holds, what was asked, and the fix; also
            for a folder without a manifest that holds files this project does not write (the
            user's own folder, whose metrics.json or result.json a run would overwrite).
    """
    held, asked = read_manifest(folder), _plain(dict(identity))
    if held is None and (foreign := _foreign(resolve(folder))):
        raise RunFolderError(
            f"'{shown(folder)}' holds files this project did not write "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}) and no {MANIFEST}: "
            f"choose a new or empty folder with {setting('out')} (or leave it unset so the folder "
            "is derived from the run); nothing was written there"
        )
    if held is not None and held.get("identity") != asked:
        fix = fix or (
            f"choose another folder with {setting('out')} (or leave it unset so the folder is "
            "derived from the run), or delete that folder"
        )
        raise refusal(folder, held.get("identity") or {}, asked, fix)
    return held


def claim(
    folder: str | os.PathLike,
    identity: Mapping[str, Any],
    version: str,
    replaces: Sequence[str] = (),
    source: str | None = None,
) -> bool:
    """Mark ``folder`` as holding the run ``identity`` of ``version`` (the encoder's run id), before
    the run writes there.

    Args:
        replaces: the run's result files: deleted when the folder held the same run of another
            version, so stale results never pass for the new run's, even if it is interrupted.
        source: the checkpoint the run evaluates, as rows show it. Another version from the same
            checkpoint is a redone pretraining (stale results); from another checkpoint it is
            another encoder of the same aug and seed, whose results are refused, not replaced.

    Returns:
        True when the folder held the same run of another version (an earlier pretraining's).

    Raises:
        RunFolderError: the folder holds another run (:func:`check_identity`), or the same run of
            another checkpoint.
        RunFolderBusy: another process holds the folder's lock.
    """
    folder = resolve(folder)
    with locked(folder):
        held = check_identity(folder, identity)
        stale = held is not None and held.get("version") != version
        if stale and None not in (source, held.get("source")) and held["source"] != source:
            raise RunFolderError(
                f"'{shown(folder)}' holds {describe(held['identity'])} of '{held['source']}', not "
                f"of '{source}': choose another folder with {setting('out')}, or delete that "
                "folder to evaluate the new checkpoint there"
            )
        for name in replaces if stale else ():
            (folder / name).unlink(missing_ok=True)
        if held is None or stale:
            manifest = {"identity": _plain(dict(identity)), "version": version}
            write_json(folder / MANIFEST, manifest | ({} if source is None else {"source": source}))
    return stale


def is_current(
    folder: str | os.PathLike,
    identity: Mapping[str, Any],
    version: str,
    fix: str | None = None,
) -> bool:
    """Whether ``folder`` holds ``identity`` of ``version``: its results count as done.

    Raises:
        RunFolderError: the folder holds another run (:func:`check_identity`).
    """
    held = check_identity(folder, identity, fix)
    return held is not None and held.get("version") == version


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
def locked(folder: str | os.PathLike, what: str = "run folder") -> Iterator[None]:
    """Hold ``folder``'s lock while the block writes there; re-entrant within a process.

    The lock is an ``flock`` on ``folder/.lock``, which also names the holder: the kernel releases
    it when the process ends, however it ends, so a lock left by a killed run is taken over
    without a word.

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
    except RunFolderError:
        if created:  # a refused folder keeps nothing of this run, not even its lock file
            (folder / LOCK).unlink(missing_ok=True)
        raise
    finally:
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


def hold(folder: str | os.PathLike, what: str = "run folder") -> None:
    """Take ``folder``'s lock (:func:`locked`) until this process ends: for a notebook, whose
    writes come cells after its folder was claimed, and a kernel may be restarted any time.

    Raises:
        RunFolderBusy: another live process holds it; the message names that process.
    """
    folder = resolve(folder)
    if folder not in _HELD:
        _HELD[folder] = _acquire(folder, what)  # closed by release() or the process's end


def release(folder: str | os.PathLike) -> None:
    """Give up this process's lock on ``folder`` (:func:`hold`, or :func:`locked` at its end): a
    notebook whose writes are done, its kernel still alive, no longer keeps a study out of the
    folder. Nothing happens where this process holds none."""
    handle = _HELD.pop(resolve(folder), None)
    if handle is not None:
        handle.close()  # releases the flock

"""Stopping cleanly: SIGTERM handled as Ctrl-C is, the exit status a shell expects of either, the
child processes of a stopped parent ended, and a child that stops when its parent dies."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

PARENT_ENV = "SWAVNB_PARENT_PID"  # set for a child that must stop when this process dies
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled as Ctrl-C is (a KeyboardInterrupt), so ``finally`` blocks and
    context managers run, locks are released and no file is left half-written."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def handle_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (nothing happens when
    called from another thread: Python handles signals there only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_status(stop: KeyboardInterrupt) -> int:
    """A shell's status for a process ended by a signal: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM ignored for the block (a bounded clean-up that a second Ctrl-C must not
    cut short), then handled as before; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def child_processes() -> set[int]:
    """The pids of this process's children (a kernel papermill started, a worker, a benchmark):
    psutil where installed, else Linux's /proc; an empty set where neither is."""
    try:
        import psutil  # installed with Jupyter's kernel; a headless node may lack it
    except ImportError:
        pass
    else:
        return {child.pid for child in psutil.Process().children()}
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the name in parentheses may hold spaces: the fields after it are state, ppid, ...
            if int(stat.read_text().rpartition(")")[2].split()[1]) == os.getpid():
                pids.add(int(stat.parent.name))
    return pids


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has ended: its parent has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_processes(pids: Iterable[int], grace_s: float = 10.0) -> list[int]:
    """SIGTERM to each of ``pids``, then SIGKILL to any still running after ``grace_s``; returns
    those that were running. SIGINT and SIGTERM to this process wait meanwhile."""
    with signals_held():
        ended = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
                ended.append(pid)
        deadline = time.monotonic() + grace_s
        while any(_running(pid) for pid in ended) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in ended:
            if _running(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    return ended


def stop_with_parent(parent: int, poll_s: float = 1.0, grace_s: float = 30.0) -> None:
    """Stop this process (as SIGTERM does: :func:`handle_sigterm`) when ``parent`` dies, however it
    dies (``kill -9`` included), so no step runs on unseen, holding its folder's lock.

    Linux's parent-death signal stops it at once; a thread that checks ``os.getppid()`` every
    ``poll_s`` is the fallback elsewhere, and ends the process outright if it has not stopped
    ``grace_s`` after its SIGTERM.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGTERM)

    # a parent already gone (before the prctl) is seen at the first check, without a wait
    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()

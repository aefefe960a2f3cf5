"""Which version of swavnb's code a process runs: the git commit of its source checkout, for the
records a run leaves (``metrics.json``, an exported encoder's model card)."""

from __future__ import annotations

import subprocess
from pathlib import Path

_SOURCE_CHECKOUT = Path(__file__).resolve().parents[2]  # swavnb/base/commit.py
DIRTY = "+dirty"  # appended when tracked files differ from the commit


def _git(*args: str) -> str | None:
    """``git`` run in the source checkout: its output, or None without git or a checkout."""
    try:
        done = subprocess.run(
            # no optional locks: never take the index lock a user's own git command may need
            ["git", "--no-optional-locks", "-C", str(_SOURCE_CHECKOUT), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_commit() -> str | None:
    """The commit (40 hex digits) of the swavnb source this process imported, with
    :data:`DIRTY` appended when tracked files differ from it.

    Returns:
        None for code outside a git checkout of swavnb (an installed package, a copy without
        ``.git``, no git on the machine): a record then says the commit is unknown.
    """
    if not (_SOURCE_CHECKOUT / "pyproject.toml").is_file():
        return None
    top = _git("rev-parse", "--show-toplevel")
    # a package installed inside some other repository (a venv in a project) is not its checkout
    if top is None or Path(top).resolve() != _SOURCE_CHECKOUT:
        return None
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return head + (DIRTY if changes else "")

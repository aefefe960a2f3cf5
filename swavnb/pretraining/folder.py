"""A pretraining's run folder: which run it holds (:func:`pretraining_identity`, stored in the
checkpoint's config and in ``run.json``), claimed once under its lock before any work, and whether
that run is finished."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from swavnb.base import folder_lock, run_guard
from swavnb.base.checkpoint import load_checkpoint
from swavnb.base.config import run_fields
from swavnb.base.files import readable_json
from swavnb.base.layout import CHECKPOINT, METRICS
from swavnb.pretraining.config import PretrainConfig

RESULTS = (CHECKPOINT, METRICS)  # what a pretraining leaves from its first save on


def pretraining_identity(config: PretrainConfig) -> dict[str, Any]:
    """Which pretraining ``config`` is: its fields that change the run."""
    return {
        "kind": "pretrain",
        "preset": config.preset,
        "aug": config.aug,
        "seed": config.seed,
        "config": run_fields(config),
    }


def saved_state(folder: Path) -> dict[str, Any] | None:
    """The checkpoint in ``folder``, or None before its first save."""
    path = folder / CHECKPOINT
    return load_checkpoint(path) if path.exists() else None


def _recorded(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Which pretraining a checkpoint is, for a folder without its manifest."""
    return None if state is None else pretraining_identity(PretrainConfig(**state["config"]))


@contextlib.contextmanager
def claimed(folder: Path, config: PretrainConfig) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """Hold ``folder`` for the pretraining ``config`` while the block trains: its lock, then the
    one check of what it holds and its manifest; yields the checkpoint to resume (None for a new
    run) and the run's id. Under torchrun rank 0 holds the folder for all.

    Raises:
        RunFolderError: the folder holds another run (:func:`swavnb.base.run_guard.check`).
        RunFolderBusy: another process is writing it.
    """
    if os.environ.get("RANK", "0") != "0":
        yield saved_state(folder), ""
        return
    with folder_lock.locked(folder, "pretraining run folder"):
        state = saved_state(folder)
        run_id = (state or {}).get("run_id") or secrets.token_hex(8)
        identity, recorded = pretraining_identity(config), _recorded(state)
        run_guard.claim(folder, identity, run_id, (METRICS,), results=RESULTS, recorded=recorded)
        yield state, run_id


def is_finished(folder: Path, config: PretrainConfig, fix: str) -> bool:
    """Whether ``folder`` holds the finished pretraining ``config`` (a missing or damaged
    ``metrics.json`` is not: the run rewrites it from its checkpoint).

    Raises:
        RunFolderError: the folder holds another run; ``fix`` is what the message advises.
    """
    state = saved_state(folder)
    identity = pretraining_identity(config)
    run_guard.check(folder, identity, RESULTS, fix=fix, recorded=_recorded(state))
    return state is not None and bool(state["finished"]) and readable_json(folder / METRICS)

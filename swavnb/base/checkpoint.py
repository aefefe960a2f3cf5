"""Checkpoints: written atomically (:mod:`swavnb.base.files`) and loaded with a clear message when
missing, damaged or foreign."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from swavnb.base.files import atomic_save
from swavnb.base.layout import CHECKPOINT, resolve

FORMAT = "swavnb-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not one of ours."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` atomically (:func:`swavnb.base.files.atomic_save`), tagged as one of our
    checkpoints."""
    atomic_save({"format": FORMAT, **state}, path)


def _how_to_create(path: Path) -> str:
    """The command that writes ``path``: the study's layout names its preset, aug and seed."""
    preset, aug, seed = path.parts[-4:-1] if len(path.parts) >= 4 else ("", "", "")
    swept = path.parts[-5] if len(path.parts) >= 6 else ""
    if swept.startswith("sweep-"):  # <preset>/sweep-<field>/<value>/<aug>/seed-<s>
        preset, field = path.parts[-6], swept.removeprefix("sweep-")
        how = "--budget E1,E2,..." if field == "epochs" else f"--sweep {field}=v1,v2,..."
        return f"run `python -m swavnb.study --preset {preset} --augs {aug} {how}` to create it"
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

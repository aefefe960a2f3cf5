"""Which folder an evaluation or probes run of an encoder writes, and what that folder's manifest
says it holds (:mod:`swavnb.base.run_guard`), for the notebooks, the command line and the study
alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from swavnb.base import run_guard
from swavnb.base.layout import CLUSTERS, KNN, RESULT, evaluation_folder, resolve
from swavnb.evaluation.features import Encoder, load_encoder, read_encoder
from swavnb.evaluation.records import intact
from swavnb.pretraining.config import FinetuneConfig, as_dict

# settings that change where and how fast an evaluation runs, never its result
RUNTIME_FIELDS = frozenset({"device", "amp", "data_root", "channels_last"})
KINDS = ("finetune", "linear", "probes", "knn")
# knn: the k-NN rows alone, without the probes' figures and clusters (a sweep's cheap evaluation)
_RESULTS = {"finetune": (RESULT,), "linear": (RESULT,), "probes": (KNN, CLUSTERS), "knn": (KNN,)}
_FOLDERS = {"probes": "probes", "knn": "knn"}


def evaluation_identity(
    encoder: Encoder, kind: str, config: FinetuneConfig, fraction: float | None = None
) -> dict[str, Any]:
    """What the folder of an evaluation (``kind`` finetune / linear, at ``fraction``) or of the
    probes (``kind`` probes) of ``encoder`` holds."""
    identity = {
        "kind": kind if kind in _FOLDERS else "evaluation",
        "preset": config.preset,
        "seed": config.seed,
        "encoder": encoder.identity,
        "config": {k: v for k, v in as_dict(config).items() if k not in RUNTIME_FIELDS},
    }
    if kind not in _FOLDERS:
        identity.update(mode=kind, fraction=fraction)
    return identity


def own_seed(encoder: Encoder, seed: int) -> int | None:
    """``seed`` when it is not the encoder's own (the folder's name then says so), else None."""
    return None if seed == encoder.seed else seed


def derived_folder(encoder: Encoder, kind: str, seed: int, fraction: float | None = None) -> Path:
    """The folder the study and the notebooks give this run: ``<mode>-<fraction>`` or ``probes`` in
    the encoder's folder."""
    if kind in _FOLDERS:
        suffix = "" if own_seed(encoder, seed) is None else f"-seed{seed}"
        return encoder.folder / f"{_FOLDERS[kind]}{suffix}"
    return evaluation_folder(encoder.folder, kind, fraction, own_seed(encoder, seed))


def open_evaluation(
    checkpoint: str | os.PathLike | None,
    kind: str,
    config: FinetuneConfig,
    out_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike = "runs",
    fraction: float | None = None,
    hold: bool = False,
) -> tuple[nn.Module, Encoder, Path]:
    """Load the encoder and claim the run's folder before any work.

    Args:
        checkpoint: a pretraining ``checkpoint.pt``, or None / ``"none"`` for random init.
        kind: finetune | linear (at ``fraction``) | probes.
        out_dir: None or '' derives it (:func:`derived_folder`).
        hold: keep the folder's lock until the process ends (a notebook, writing cells later).

    Returns:
        The backbone, the :class:`Encoder` it is, and the run's folder (absolute).

    Raises:
        RunFolderError: the folder holds another run; RunFolderBusy: another process writes it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown evaluation {kind!r}; choose one of {', '.join(KINDS)}")
    backbone, encoder = load_encoder(
        checkpoint, config.seed, config.image_size, config.preset, runs_dir
    )
    out = resolve(out_dir or derived_folder(encoder, kind, config.seed, fraction))
    identity = evaluation_identity(encoder, kind, config, fraction)
    run_guard.claim(out, identity, encoder.run_id, _RESULTS[kind], encoder.checkpoint)
    if hold:  # after the claim, so a refused folder is never left locked
        run_guard.hold(out, f"{kind} folder")
    return backbone, encoder, out


def is_done(
    checkpoint: str | os.PathLike | None,
    kind: str,
    config: FinetuneConfig,
    runs_dir: str | os.PathLike = "runs",
    fraction: float | None = None,
    fix: str | None = None,
) -> bool:
    """Whether the derived folder holds this run's results, sound (:func:`intact`) and of the
    encoder's present pretraining (the results of a deleted and redone one are stale: not done).

    Raises:
        RunFolderError: the folder holds another run (another encoder, seed or config).
    """
    encoder = read_encoder(checkpoint, config.seed, config.preset, runs_dir)
    folder = derived_folder(encoder, kind, config.seed, fraction)
    # a damaged or impossible result is not done: the step redoes it
    if not all(intact(folder / name) for name in _RESULTS[kind]):
        run_guard.check_identity(folder, evaluation_identity(encoder, kind, config, fraction), fix)
        return False
    identity = evaluation_identity(encoder, kind, config, fraction)
    return run_guard.is_current(folder, identity, encoder.run_id, fix)

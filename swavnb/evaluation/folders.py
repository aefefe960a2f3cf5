"""Which folder an evaluation or probes run of an encoder writes, and which run that folder holds
(:func:`evaluation_identity`, stored in its ``run.json``), for the notebooks, the command line and
the study alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from swavnb.base import folder_lock, run_guard
from swavnb.base.config import run_fields
from swavnb.base.errors import setting
from swavnb.base.layout import CLUSTERS, KNN, RESULT, SCRATCH, evaluation_folder, resolve
from swavnb.evaluation.config import FinetuneConfig
from swavnb.evaluation.features import Encoder, load_encoder, read_encoder
from swavnb.evaluation.records import intact

KINDS = ("finetune", "linear", "probes", "knn")
# knn: the k-NN rows alone, without the probes' figures and clusters (a sweep's cheap evaluation)
_RESULTS = {"finetune": (RESULT,), "linear": (RESULT,), "probes": (KNN, CLUSTERS), "knn": (KNN,)}
_FOLDERS = {"probes": "probes", "knn": "knn"}


def evaluation_identity(
    encoder: Encoder, kind: str, config: FinetuneConfig, fraction: float | None = None
) -> dict[str, Any]:
    """Which run an evaluation (``kind`` finetune / linear, at ``fraction``) or the probes
    (``kind`` probes, knn) of ``encoder`` are: the fields of ``config`` that change the run."""
    identity = {
        "kind": kind if kind in _FOLDERS else "evaluation",
        "preset": config.preset,
        "seed": config.seed,
        "encoder": encoder.identity,
        "config": run_fields(config),
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
        hold: keep the folder's lock until the process ends (a notebook, writing cells later) or
            :func:`swavnb.base.folder_lock.release`.

    Returns:
        The backbone, the :class:`Encoder` it is, and the run's folder (absolute): a folder whose
        manifest names another run that stopped before any result is taken over
        (:mod:`swavnb.base.run_guard`).

    Raises:
        RunFolderError: the folder holds another run; RunFolderBusy: another process writes it.
        ValueError: the encoder was pretrained with another preset (:func:`check_preset`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown evaluation {kind!r}; choose one of {', '.join(KINDS)}")
    backbone, encoder = load_encoder(
        checkpoint, config.seed, config.image_size, config.preset, runs_dir
    )
    check_preset(encoder, config)
    identity = evaluation_identity(encoder, kind, config, fraction)
    out = resolve(out_dir) if out_dir else derived_folder(encoder, kind, config.seed, fraction)
    results = _RESULTS[kind]
    with folder_lock.locked(out, f"{kind} folder", keep=hold):
        run_guard.claim(out, identity, encoder.run_id, results, encoder.checkpoint, results=results)
    return backbone, encoder, out


def check_preset(encoder: Encoder, config: FinetuneConfig) -> None:
    """Refuse to evaluate an encoder under another preset than its pretraining's: the row would
    enter that preset's tables (its folder's) with another preset's settings.

    Raises:
        ValueError: naming both presets and the setting to change.
    """
    if encoder.aug != SCRATCH and encoder.preset != config.preset:
        raise ValueError(
            f"'{encoder.checkpoint}' was pretrained with preset {encoder.preset}, but this "
            f"evaluation's is {config.preset}: its row would enter the {encoder.preset} "
            f"tables with {config.preset}'s settings; set {setting('preset')} {encoder.preset}"
        )


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

    Args:
        fix: what a refusal advises (default: :func:`swavnb.base.errors.another_folder`).

    Raises:
        RunFolderError: the folder holds another run (another encoder, seed or config).
    """
    encoder = read_encoder(checkpoint, config.seed, config.preset, runs_dir)
    folder = derived_folder(encoder, kind, config.seed, fraction)
    identity, results = evaluation_identity(encoder, kind, config, fraction), _RESULTS[kind]
    held = run_guard.check(folder, identity, results, encoder.checkpoint, fix)
    # a missing, damaged or impossible result is not done: the step redoes it
    done = all(intact(folder / name) for name in results)
    return done and held is not None and held.get("version") == encoder.run_id

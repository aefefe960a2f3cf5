"""Where a study's files live: the project root, the run-folder rule and the names of the files in
them.

Every relative path the package takes (runs, results, figures, data root, checkpoints) is taken from
the project root, whatever the working directory: a JupyterLab kernel runs in ``notebooks/``,
papermill and ``python -m swavnb.*`` wherever they were started. The root is ``$SWAVNB_ROOT`` if
set, else the source checkout this package was imported from, else (an installed package) the
working directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

ROOT_ENV = "SWAVNB_ROOT"
CHECKPOINT = "checkpoint.pt"  # weights, queue, RNG and (until finished) optimiser states
METRICS = "metrics.json"  # a pretraining run's per-epoch loss, lr, speed and prototype usage
RESULT = "result.json"  # one label-fraction evaluation's row
KNN = "knn.json"  # one encoder's k-NN rows
CLUSTERS = "clusters.json"  # one encoder's cluster-quality rows
FEATURES = "features-{key}.pt"  # an encoder's frozen features, cached beside its weights
MANIFEST = "run.json"  # what a run folder holds (swavnb.base.run_guard)
LOCK = ".lock"  # held by the process writing a run folder (swavnb.base.run_guard)
ENCODER = "encoder.safetensors"  # an exported backbone: a torchvision resnet18 state dict
CARD = "README.md"  # an exported backbone's model card, beside it
CARD_JSON = "model_card.json"  # the same card's facts, for programs
SCRATCH = "scratch"  # the aug name of the random-init encoder, as in results.csv
NO_CHECKPOINT = "none"  # what a notebook or CLI takes for "random init"
CUSTOM = "custom"  # <runs>/<preset>/custom/: runs set otherwise than the preset, not the study's
_SOURCE_CHECKOUT = Path(__file__).resolve().parents[2]  # swavnb/base/layout.py


def project_root() -> Path:
    """The folder relative paths are taken from (see the module docstring)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    if (_SOURCE_CHECKOUT / "pyproject.toml").is_file() and (_SOURCE_CHECKOUT / "swavnb").is_dir():
        return _SOURCE_CHECKOUT
    return Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """``path`` as an absolute path: ``~`` expanded, a relative one taken from
    :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def shown(path: str | os.PathLike) -> str:
    """``path`` as a notebook parameter or a log line shows it: relative inside the project, else
    absolute."""
    path = resolve(path)
    root = project_root()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def is_random_init(checkpoint: str | os.PathLike | None) -> bool:
    return checkpoint in (None, "", NO_CHECKPOINT)


def run_folder(
    preset: str,
    aug: str,
    seed: int = 0,
    runs_dir: str | os.PathLike = "runs",
    changes: Mapping[str, object] | None = None,
) -> Path:
    """``<runs_dir>/<preset>/<aug>/seed-<seed>``: one encoder's pretraining run (or random init's
    folder) and its evaluations; ``runs_dir`` '' (a notebook's default) is ``runs``.

    With ``changes`` (fields set otherwise than the preset), ``<runs_dir>/<preset>/custom/
    <field>-<value>__.../<aug>/seed-<seed>``: such a run never takes the study's folder.
    """
    root = resolve(runs_dir or "runs") / preset
    if changes:
        root = root / CUSTOM / "__".join(f"{k}-{v}" for k, v in sorted(changes.items()))
    return root / aug / f"seed-{seed}"


def is_study_run(relative: str | os.PathLike) -> bool:
    """Whether a path relative to ``<runs_dir>/<preset>`` is inside the study's own encoders, not a
    sweep's (``sweep-<field>/``) or a custom run's (``custom/``)."""
    top = Path(relative).parts[0] if Path(relative).parts else ""
    return not (top.startswith("sweep-") or top == CUSTOM)


def sweep_folder(
    preset: str,
    field: str,
    value: object,
    aug: str,
    seed: int = 0,
    runs_dir: str | os.PathLike = "runs",
) -> Path:
    """``<runs_dir>/<preset>/sweep-<field>/<value>/<aug>/seed-<seed>``: one value of a
    hyperparameter sweep, outside the study's own encoders."""
    return (
        resolve(runs_dir or "runs") / preset / f"sweep-{field}" / f"{value}" / aug / f"seed-{seed}"
    )


def encoder_checkpoint(
    preset: str, aug: str, seed: int = 0, runs_dir: str | os.PathLike = "runs"
) -> str:
    """The checkpoint a notebook or the study evaluates for encoder ``aug`` (``none`` for random
    init), shown from the project root."""
    if aug == SCRATCH:
        return NO_CHECKPOINT
    return shown(run_folder(preset, aug, seed, runs_dir) / CHECKPOINT)


def encoder_folder(
    checkpoint: str | os.PathLike | None,
    preset: str,
    seed: int = 0,
    runs_dir: str | os.PathLike = "runs",
) -> Path:
    """Where an encoder's evaluations go: its checkpoint's folder, or
    ``<runs_dir>/<preset>/scratch/seed-<seed>`` for random init."""
    return (
        run_folder(preset, SCRATCH, seed, runs_dir)
        if is_random_init(checkpoint)
        else resolve(checkpoint).parent
    )


def evaluation_folder(encoder: Path, mode: str, fraction: float, seed: int | None = None) -> Path:
    """One label-fraction evaluation: ``<encoder>/<mode>-<fraction>``, with ``-seed<seed>`` when
    its seed is not the encoder's own (``seed`` None)."""
    return encoder / (f"{mode}-{fraction:g}" + ("" if seed is None else f"-seed{seed}"))


def probes_folder(encoder: Path, seed: int | None = None) -> Path:
    """An encoder's probes: ``<encoder>/probes``, with ``-seed<seed>`` as for evaluations."""
    return encoder / ("probes" + ("" if seed is None else f"-seed{seed}"))


# what a run folder may hold without a manifest (swavnb.base.run_guard): hidden entries (the lock,
# atomic writes' temporaries, file systems' litter), our files, cached features, evaluation folders
_OWN_FILES = {CHECKPOINT, METRICS, RESULT, KNN, CLUSTERS, MANIFEST}
_OWN_PATTERN = re.compile(
    r"\..*|features-\w+\.pt|(finetune|linear)-[0-9.e-]+(-seed\d+)?|(probes|knn)(-seed\d+)?"
)


def foreign_entries(folder: Path) -> list[str]:
    """The entries of ``folder`` (if it exists) that this project never writes there, sorted."""
    names = sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []
    return [name for name in names if name not in _OWN_FILES and not _OWN_PATTERN.fullmatch(name)]


def feature_caches(encoder: Path) -> list[Path]:
    """The frozen features cached in an encoder's folder (:data:`FEATURES`), of any key."""
    return sorted(encoder.glob(FEATURES.format(key="*")))


def figures_folder(preset: str, figures_dir: str | os.PathLike = "figures") -> Path:
    """``<figures_dir>/<preset>``; ``figures_dir`` '' is ``figures``."""
    return resolve(figures_dir or "figures") / preset


def results_folder(preset: str, results_dir: str | os.PathLike = "results") -> Path:
    """``<results_dir>/<preset>``; ``results_dir`` '' is ``results``."""
    return resolve(results_dir or "results") / preset


def notebooks_folder() -> Path:
    """The study's source notebooks."""
    return project_root() / "notebooks"

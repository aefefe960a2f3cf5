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
from pathlib import Path

ROOT_ENV = "SWAVNB_ROOT"
CHECKPOINT = "checkpoint.pt"  # a pretraining run's weights, optimiser, queue and RNG states
METRICS = "metrics.json"  # a pretraining run's per-epoch loss, lr, speed and prototype usage
RESULT = "result.json"  # one label-fraction evaluation's row
KNN = "knn.json"  # one encoder's k-NN rows
CLUSTERS = "clusters.json"  # one encoder's cluster-quality rows
SCRATCH = "scratch"  # the aug name of the random-init encoder, as in results.csv
NO_CHECKPOINT = "none"  # what a notebook or CLI takes for "random init"
_SOURCE_CHECKOUT = Path(__file__).resolve().parents[1]


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


def run_folder(preset: str, aug: str, runs_dir: str | os.PathLike = "runs") -> Path:
    """``<runs_dir>/<preset>/<aug>``: one encoder's pretraining run and its evaluations."""
    return resolve(runs_dir) / preset / aug


def encoder_folder(
    checkpoint: str | os.PathLike | None, preset: str, runs_dir: str | os.PathLike = "runs"
) -> Path:
    """Where an encoder's evaluations go: its checkpoint's folder, or
    ``<runs_dir>/<preset>/scratch``."""
    return (
        run_folder(preset, SCRATCH, runs_dir)
        if is_random_init(checkpoint)
        else resolve(checkpoint).parent
    )


def evaluation_folder(encoder: Path, mode: str, fraction: float) -> Path:
    """One label-fraction evaluation: ``<encoder>/<mode>-<fraction>``."""
    return encoder / f"{mode}-{fraction:g}"


def probes_folder(encoder: Path) -> Path:
    return encoder / "probes"


def figures_folder(preset: str, figures_dir: str | os.PathLike = "figures") -> Path:
    return resolve(figures_dir) / preset


def results_folder(preset: str, results_dir: str | os.PathLike = "results") -> Path:
    return resolve(results_dir) / preset


def notebooks_folder() -> Path:
    """The study's source notebooks."""
    return project_root() / "notebooks"

"""Errors a run stops with, and how a message names a setting; the command line turns each error
into one line naming the fix."""

from __future__ import annotations

import sys


class DatasetNotFoundError(FileNotFoundError):
    """CIFAR-100 is neither on disk nor downloadable."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last checkpoint is kept."""


class CompileError(RuntimeError):
    """``torch.compile`` could not build the network here (no C++ compiler, no Triton, an
    unsupported platform)."""


class RunFolderError(ValueError):
    """A run folder holds another run than the one asked to write (or skip) there."""


class RunFolderBusy(RuntimeError):
    """Another live process is writing the same run folder."""


class DamagedExportError(ValueError):
    """An ``--import`` folder's archive or model parts cannot be read back."""


class EncoderFileError(ValueError):
    """An exported encoder (``encoder.safetensors``) is damaged, truncated or not one of ours."""


class ExportFolderError(ValueError):
    """An export folder holds something other than this checkpoint's exported encoder."""


class DamagedFileError(ValueError):
    """A file this project wrote is unreadable or holds impossible values; the message names it and
    what redoes it."""


class DiskFullError(OSError):
    """No space left for a file; the previous version of the file is intact."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" prefix
        return self.strerror or super().__str__()


class ReadOnlyFolderError(OSError):
    """A folder cannot be written (a read-only file system, no permission); nothing was written."""

    def __str__(self) -> str:  # the message alone, as DiskFullError's
        return self.strerror or super().__str__()


# the notebooks' names for the command-line flags whose names differ
_NOTEBOOK_NAMES = {"out": "out_dir", "cache": "cache_dir"}


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (JupyterLab, papermill), not a command line.

    Looked up, never imported: a process that has not imported IPython is no kernel.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def setting(flag: str) -> str:
    """How a message names a setting: ``--out`` on the command line, the ``out_dir`` parameter in a
    notebook, so the fix names what the user set."""
    if in_notebook():
        return f"the `{_NOTEBOOK_NAMES.get(flag, flag)}` parameter"
    return f"--{flag}"


def another_folder() -> str:
    """What a refusal of a folder that holds another run advises, true whether the folder was set
    or derived (a derived one is where the run's folder always is: leaving it unset cannot help)."""
    return f"choose another folder with {setting('out')}, or move that folder away"


class StudyRowsError(ValueError):
    """The study's result rows cannot be averaged as they are: two rows for one run, or a cell
    whose seeds were evaluated differently."""

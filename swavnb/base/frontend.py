"""Who runs a notebook's cells: a person in JupyterLab, or papermill, nbclient, nbval and the study,
which execute it unattended. What is worth showing live (a progress bar) depends on it."""

from __future__ import annotations

import sys

# a notebook's ``progress`` parameter: auto decides by who runs the cell
PROGRESS_CHOICES = ("auto", "true", "false")


def interactive_kernel() -> bool:
    """Whether the cell running now was run by a person: a Jupyter kernel whose current request
    names its cell (``cellId`` in the request's metadata), as JupyterLab and Notebook 7 send it;
    papermill, nbclient and nbval send no such metadata, and a script is no kernel.

    Looked up, never imported: a process that has not imported IPython is no kernel.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    get_parent = getattr(getattr(shell, "kernel", None), "get_parent", None)
    if get_parent is None:
        return False
    request = get_parent() or {}
    return "cellId" in (request.get("metadata") or {})


def show_progress(setting: str | bool) -> bool:
    """A notebook's ``progress`` parameter as a decision: ``auto`` shows the live bar when a person
    runs the cell (:func:`interactive_kernel`) and keeps unattended runs' outputs small;
    ``true`` / ``false`` (or a bool) decide outright.

    Raises:
        ValueError: any other value, naming the choices.
    """
    if isinstance(setting, bool):
        return setting
    choice = str(setting).strip().lower()
    if choice not in PROGRESS_CHOICES:
        raise ValueError(f"progress {setting!r}: choose one of {', '.join(PROGRESS_CHOICES)}")
    return interactive_kernel() if choice == "auto" else choice == "true"

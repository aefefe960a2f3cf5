"""Exploring beside publishing: JupyterLab works on copies in ``lab/``, and ``notebooks/`` holds the
published notebooks, which only the study's publish step (``python -m swavnb.study --publish``)
writes.

``make lab`` copies each published notebook into ``lab/`` once, without its outputs (a copy that is
there, the user's, is never replaced), and opens JupyterLab on the project root, in ``lab/``.
``make setup`` installs the project's kernel and a Jupyter server extension that refuses any save
over a published notebook, so JupyterLab's autosave cannot rewrite one that a user opens.

``python -m swavnb.study.lab`` makes the copies; ``--install`` installs the kernel and the guard
into this Python's environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from swavnb.base.files import write_json, write_text
from swavnb.base.layout import notebooks_folder, project_root, shown

LAB = "lab"  # the working copies' folder, in the project root (git-ignored)
KERNEL = "swavnb"  # the kernel the notebooks name
_COPY_KEY = "swavnb"  # a working copy's metadata: which published notebook, at which bytes
# the server extension, by its import name (not __name__: `python -m` runs this as __main__)
_MODULE = "swavnb.study.lab"
_EXTENSION = {"ServerApp": {"jpserver_extensions": {_MODULE: True}}}


def kernel_display_name(prefix: str | Path = sys.prefix) -> str:
    """What JupyterLab shows for the project's kernel: ``swavnb (.venv)`` for make setup's venv."""
    return f"{KERNEL} ({Path(prefix).name})"


def kernelspec() -> dict[str, str]:
    """The kernelspec metadata of a published notebook: the project's kernel as make setup names
    it (JupyterLab shows the installed kernel's own name)."""
    return {"name": KERNEL, "display_name": kernel_display_name(".venv"), "language": "python"}


def lab_folder() -> Path:
    """The working copies: ``lab/`` in the project root."""
    return project_root() / LAB


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def working_copy(published: Path) -> Any:
    """A published notebook as a working copy: no outputs, execution counts or run metadata, so
    what it shows is what its user runs; its metadata names the published file and its digest."""
    import nbformat

    notebook = nbformat.read(published, as_version=4)
    for cell in notebook.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    for key in ("papermill", "widgets"):
        notebook.metadata.pop(key, None)
    notebook.metadata[_COPY_KEY] = {"published": published.name, "sha256": _digest(published)}
    return notebook


def working_copies(source: str | Path | None = None, dest: str | Path | None = None) -> list[str]:
    """Copy each published notebook of ``source`` (default ``notebooks/``) into ``dest`` (default
    ``lab/``) as a :func:`working_copy`, unless a copy of that name is there: the user's, kept.

    Returns:
        One line per notebook: made, or kept (and whether the published one changed since).
    """
    import nbformat

    source = Path(source) if source else notebooks_folder()
    dest = Path(dest) if dest else lab_folder()
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for published in sorted(source.glob("*.ipynb")):
        target = dest / published.name
        if not target.exists():
            write_text(target, nbformat.writes(working_copy(published)) + "\n")  # as nbformat.write
            lines.append(f"{shown(target)}: a working copy of {shown(published)}, without outputs")
            continue
        try:
            copied = json.loads(target.read_text()).get("metadata", {}).get(_COPY_KEY, {})
        except (ValueError, AttributeError):  # not a notebook we can read: still the user's
            copied = {}
        changed = copied.get("sha256") not in (None, _digest(published))
        lines.append(
            f"{shown(target)}: yours, kept"
            + (
                f" ({shown(published)} has changed since it was copied: delete yours to take "
                "the new one)"
                if changed
                else ""
            )
        )
    return lines


def refuse_published(model: Any, path: str, contents_manager: Any, **kwargs: Any) -> None:
    """A Jupyter server pre-save hook: a save over a published notebook (``notebooks/*.ipynb`` of
    this project) is refused with a message naming the working copy, so JupyterLab shows the
    refusal instead of rewriting the published outputs.

    Raises:
        tornado.web.HTTPError: 403, for a published notebook.
    """
    from tornado.web import HTTPError

    target = (Path(contents_manager.root_dir) / path.lstrip("/")).resolve()
    if target.suffix != ".ipynb" or target.parent != notebooks_folder().resolve():
        return
    raise HTTPError(
        403,
        f"{shown(target)} is a published notebook: only `python -m swavnb.study --publish` writes "
        f"notebooks/. Explore in {LAB}/{target.name} (`make lab` makes it), or save this one "
        "elsewhere with File > Save Notebook As",
    )


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """This module as a Jupyter server extension (enabled by :func:`install`)."""
    return [{"module": _MODULE}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Registers :func:`refuse_published` with the server's contents manager."""
    server_app.contents_manager.register_pre_save_hook(refuse_published)


def install(prefix: str | Path = sys.prefix) -> list[Path]:
    """Install the project's kernel (:data:`KERNEL`, this Python) and enable the server extension
    that guards ``notebooks/``, both under ``prefix`` (a venv's, as ``--sys-prefix`` does).

    Returns:
        The kernel's folder and the extension's config file.
    """
    from ipykernel.kernelspec import install as install_kernel

    kernel = install_kernel(
        kernel_name=KERNEL, display_name=kernel_display_name(prefix), prefix=str(prefix)
    )
    config = Path(prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / f"{KERNEL}.json"
    write_json(config, _EXTENSION)
    return [Path(kernel), config]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swavnb.study.lab",
        description="copy the published notebooks into lab/ for JupyterLab (a copy there is kept)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="instead install the swavnb kernel and the guard of notebooks/ into this environment",
    )
    args = parser.parse_args(argv)
    if args.install:
        for path in install():
            print("installed:", path)
        return 0
    for line in working_copies():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

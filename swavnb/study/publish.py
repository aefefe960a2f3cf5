"""Publishing: one representative run's executed notebooks become the study's notebooks, with the
parameter values their outputs came from."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from swavnb.base.files import write_text
from swavnb.base.layout import notebooks_folder, resolve

# the run whose executed notebooks --publish copies into notebooks/
PUBLISHED = {
    "pretrain": "pretrain-swav-seed0",
    "finetune": "finetune-swav-seed0-finetune-0.1",
    "probes": "probes-swav-seed0",
    "results": "results",
}


def bake_parameters(notebook: Any) -> Any:
    """Fold papermill's injected-parameters cell into the ``parameters`` cell and drop it.

    A published notebook's parameters cell then holds the values its outputs came from, so what a
    reader sees is what ran, and what a JupyterLab user edits there is what runs (an injected cell
    below it would override every edit). Only the values change; types and help comments stay.
    """
    cells = notebook.cells
    tags = [cell.get("metadata", {}).get("tags", []) for cell in cells]
    injected = [i for i, t in enumerate(tags) if "injected-parameters" in t]
    declared = [i for i, t in enumerate(tags) if "parameters" in t]
    if not injected:
        return notebook
    if not declared:
        raise ValueError(
            "the notebook has injected parameters but no cell tagged 'parameters' to fold them into"
        )
    values = {}
    for node in ast.parse(cells[injected[0]].source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            values[node.targets[0].id] = ast.get_source_segment(
                cells[injected[0]].source, node.value
            )
    lines = cells[declared[0]].source.split("\n")
    for node in ast.parse(cells[declared[0]].source).body:
        target = (
            node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        )
        if isinstance(target, ast.Name) and target.id in values and node.value is not None:
            row, value = node.lineno - 1, node.value
            if value.end_lineno != node.lineno:
                raise ValueError(
                    f"parameter {target.id!r} spans lines; keep parameters on one line each"
                )
            line = lines[row]
            lines[row] = (
                line[: value.col_offset] + values.pop(target.id) + line[value.end_col_offset :]
            )
    if values:
        raise ValueError(
            f"injected parameters {sorted(values)} are not declared in the parameters cell"
        )
    cells[declared[0]].source = "\n".join(lines)
    del cells[injected[0]]
    return notebook


def publish(
    runs_dir: str | Path,
    preset: str,
    dest: str | Path | None = None,
    sources: dict[str, str] | None = None,
) -> list[Path]:
    """Copy one representative run's executed notebooks over the study's notebooks.

    The injected parameters are folded into each notebook's parameters cell
    (:func:`bake_parameters`).

    Args:
        dest: default the project's ``notebooks/``.
        sources: {notebook: executed notebook name under ``runs_dir/<preset>/notebooks``};
            default :data:`PUBLISHED` (aug swav, fine-tuned on 10 % of the labels).

    Returns:
        The written notebooks.
    """
    import nbformat

    executed = resolve(runs_dir) / preset / "notebooks"
    sources = sources or PUBLISHED
    missing = [name for name in sources.values() if not (executed / f"{name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"cannot publish: {', '.join(missing)} not executed under '{executed}'; "
            "run the study with the swav aug and the 0.1 fraction first"
        )
    written = []
    for notebook, name in sources.items():
        target = resolve(dest or notebooks_folder()) / f"{notebook}.ipynb"
        notebook = bake_parameters(nbformat.read(executed / f"{name}.ipynb", as_version=4))
        text = nbformat.writes(notebook)
        write_text(target, text if text.endswith("\n") else text + "\n")  # as nbformat.write
        written.append(target)
    return written

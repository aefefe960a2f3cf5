"""Publishing: one representative run's executed notebooks become the study's notebooks, with the
parameter values their outputs came from, the project's kernel and no path of the machine they ran
on. Nothing else writes ``notebooks/`` (JupyterLab works on copies, :mod:`swavnb.study.lab`)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from swavnb.base.files import write_text
from swavnb.base.layout import notebooks_folder, project_root, resolve
from swavnb.study.lab import kernelspec

# an absolute path of the machine a notebook ran on: a home, temporary, work or system folder
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~:/-])/(?:home|root|tmp|work|Users|mnt|opt|usr|var|private|scratch|srv)/[^\s\"'\\]*"
)

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


def without_machine_paths(notebook: Any, root: str | Path) -> Any:
    """An executed notebook without the paths of the machine it ran on: papermill's input and
    output paths relative to ``root`` (dropped where outside it), ``root/`` and the home folder
    (``~/``) shortened in text outputs (warnings, tracebacks), and the project's kernel named in
    place of the one it ran on."""
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        path = Path(record.get(key) or "")
        if path.is_absolute():
            if path.is_relative_to(root):
                record[key] = str(path.relative_to(root))
            else:
                del record[key]
    shorter = {f"{Path(root)}/": "", f"{Path.home()}/": "~/"}
    shorten = lambda text: re.sub("|".join(map(re.escape, shorter)), lambda m: shorter[m[0]], text)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = shorten(output["text"])
            if "traceback" in output:
                output["traceback"] = [shorten(line) for line in output["traceback"]]
            if isinstance(output.get("data", {}).get("text/plain"), str):
                output["data"]["text/plain"] = shorten(output["data"]["text/plain"])
    notebook.metadata["kernelspec"] = kernelspec()
    return notebook


def absolute_paths(notebook: Any) -> list[str]:
    """The absolute paths (:data:`ABSOLUTE_PATH`) in a notebook's metadata, sources and text
    outputs; images are not read (base64 may spell anything)."""
    texts = [json.dumps(notebook.metadata)]
    for cell in notebook.cells:
        texts += [cell.source, json.dumps(cell.metadata)]
        for output in cell.get("outputs", []):
            texts += [str(output.get("text", "")), str(output.get("evalue", ""))]
            texts += output.get("traceback", [])
            data = output.get("data", {})
            texts += [json.dumps(data[kind]) for kind in data if not kind.startswith("image/")]
    return sorted({match.group() for text in texts for match in ABSOLUTE_PATH.finditer(text)})


def publish(
    runs_dir: str | Path,
    preset: str,
    dest: str | Path | None = None,
    sources: dict[str, str] | None = None,
) -> list[Path]:
    """Copy one representative run's executed notebooks over the study's notebooks.

    The injected parameters are folded into each notebook's parameters cell
    (:func:`bake_parameters`), and papermill's paths made relative to the project root
    (:func:`without_machine_paths`). Nothing is written unless every notebook is free of absolute
    paths.

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
    ready = {}
    for notebook, name in sources.items():
        ready[notebook] = without_machine_paths(
            bake_parameters(nbformat.read(executed / f"{name}.ipynb", as_version=4)),
            project_root(),
        )
        if paths := absolute_paths(ready[notebook]):
            raise ValueError(
                f"cannot publish: {name} holds paths of this machine ({', '.join(paths[:3])}); "
                "run the study with its folders inside the project (relative --runs_dir, "
                "--results_dir, --figures_dir and data root from SWAVNB_DATA)"
            )
    written = []
    for notebook, content in ready.items():
        target = resolve(dest or notebooks_folder()) / f"{notebook}.ipynb"
        text = nbformat.writes(content)
        write_text(target, text if text.endswith("\n") else text + "\n")  # as nbformat.write
        written.append(target)
    return written

"""Exploring beside publishing: working copies in lab/ that make lab never replaces, and a Jupyter
server that refuses to save over a published notebook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from swavnb.study.lab import KERNEL, install, working_copies

ROOT = Path(__file__).resolve().parents[2]


def _published_bytes() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}


def test_working_copies_are_made_once_without_outputs_and_a_users_copy_is_kept(tmp_path):
    published = _published_bytes()
    lab = tmp_path / "lab"
    lines = working_copies(ROOT / "notebooks", lab)
    assert sorted(p.name for p in lab.iterdir()) == sorted(published)
    assert all("a working copy of" in line for line in lines), lines
    copy = nbformat.read(lab / "results.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in copy.cells)
    assert "papermill" not in copy.metadata and copy.metadata["kernelspec"]["name"] == KERNEL
    original = nbformat.read(ROOT / "notebooks" / "results.ipynb", as_version=4)
    assert [c.source for c in copy.cells] == [c.source for c in original.cells]

    (lab / "pretrain.ipynb").write_text(
        (lab / "pretrain.ipynb").read_text().replace("quick", "mine")
    )
    mine = (lab / "pretrain.ipynb").read_bytes()
    lines = working_copies(ROOT / "notebooks", lab)
    assert (lab / "pretrain.ipynb").read_bytes() == mine
    assert all(line.endswith("yours, kept") for line in lines), lines

    # a published notebook that changed since (a new study published): said, the copy still kept
    source = tmp_path / "notebooks"
    source.mkdir()
    for name, content in published.items():
        (source / name).write_bytes(content)
    (source / "pretrain.ipynb").write_bytes(published["pretrain.ipynb"].replace(b"quick", b"paper"))
    lines = working_copies(source, lab)
    assert [line for line in lines if "has changed since it was copied" in line] == [
        f"{lab / 'pretrain.ipynb'}: yours, kept ({source / 'pretrain.ipynb'} has changed since it "
        "was copied: delete yours to take the new one)"
    ]
    assert (lab / "pretrain.ipynb").read_bytes() == mine
    assert _published_bytes() == published


_SAVE_BOTH = """
import asyncio, sys
import nbformat
from jupyter_server.serverapp import ServerApp
app = ServerApp()
app.initialize(argv=["--ServerApp.open_browser=False", f"--ServerApp.root_dir={sys.argv[1]}"])
model = {"type": "notebook", "format": "json", "content": nbformat.v4.new_notebook()}
for path in ("lab/pretrain.ipynb", "notebooks/pretrain.ipynb"):
    try:
        asyncio.run(app.contents_manager.save(dict(model), path))
        print(path, "saved")
    except Exception as error:
        print(path, getattr(error, "status_code", ""), getattr(error, "log_message", error))
"""


def test_the_installed_guard_refuses_jupyterlabs_saves_over_a_published_notebook(tmp_path):
    prefix, project = tmp_path / "prefix", tmp_path / "project"
    kernel, config = install(prefix)
    spec = json.loads((kernel / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and spec["display_name"] == "swavnb (prefix)"
    assert json.loads(config.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"swavnb.study.lab": True}}
    }
    for folder in ("lab", "notebooks"):
        (project / folder).mkdir(parents=True)
    (project / "notebooks" / "pretrain.ipynb").write_bytes(b"published")
    # a Jupyter server with this prefix's config, as JupyterLab starts it, saving as autosave does
    result = subprocess.run(
        [sys.executable, "-c", _SAVE_BOTH, str(project)],
        env={
            **os.environ,
            "JUPYTER_CONFIG_PATH": str(config.parents[1]),
            "SWAVNB_ROOT": str(project),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "lab/pretrain.ipynb saved", result.stdout + result.stderr[-2000:]
    assert lines[1].startswith(
        "notebooks/pretrain.ipynb 403 notebooks/pretrain.ipynb is a published notebook: only "
        "`python -m swavnb.study --publish` writes notebooks/. Explore in lab/pretrain.ipynb"
    ), lines
    assert (project / "notebooks" / "pretrain.ipynb").read_bytes() == b"published"
    assert nbformat.read(project / "lab" / "pretrain.ipynb", as_version=4).cells == []

"""Publishing executed notebooks: injected values folded into the parameters cell, the
representative run copied."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from swavnb.study.publish import PUBLISHED, absolute_paths, bake_parameters, publish


def _executed(parameters: str, injected: str) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: the parameters cell, then the injected values, then the
    work."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(preset)"),
    ]
    return nb


def test_publishing_folds_the_injected_values_into_the_parameters_cell():
    nb = bake_parameters(
        _executed(
            'preset: str = "quick"  # size preset: paper | quick\n'
            "fraction: float = 0.1  # share of labels\n"
            "seed: int = 0",
            '# Parameters\npreset = "smoke"\nfraction = 0.3\n',
        )
    )
    assert [cell.metadata.get("tags", []) for cell in nb.cells] == [
        ["parameters"],
        [],
    ]  # no cell overrides edits
    assert nb.cells[0].source == (
        'preset: str = "smoke"  # size preset: paper | quick\n'
        "fraction: float = 0.3  # share of labels\nseed: int = 0"
    )
    with pytest.raises(ValueError, match=r"\['mode'\] are not declared"):
        bake_parameters(_executed('preset: str = "quick"  # help', 'mode = "linear"'))


def test_publish_copies_the_representative_executed_notebooks(tmp_path):
    executed = tmp_path / "runs" / "smoke" / "notebooks"
    executed.mkdir(parents=True)
    for name in PUBLISHED.values():
        nbformat.write(
            _executed('run: str = ""  # which run', f'run = "{name}"'), executed / f"{name}.ipynb"
        )
    written = publish(tmp_path / "runs", "smoke", dest=tmp_path)
    assert [path.name for path in written] == [
        "pretrain.ipynb",
        "finetune.ipynb",
        "probes.ipynb",
        "results.ipynb",
    ]
    published = nbformat.read(tmp_path / "finetune.ipynb", as_version=4)
    assert published.cells[0].source == 'run: str = "finetune-swav-seed0-finetune-0.1"  # which run'
    assert len(published.cells) == 2
    (executed / "probes-swav-seed0.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match="probes-swav-seed0"):
        publish(tmp_path / "runs", "smoke", dest=tmp_path)


def test_a_published_notebook_holds_no_path_of_the_machine_it_ran_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SWAVNB_ROOT", str(tmp_path))  # the project the study ran in
    executed = tmp_path / "runs" / "smoke" / "notebooks"
    executed.mkdir(parents=True)
    for name in PUBLISHED.values():
        nb = _executed('run: str = ""  # which run', f'run = "{name}"')
        nb.metadata["papermill"] = {
            "input_path": str(tmp_path / "notebooks" / "x.ipynb"),
            "output_path": str(executed / f"{name}.ipynb"),
            "duration": 1.5,
        }
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)"}
        nb.cells[-1].outputs = [
            nbformat.v4.new_output(
                "stream", name="stderr", text=f"{tmp_path}/.venv/lib/x.py:3: UserWarning: w\n"
            ),
            nbformat.v4.new_output("stream", name="stdout", text=f"{Path.home()}/.cache/y\n"),
        ]
        nbformat.write(nb, executed / f"{name}.ipynb")
    assert absolute_paths(nbformat.read(executed / "results.ipynb", as_version=4))
    publish(tmp_path / "runs", "smoke", dest=tmp_path)
    published = nbformat.read(tmp_path / "results.ipynb", as_version=4)
    assert absolute_paths(published) == []
    assert published.metadata["papermill"] == {
        "input_path": "notebooks/x.ipynb",
        "output_path": "runs/smoke/notebooks/results.ipynb",
        "duration": 1.5,
    }
    assert published.metadata["kernelspec"]["name"] == "swavnb"
    assert [o["text"] for o in published.cells[-1].outputs] == [
        ".venv/lib/x.py:3: UserWarning: w\n",
        "~/.cache/y\n",
    ]


def test_a_notebook_whose_parameters_name_an_absolute_path_is_not_published(tmp_path, monkeypatch):
    monkeypatch.setenv("SWAVNB_ROOT", str(tmp_path / "project"))
    executed = tmp_path / "runs" / "smoke" / "notebooks"
    executed.mkdir(parents=True)
    for name in PUBLISHED.values():
        runs = f"{tmp_path}/runs" if name == "results" else ""
        nbformat.write(
            _executed('runs_dir: str = ""  # runs', f'runs_dir = "{runs}"'),
            executed / f"{name}.ipynb",
        )
    (tmp_path / "published").mkdir()
    with pytest.raises(ValueError, match=f"results holds paths of this machine \\({tmp_path}/runs"):
        publish(tmp_path / "runs", "smoke", dest=tmp_path / "published")
    assert not list((tmp_path / "published").iterdir())  # nothing written, not even the clean ones

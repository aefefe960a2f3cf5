"""Publishing executed notebooks: injected values folded into the parameters cell, the
representative run copied."""

from __future__ import annotations

import nbformat
import pytest

from swavnb.study.publish import PUBLISHED, bake_parameters, publish


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

"""Notebook parameters are checked against their declared types before a notebook uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swavnb.base.parameters import check_parameters

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def _parameters(notebook: Path, **injected) -> dict:
    """A kernel's namespace after the notebook's parameters cell and papermill's injected one."""
    cells = json.loads(notebook.read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace: dict = {}
    # compiled as a kernel compiles a cell: without this module's `from __future__` flags
    exec(compile("".join(cell["source"]), notebook.name, "exec", dont_inherit=True), namespace)
    namespace.update(injected)  # papermill assigns without annotations, as here
    return namespace


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_checks_its_parameters_and_its_defaults_pass(notebook):
    assert "check_parameters(globals())" in notebook.read_text()
    namespace = _parameters(notebook)
    assert namespace["__annotations__"]["preset"] is str
    check_parameters(namespace)


@pytest.mark.parametrize(
    "notebook, injected, message",
    [
        ("pretrain", {"compile": False}, "parameter compile is False .*-p compile false"),
        ("finetune", {"checkpoint": None}, "parameter checkpoint is None .*-p checkpoint ''"),
        ("pretrain", {"progress": True}, "parameter progress is True .*-p progress true"),
        ("finetune", {"seed": 1.5}, r"parameter seed is 1.5 \(float\), declared int"),
        ("finetune", {"epochs": True}, r"parameter epochs is True \(bool\), declared int"),
        ("probes", {"preset": 3}, r"parameter preset is 3 \(int\), declared str"),
    ],
)
def test_a_value_papermill_typed_otherwise_stops_naming_the_parameter(notebook, injected, message):
    path = next(p for p in NOTEBOOKS if p.stem == notebook)
    with pytest.raises(TypeError, match=message):
        check_parameters(_parameters(path, **injected))


def test_an_int_passes_for_a_float_and_strings_for_strings():
    path = next(p for p in NOTEBOOKS if p.stem == "finetune")
    check_parameters(_parameters(path, fraction=1, checkpoint="none", amp="false"))


def test_lazily_evaluated_annotations_are_read_too():
    # from Python 3.14 a module's annotations are a function, __annotate__(format)
    namespace = {"__annotate__": lambda fmt: {"seed": int}, "seed": "1"}
    with pytest.raises(TypeError, match="parameter seed is '1'"):
        check_parameters(namespace)


def test_annotations_left_as_strings_are_read_as_their_types():
    namespace = {"__annotations__": {"fraction": "float", "aug": "str"}, "fraction": "0.1"}
    with pytest.raises(TypeError, match=r"parameter fraction is '0.1' \(str\), declared float"):
        check_parameters({**namespace, "aug": "flip"})

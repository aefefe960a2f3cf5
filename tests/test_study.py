"""The study: its plan, its command line, and one real smoke-sized study."""

from __future__ import annotations

import ast
import subprocess

import nbformat
import pandas as pd
import pytest
from papermill.translators import PythonTranslator

from swavnb import study
from swavnb.layout import notebooks_folder
from swavnb.study import main, plan

NOTEBOOKS = notebooks_folder()


def _parameters(notebook: str) -> dict[str, tuple[str, str]]:
    """{name: (type, help)} of a notebook's parameters cell, as papermill reads it."""
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    cells = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"{notebook}: exactly one cell must be tagged 'parameters'"
    assigned = [
        node.target.id
        for node in ast.parse(cells[0].source).body
        if isinstance(node, ast.AnnAssign)
    ]
    found = {p.name: (p.inferred_type_name, p.help) for p in PythonTranslator.inspect(cells[0])}
    assert list(found) == assigned, (
        f"{notebook}: papermill misses parameters (an '=' in a help comment?)"
    )
    return found


@pytest.mark.parametrize("notebook", ["pretrain", "finetune", "probes", "results"])
def test_notebooks_declare_typed_parameters_with_help_and_no_functions(notebook):
    parameters = _parameters(notebook)
    assert all(kind != "None" and help_text for kind, help_text in parameters.values())
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            assert not any(
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                for node in ast.walk(ast.parse(code))
            )


def test_the_plan_runs_pretraining_then_evaluations_then_probes_then_results(tmp_path):
    steps = plan("smoke", ["flip"], [0.1], runs_dir=tmp_path / "runs")
    assert [step.name for step in steps] == [
        "pretrain flip",
        "finetune flip 10% labels",
        "linear flip 10% labels",
        "finetune scratch 10% labels",
        "linear scratch 10% labels",
        "probes flip",
        "probes scratch",
        "results",
    ]
    finetune = steps[2].parameters
    assert finetune["checkpoint"] == str(tmp_path / "runs" / "smoke" / "flip" / "checkpoint.pt")
    assert finetune["out_dir"] == str(tmp_path / "runs" / "smoke" / "flip" / "linear-0.1")
    assert steps[4].parameters["checkpoint"] == "none"
    assert steps[-1].output == tmp_path / "runs" / "smoke" / "notebooks" / "results.ipynb"
    for step in steps:  # every parameter the study sets exists in its notebook
        assert set(step.parameters) <= set(_parameters(step.notebook))


def test_the_full_plan_covers_every_encoder_fraction_and_mode_with_repo_relative_paths():
    steps = plan("quick")
    assert len(steps) == 3 + 4 * 2 * 5 + 4 + 1
    assert (
        steps[0].parameters["out_dir"] == "runs/quick/jitter"
    )  # relative to the project root, as notebooks take it
    assert steps[-1].parameters == {
        "preset": "quick",
        "runs_dir": "runs",
        "results_dir": "results",
        "figures_dir": "figures",
    }


def test_bad_command_line_values_are_rejected_before_anything_runs(capsys):
    for argv in (["--augs", "flip,colour"], ["--fractions", "0.1,2"], ["--preset", "huge"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "colour" in capsys.readouterr().err


def test_smoke_study_runs_every_notebook_skips_on_rerun_and_names_a_failing_cell(
    smoke_study, data_root, capsys, monkeypatch
):
    runs = smoke_study["runs"]
    folders = [
        "--runs_dir",
        str(runs),
        "--results_dir",
        str(smoke_study["results"]),
        "--figures_dir",
        str(smoke_study["figures"]),
    ]
    argv = [
        "--preset",
        "smoke",
        "--augs",
        "flip",
        "--fractions",
        "0.1",
        "--data_root",
        str(data_root),
        *folders,
    ]

    assert len(list((runs / "smoke" / "notebooks").glob("*.ipynb"))) == 8
    rows = pd.read_csv(smoke_study["results"] / "smoke" / "results.csv")
    assert sorted(zip(rows["aug"], rows["mode"], strict=True)) == [
        ("flip", "finetune"),
        ("flip", "linear"),
        ("scratch", "finetune"),
        ("scratch", "linear"),
    ]
    # probes reused linear evaluation's (precise-BN) features and added only the EMA ones for its
    # comparison
    assert len(list((runs / "smoke" / "flip").glob("features-*.pt"))) == 4
    assert (smoke_study["figures"] / "smoke" / "accuracy-finetune.svg").is_file()

    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped, results exist") == 8

    # a new fraction with an unreadable data folder fails inside the finetune notebook's training
    # cell
    monkeypatch.setenv("SWAVNB_OFFLINE", "1")
    missing = str(smoke_study["root"] / "no")
    bad = [
        "--preset",
        "smoke",
        "--augs",
        "flip",
        "--fractions",
        "0.1,0.3",
        "--data_root",
        missing,
        *folders,
    ]
    assert main(bad) == 1
    err = capsys.readouterr().err
    assert "finetune flip 30% labels failed in notebooks/finetune.ipynb, cell [" in err
    assert "'row = finetune(checkpoint" in err and "DatasetNotFoundError" in err
    assert "finetune-flip-finetune-0.3.ipynb" in err
    assert (
        runs / "smoke" / "flip" / "finetune-0.1" / "result.json"
    ).is_file()  # finished results are kept


def test_a_failed_benchmark_is_reported_the_study_goes_on_and_the_exit_says_so(
    tmp_path, monkeypatch, capsys
):
    def broken_benchmark(runs_dir, preset, timeout=300):
        raise subprocess.TimeoutExpired(["python", "-m", "swavnb.bench"], timeout)

    calls = []
    monkeypatch.setattr(study, "benchmark", broken_benchmark)
    monkeypatch.setattr(study, "run", lambda steps, *args, **kwargs: calls.append(kwargs) or 0)
    argv = ["--preset", "smoke", "--bench", "--keep_going", "--runs_dir", str(tmp_path)]
    assert study.main(argv) == 1
    assert len(calls) == 1 and calls[0]["keep_going"] is True  # the steps ran, as asked
    err = capsys.readouterr().err
    assert "the benchmark failed" in err and "the study goes on" in err
    with pytest.raises(SystemExit):  # the probes notebook it would publish is not run
        study.main(["--preset", "smoke", "--skip_probes", "--publish"])
    assert "drop --skip_probes" in capsys.readouterr().err


def test_probes_can_be_left_out_and_results_then_wait_for_the_rest(tmp_path, monkeypatch):
    planned = []
    monkeypatch.setattr(study, "run", lambda steps, *args, **kwargs: planned.extend(steps) or 0)
    argv = ["--preset", "smoke", "--augs", "flip", "--fractions", "0.1", "--modes", "finetune"]
    assert main([*argv, "--skip_probes", "--runs_dir", str(tmp_path)]) == 0
    steps = plan("smoke", ["flip"], [0.1], modes=["finetune"], probes=False)
    assert [s.name for s in planned] == [s.name for s in steps]
    assert [s.name for s in steps] == [
        "pretrain flip",
        "finetune flip 10% labels",
        "finetune scratch 10% labels",
        "results",
    ]
    assert steps[-1].after == [s.name for s in steps[:-1]]


def test_modes_can_leave_out_the_linear_evaluations():
    steps = plan("smoke", ["flip"], [0.1, 0.4], modes=["finetune"])
    assert [s.name for s in steps if s.notebook == "finetune"] == [
        "finetune flip 10% labels",
        "finetune flip 40% labels",
        "finetune scratch 10% labels",
        "finetune scratch 40% labels",
    ]
    assert all(
        s.after == ["pretrain flip"] for s in steps if "flip" in s.name and s.notebook != "pretrain"
    )


def test_compile_reaches_every_pretraining_only_when_given(tmp_path, monkeypatch, capsys):
    planned = []
    monkeypatch.setattr(study, "run", lambda steps, *args, **kwargs: planned.append(steps) or 0)
    argv = ["--preset", "smoke", "--augs", "flip,swav", "--fractions", "0.1", "--skip_probes"]
    assert main([*argv, "--runs_dir", str(tmp_path)]) == 0
    assert main([*argv, "--runs_dir", str(tmp_path), "--compile", "Auto"]) == 0
    default, given = planned
    # absent: each pretraining compiles as its preset says (the notebook's '' parameter)
    assert not any("compile" in step.parameters for step in default)
    compiles = {s.name: s.parameters["compile"] for s in given if "compile" in s.parameters}
    assert compiles == {"pretrain flip": "auto", "pretrain swav": "auto"}  # and nothing else
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--compile", "sometimes"])
    assert exit_info.value.code == 2
    assert "unknown compile 'sometimes'; choose one of auto, true, false" in capsys.readouterr().err

"""The study runner: its plan, skipping and --force, publishing, and one real smoke-sized study."""

from __future__ import annotations

import ast
import subprocess
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from papermill.translators import PythonTranslator

from swavnb import study
from swavnb.study import (
    PUBLISHED,
    Step,
    bake_parameters,
    main,
    notebooks_folder,
    plan,
    publish,
    run,
)

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


def _fake_study(tmp_path: Path, executed: list[str], monkeypatch: pytest.MonkeyPatch) -> list[Step]:
    """Three steps whose 'results' are marker files, and an execute that writes them."""

    def fake_execute(step: Step) -> None:
        executed.append(step.name)
        (tmp_path / step.name).write_text("done")

    monkeypatch.setattr(study, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    stale = tmp_path / "old-features.pt"
    stale.write_text("stale")
    return [
        Step("pretrain", "a", {}, tmp_path / "a.ipynb", done("a"), [stale]),
        Step("finetune", "b", {}, tmp_path / "b.ipynb", done("b")),
        Step("results", "c", {}, tmp_path / "c.ipynb", done("c"), refresh=True),
    ]


def test_finished_steps_are_skipped_and_results_refresh_after_any_change(tmp_path, monkeypatch):
    executed: list[str] = []
    steps = _fake_study(tmp_path, executed, monkeypatch)
    lines: list[str] = []
    assert run(steps, log=lines.append) == 3
    assert run(steps, log=lines.append) == 0
    assert sum("skipped" in line for line in lines) == 3
    (tmp_path / "b").unlink()
    assert run(steps, log=lines.append) == 2
    assert executed == ["a", "b", "c", "b", "c"]
    assert (tmp_path / "old-features.pt").is_file()  # only --force removes what a step would reuse


def test_force_redoes_every_step_and_removes_its_stale_files(tmp_path, monkeypatch):
    executed: list[str] = []
    steps = _fake_study(tmp_path, executed, monkeypatch)
    run(steps, log=lambda line: None)
    assert run(steps, force=True, log=lambda line: None) == 3
    assert executed == ["a", "b", "c"] * 2
    assert not (tmp_path / "old-features.pt").exists()


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
    assert published.cells[0].source == 'run: str = "finetune-swav-finetune-0.1"  # which run'
    assert len(published.cells) == 2
    (executed / "probes-swav.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match="probes-swav"):
        publish(tmp_path / "runs", "smoke", dest=tmp_path)


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


def test_jobs_run_independent_steps_side_by_side_and_respect_what_each_reads(tmp_path, monkeypatch):
    import threading

    lock, active, peak, order = threading.Lock(), [0], [0], []

    def fake_execute(step: Step) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            order.append(("start", step.name))
        time.sleep(0.05)
        (tmp_path / step.name).write_text("done")
        with lock:
            active[0] -= 1
            order.append(("end", step.name))

    monkeypatch.setattr(study, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    steps = [
        Step("pretrain", "pretrain a", {}, tmp_path / "1", done("pretrain a")),
        Step("pretrain", "pretrain b", {}, tmp_path / "2", done("pretrain b")),
        Step("finetune", "eval a", {}, tmp_path / "3", done("eval a"), after=["pretrain a"]),
        Step("finetune", "eval scratch", {}, tmp_path / "4", done("eval scratch")),
        Step(
            "results",
            "results",
            {},
            tmp_path / "5",
            done("results"),
            refresh=True,
            after=["pretrain a", "pretrain b", "eval a", "eval scratch"],
        ),
    ]
    assert run(steps, jobs=2, log=lambda line: None) == 5
    assert peak[0] == 2  # two at a time, never more
    position = {event: i for i, event in enumerate(order)}
    assert position[("end", "pretrain a")] < position[("start", "eval a")]
    assert all(
        position[("end", name)] < position[("start", "results")]
        for name in steps[3].after + ["eval scratch"]
    )


def test_a_failing_step_stops_new_ones_and_is_reported_after_the_running_finish(
    tmp_path, monkeypatch
):
    def fake_execute(step: Step) -> None:
        if step.name == "bad":
            raise study.StepFailed("bad failed in notebooks/x.ipynb")
        time.sleep(0.05)
        (tmp_path / step.name).write_text("done")

    monkeypatch.setattr(study, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    steps = [
        Step("pretrain", "bad", {}, tmp_path / "1", done("bad")),
        Step("pretrain", "slow", {}, tmp_path / "2", done("slow")),
        Step("finetune", "later", {}, tmp_path / "3", done("later"), after=["slow"]),
    ]
    with pytest.raises(study.StepFailed, match="bad failed"):
        run(steps, jobs=2, log=lambda line: None)
    assert (tmp_path / "slow").is_file() and not (tmp_path / "later").exists()


def test_keep_going_leaves_out_only_what_reads_a_failed_step(tmp_path, monkeypatch):
    def fake_execute(step: Step) -> None:
        if step.name == "pretrain bad":
            raise study.StepFailed("pretrain bad failed in notebooks/pretrain.ipynb")
        if step.name == "eval broken":
            raise study.StepFailed("eval broken failed in notebooks/finetune.ipynb")
        (tmp_path / step.name).write_text("done")

    monkeypatch.setattr(study, "execute", fake_execute)
    done = lambda name: lambda: (tmp_path / name).is_file()
    steps = [
        Step("pretrain", "pretrain bad", {}, tmp_path / "1", done("pretrain bad")),
        Step("pretrain", "pretrain good", {}, tmp_path / "2", done("pretrain good")),
        Step("finetune", "eval bad", {}, tmp_path / "3", done("eval bad"), after=["pretrain bad"]),
        Step(
            "finetune", "eval good", {}, tmp_path / "4", done("eval good"), after=["pretrain good"]
        ),
        Step("finetune", "eval broken", {}, tmp_path / "5", done("eval broken")),
        Step(
            "results",
            "results",
            {},
            tmp_path / "6",
            done("results"),
            after=["eval bad", "eval good"],
        ),
    ]
    lines = []
    with pytest.raises(study.StepFailed, match="2 steps failed") as failure:
        run(steps, jobs=2, log=lines.append, keep_going=True)
    assert "pretrain bad failed" in str(failure.value) and "eval broken failed" in str(
        failure.value
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval good", "pretrain good"]
    left_out = [line for line in lines if "left out" in line]
    assert len(left_out) == 2 and left_out[0].endswith("eval bad: left out, needs pretrain bad")
    assert left_out[1].endswith("results: left out, needs eval bad")  # and down the line
    # without keep_going the first failure stops every new step, as before
    for path in tmp_path.iterdir():
        path.unlink()
    with pytest.raises(study.StepFailed, match="pretrain bad failed"):
        run(steps, jobs=1, log=lambda line: None)
    assert not list(tmp_path.iterdir())


def test_a_failed_benchmark_is_reported_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    def broken_benchmark(runs_dir, preset, timeout=300):
        raise subprocess.TimeoutExpired(["python", "-m", "swavnb.bench"], timeout)

    ran = []
    monkeypatch.setattr(study, "benchmark", broken_benchmark)
    monkeypatch.setattr(study, "run", lambda steps, *args, **kwargs: ran.append(len(steps)) or 0)
    assert study.main(["--preset", "smoke", "--bench", "--runs_dir", str(tmp_path)]) == 0
    assert ran and "benchmark failed" in capsys.readouterr().err


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

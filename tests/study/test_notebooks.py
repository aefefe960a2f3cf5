"""nbval on the committed notebooks at smoke size.

Each committed notebook keeps the outputs of the run it was published from. Its
parameters are swapped for smoke-sized ones (papermill, without executing), then nbval
re-runs it: every cell must run, and cells marked ``# NBVAL_CHECK_OUTPUT`` (shapes,
parameter counts, Sinkhorn marginals, table headers: things no preset or machine may
change) must print exactly what the committed notebook shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from swavnb.base.layout import LOCK
from swavnb.study.lab import working_copies
from swavnb.study.publish import absolute_paths

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("pretrain", "finetune", "probes", "results")


# the README's commands at smoke size, with only the parameters that define the run: every folder is
# derived, as the study derives it (the root is the smoke study's, through SWAVNB_ROOT)
SMOKE_PARAMETERS = {
    # a finished run: loads, does not retrain
    "pretrain": {"preset": "smoke", "aug": "flip", "seed": 0},
    # flip's checkpoint while `aug` keeps its default (swav): the checkpoint decides the folder
    "finetune": {
        "preset": "smoke",
        "seed": 0,
        "checkpoint": "runs/smoke/flip/seed-0/checkpoint.pt",
        # a label count of its own: 0.2 of smoke's pool is the 100 labels (one per class) of 0.1
        "fraction": 0.8,
    },
    "probes": {"preset": "smoke", "aug": "scratch", "seed": 1},  # a new encoder: a new folder
    "results": {"preset": "smoke"},
}


def _run_files(runs: Path) -> dict[str, bytes]:
    """Every file of the study's runs but the locks, whose holder changes with each process, and
    the exported encoder's card, which a rerun of the pretraining notebook refreshes with the rows
    evaluated since (the weights it exports are the checkpoint's, which must not change)."""
    return {
        str(p.relative_to(runs)): p.read_bytes()
        for p in sorted(runs.rglob("*"))
        if p.is_file() and p.name != LOCK and p.parent.name != "encoder"
    }


def test_committed_notebooks_carry_outputs_and_marked_checks():
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert any("NBVAL_CHECK_OUTPUT" in cell.source for cell in code), (
            f"{name}: no output is checked"
        )
        assert all(cell.outputs for cell in code if "NBVAL_CHECK_OUTPUT" in cell.source), (
            f"{name}: not executed"
        )
        # what a reader sees in the parameters cell is what ran, and what they edit there is what
        # runs
        assert not any("injected-parameters" in cell.metadata.get("tags", []) for cell in code), (
            name
        )


def test_notebooks_import_in_a_few_lines_and_use_exactly_what_swavnb_notebook_offers():
    import re

    from swavnb import notebook

    used = set()
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
        imports = next(source for source in code if "import" in source)
        assert len(imports.splitlines()) <= 6, (name, imports)
        assert "from swavnb import notebook as nb" in imports, name
        used |= {match for source in code for match in re.findall(r"\bnb\.(\w+)", source)}
    assert used == set(notebook.__all__)  # every name a notebook calls is there, and no other


def test_committed_notebooks_hold_no_absolute_path_and_name_the_projects_kernel():
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert absolute_paths(nb) == [], name  # /work, /root, /home, /tmp, ...: metadata included
        assert nb.metadata["kernelspec"]["name"] == "swavnb", name


def test_notebooks_pass_nbval_at_smoke_size(smoke_study, tmp_path):
    prepared = []
    for name in NOTEBOOKS:
        target = tmp_path / f"{name}.ipynb"
        papermill.execute_notebook(
            ROOT / "notebooks" / f"{name}.ipynb",
            target,
            prepare_only=True,
            parameters=SMOKE_PARAMETERS[name],
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
        prepared.append(str(target))
    # a copy of the finished study as the project root: the shared fixture stays as it was
    root = tmp_path / "root"
    shutil.copytree(smoke_study["runs"], root / "runs")
    runs = root / "runs"
    before = _run_files(runs)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-q",
            *prepared,
        ],
        cwd=ROOT,
        env={**os.environ, "SWAVNB_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    after = _run_files(runs)
    # every run of the study is byte-identical; the new runs are where their parameters say
    assert {name: after[name] for name in before} == before
    new = sorted(set(after) - set(before))
    assert new == sorted(
        [
            "smoke/flip/seed-0/finetune-0.8/result.json",
            "smoke/flip/seed-0/finetune-0.8/run.json",
            "smoke/scratch/seed-1/probes/clusters.json",
            "smoke/scratch/seed-1/probes/knn.json",
            "smoke/scratch/seed-1/probes/run.json",
            *(name for name in new if name.startswith("smoke/scratch/seed-1/features-")),
        ]
    )
    assert json.loads(after[new[0]])["aug"] == "flip"


def _stream_lines(path: Path) -> list[str]:
    """What an executed notebook's cells printed, line by line."""
    nb = nbformat.read(path, as_version=4)
    outputs = [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "stream"]
    return "".join(o.text for o in outputs).splitlines()


def test_pretrain_finetune_results_in_working_copies_without_probes_names_the_missing_figures(
    smoke_study, tmp_path, monkeypatch
):
    """The natural path, as make lab's working copies run it (kernel in lab/), by papermill at smoke
    size: pretrain (the smoke study's finished flip run: loaded, not retrained), fine-tune that
    encoder, then results with no probe run. Results completes, one line per figure it cannot draw
    yet, and the published notebooks are byte for byte what they were."""
    published = {path.name: path.read_bytes() for path in (ROOT / "notebooks").glob("*.ipynb")}
    root = tmp_path / "project"
    encoder = root / "runs" / "smoke" / "flip" / "seed-0"
    encoder.mkdir(parents=True)
    for name in ("checkpoint.pt", "metrics.json", "run.json"):  # the pretraining alone
        shutil.copy(smoke_study["runs"] / "smoke" / "flip" / "seed-0" / name, encoder / name)
    lab = root / "lab"
    working_copies(ROOT / "notebooks", lab)
    monkeypatch.setenv("SWAVNB_ROOT", str(root))  # the project root, for the kernels too
    steps = {
        "pretrain": {"preset": "smoke", "aug": "flip", "seed": 0},
        "finetune": {"preset": "smoke", "aug": "flip", "seed": 0, "fraction": 0.1},
        "results": {"preset": "smoke"},
    }
    for name, parameters in steps.items():
        papermill.execute_notebook(
            lab / f"{name}.ipynb",
            lab / f"{name}.ipynb",  # run in place, as a user's working copy is
            parameters=parameters,
            kernel_name="python3",
            cwd=str(lab),
            progress_bar=False,
            log_output=False,
        )
    assert [line for line in _stream_lines(lab / "results.ipynb") if line.startswith("no ")] == [
        "no claims figure: no claim to draw: the claims compare two encoders or two label counts; "
        "run finetune.ipynb for another encoder or fraction, then this notebook again",
        "no accuracy-linear figure: no linear evaluation in this preset's runs yet; run "
        "finetune.ipynb with mode = 'linear' for an encoder, then this notebook again",
        "no knn figure: no k-NN rows in this preset's runs yet; run probes.ipynb for an encoder, "
        "then this notebook again",
        "no sweep figures: this preset's runs hold no sweep; the study runs one: python -m "
        "swavnb.study --preset smoke --sweep FIELD=v1,v2,...",
        "no budget figure: no budget runs yet; run `python -m swavnb.study --budget 1,2,4,8,16` "
        "for this preset",
        "no budget-claims figure: no budget runs yet; run `python -m swavnb.study --budget "
        "1,2,4,8,16` for this preset",
    ]
    figures = sorted(path.stem for path in (root / "figures" / "smoke").glob("*.png"))
    assert figures == ["accuracy-finetune", "augmentations", "pretrain-loss"]
    assert (encoder / "finetune-0.1" / "result.json").is_file()  # under the root, not lab/
    assert sorted(path.name for path in lab.iterdir()) == sorted(published)
    assert all(line.endswith("yours, kept") for line in working_copies(ROOT / "notebooks", lab))
    assert {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == published


def _run_all_in_notebooks_folder(name: str, edit: tuple[str, str]) -> None:
    """Run All as JupyterLab does: a kernel whose working directory is notebooks/, after one edit of
    the parameters cell, on the committed notebook otherwise unchanged."""
    import nbclient

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", []))
    assert edit[0] in cell.source
    cell.source = cell.source.replace(*edit)
    nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()


def test_run_all_from_notebooks_folder_writes_under_the_project_root_and_an_empty_study_stops(
    smoke_study, tmp_path, monkeypatch
):
    import nbclient

    before = sorted((ROOT / "notebooks").rglob("*"))
    monkeypatch.setenv(
        "SWAVNB_ROOT", str(tmp_path)
    )  # the project root the relative folders are taken from
    (tmp_path / "runs").symlink_to(smoke_study["runs"])
    _run_all_in_notebooks_folder("results", ('preset: str = "quick"', 'preset: str = "smoke"'))
    assert (tmp_path / "results" / "smoke" / "results.csv").is_file()
    assert {path.name for path in (tmp_path / "figures" / "smoke").iterdir()} >= {
        "accuracy-finetune.svg",
        "accuracy-linear.png",
        "knn.png",
        "pretrain-loss.svg",
    }
    assert sorted((ROOT / "notebooks").rglob("*")) == before  # nothing written beside the notebooks

    (tmp_path / "runs").unlink()
    with pytest.raises(
        nbclient.exceptions.CellExecutionError, match=r"NoRunsError.*no runs of preset 'smoke'"
    ):
        _run_all_in_notebooks_folder("results", ('preset: str = "quick"', 'preset: str = "smoke"'))


def test_a_progress_bar_in_a_notebook_is_one_live_widget_not_an_output_per_update(tmp_path):
    import nbclient

    code = (
        "from swavnb.pretraining.config import pretrain_config\n"
        "from swavnb.pretraining.train import pretrain\n"
        "config = pretrain_config('smoke', aug='flip', train_images=64, batch_size=16, epochs=2,\n"
        "                         image_size=8, local_size=4, n_prototypes=10, feat_dim=8)\n"
        f"metrics = pretrain(config, {str(tmp_path / 'run')!r}, progress=True)"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=300).execute()
    outputs = nb.cells[0].outputs
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert len(widgets) == 1, outputs  # 8 steps, one bar
    assert not [o for o in outputs if o.output_type == "stream"], outputs

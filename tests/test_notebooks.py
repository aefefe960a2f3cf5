"""nbval on the committed notebooks at smoke size.

Each committed notebook keeps the outputs of the run it was published from. Its
parameters are swapped for smoke-sized ones (papermill, without executing), then nbval
re-runs it: every cell must run, and cells marked ``# NBVAL_CHECK_OUTPUT`` (shapes,
parameter counts, Sinkhorn marginals, table headers: things no preset or machine may
change) must print exactly what the committed notebook shows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("pretrain", "finetune", "probes", "results")


def _smoke_parameters(notebook: str, study: dict[str, Path], out: Path) -> dict[str, object]:
    run = study["runs"] / "smoke" / "flip"
    return {
        # finished: loads, does not retrain
        "pretrain": {
            "preset": "smoke",
            "aug": "flip",
            "out_dir": str(run),
            "figures_dir": str(out / "figures"),
        },
        "finetune": {
            "preset": "smoke",
            "checkpoint": str(run / "checkpoint.pt"),
            "fraction": 0.1,
            "mode": "finetune",
            "out_dir": str(out / "finetune"),
        },
        "probes": {
            "preset": "smoke",
            "checkpoint": str(run / "checkpoint.pt"),
            "out_dir": str(out / "probes"),
            "figures_dir": str(out / "figures"),
        },
        "results": {
            "preset": "smoke",
            "runs_dir": str(study["runs"]),
            "results_dir": str(out / "results"),
            "figures_dir": str(out / "figures"),
        },
    }[notebook]


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


def test_notebooks_pass_nbval_at_smoke_size(smoke_study, tmp_path):
    prepared = []
    for name in NOTEBOOKS:
        target = tmp_path / f"{name}.ipynb"
        papermill.execute_notebook(
            ROOT / "notebooks" / f"{name}.ipynb",
            target,
            prepare_only=True,
            parameters=_smoke_parameters(name, smoke_study, tmp_path),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
        prepared.append(str(target))
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
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:]


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

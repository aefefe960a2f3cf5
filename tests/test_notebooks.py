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

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("pretrain", "finetune", "probes", "results")


def _smoke_parameters(notebook: str, study: dict[str, Path], out: Path) -> dict[str, object]:
    run = study["runs"] / "smoke" / "flip"
    return {
        "pretrain": {"preset": "smoke", "aug": "flip", "out_dir": str(run)},  # finished: loads, does not retrain
        "finetune": {"preset": "smoke", "checkpoint": str(run / "checkpoint.pt"), "fraction": 0.1,
                     "mode": "finetune", "out_dir": str(out / "finetune")},
        "probes": {"preset": "smoke", "checkpoint": str(run / "checkpoint.pt"), "out_dir": str(out / "probes")},
        "results": {"preset": "smoke", "runs_dir": str(study["runs"]), "results_dir": str(out / "results"),
                    "figures_dir": str(out / "figures")},
    }[notebook]


def test_committed_notebooks_carry_outputs_and_marked_checks():
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert any("NBVAL_CHECK_OUTPUT" in cell.source for cell in code), f"{name}: no output is checked"
        assert all(cell.outputs for cell in code if "NBVAL_CHECK_OUTPUT" in cell.source), f"{name}: not executed"


def test_notebooks_pass_nbval_at_smoke_size(smoke_study, tmp_path):
    prepared = []
    for name in NOTEBOOKS:
        target = tmp_path / f"{name}.ipynb"
        papermill.execute_notebook(ROOT / "notebooks" / f"{name}.ipynb", target, prepare_only=True,
                                   parameters=_smoke_parameters(name, smoke_study, tmp_path), kernel_name="python3",
                                   progress_bar=False, log_output=False)
        prepared.append(str(target))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
         *prepared],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:]

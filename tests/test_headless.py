"""The offline-GPU-node path, rehearsed at smoke size: headless study with --jobs 2 and no kornia,
export, import into fresh folders, then the probes and results notebooks on the imported runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from swavnb import headless, study
from swavnb.layout import RESULT


def _study(runs: Path, *extra: str) -> list[str]:
    return [
        "--preset",
        "smoke",
        "--augs",
        "flip",
        "--fractions",
        "0.1",
        "--runs_dir",
        str(runs),
        "--results_dir",
        str(runs.parent / "results"),
        "--figures_dir",
        str(runs.parent / "figures"),
        *extra,
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("node")
    # the GPU node has no kornia: an import of it fails in every step's process
    blocker = root / "no-kornia" / "kornia"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ImportError('kornia is not installed on this node')\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(blocker.parent))
        assert (
            study.main(
                _study(
                    root / "runs",
                    "--headless",
                    "--jobs",
                    "2",
                    "--export",
                    str(root / "export"),
                    "--data_root",
                    str(data_root),
                )
            )
            == 0
        )
    return root


def test_headless_study_runs_every_step_without_jupyter_and_exports_few_small_files(exported):
    runs = exported / "runs" / "smoke"
    rows = pd.read_csv(exported / "results" / "smoke" / "results.csv")
    assert sorted(zip(rows["aug"], rows["mode"], strict=True)) == [
        ("flip", "finetune"),
        ("flip", "linear"),
        ("scratch", "finetune"),
        ("scratch", "linear"),
    ]
    assert (runs / "flip" / "probes" / "knn.json").is_file()
    assert (runs / "scratch" / "probes" / "clusters.json").is_file()
    assert not list((runs / "notebooks").glob("*.ipynb"))  # no notebook was executed
    files = sorted((exported / "export").iterdir())
    assert [f.name for f in files] == [
        "flip.model.1-of-2",
        "flip.model.2-of-2",
        "results-smoke.tar.gz",
    ]
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files)


def test_import_into_fresh_folders_runs_only_the_notebooks_that_draw(exported, tmp_path, capsys):
    fresh = tmp_path / "runs"
    assert study.main(_study(fresh, "--import", str(exported / "export"))) == 0
    out = capsys.readouterr().out
    assert "imported" in out and "1 models" in out
    executed = sorted(p.name for p in (fresh / "smoke" / "notebooks").glob("*.ipynb"))
    assert executed == [
        "probes-flip.ipynb",
        "probes-scratch.ipynb",
        "results.ipynb",
    ]  # never retrained
    assert out.count("skipped, results exist") == 5  # the pretraining and the four evaluations
    figures = {p.name for p in (tmp_path / "figures" / "smoke").iterdir()}
    assert {"tsne-flip.png", "prototypes-flip.svg", "knn.png", "accuracy-finetune.svg"} <= figures
    imported = pd.read_csv(tmp_path / "results" / "smoke" / "results.csv")
    original = pd.read_csv(exported / "results" / "smoke" / "results.csv")
    pd.testing.assert_frame_equal(imported, original)


def test_headless_and_notebook_runs_of_a_step_give_the_same_row(smoke_study, tmp_path, data_root):
    notebook_row = json.loads(
        (smoke_study["runs"] / "smoke" / "scratch" / "finetune-0.1" / RESULT).read_text()
    )
    headless.run_step(
        "finetune",
        {
            "preset": "smoke",
            "checkpoint": "none",
            "fraction": 0.1,
            "mode": "finetune",
            "out_dir": str(tmp_path / "ft"),
            "data_root": str(data_root),
        },
    )
    headless_row = json.loads((tmp_path / "ft" / RESULT).read_text())
    for row in (notebook_row, headless_row):
        row.pop("seconds")
    assert headless_row == notebook_row

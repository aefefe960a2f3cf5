"""The offline-GPU-node path, rehearsed at smoke size: headless study with --jobs 2 and no kornia,
export, import into fresh folders, then the probes and results notebooks on the imported runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from swavnb.base.layout import CLUSTERS, KNN, RESULT, project_root
from swavnb.study import __main__ as command
from swavnb.study import headless


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


# what the offline GPU node lacks: its Python has torch, torchvision, numpy, pandas, matplotlib,
# seaborn, scikit-learn, Pillow and tqdm, and none of these
NODE_LACKS = (
    "kornia",
    "papermill",
    "nbformat",
    "nbclient",
    "jupyter_client",
    "ipykernel",
    "IPython",
    "nbval",
    "jupyterlab",
)


def _node_path(root: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes every import of :data:`NODE_LACKS` fail."""
    folder = root / "node-lacks"
    for name in NODE_LACKS:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on the offline GPU node')\n"
        )
    return folder


# and a toolchain: Inductor finds no working C++ compiler there (as a node without one, or whose
# Triton lacks a C compiler or Python's headers, breaks torch.compile)
NO_COMPILER = {"CXX": "/bin/false"}


def _node_run(args: list[str], node_path: Path) -> subprocess.CompletedProcess:
    """A command run as on the node: every process of it (the study and each step) lacks
    :data:`NODE_LACKS` and a C++ compiler."""
    env = {**os.environ, "PYTHONPATH": str(node_path), **NO_COMPILER}
    return subprocess.run(
        [sys.executable, *args], cwd=project_root(), env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="session")  # built once per worker, however its tests interleave
def exported(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("node")
    node_path = _node_path(root)
    # the README's node flags (not --bench: minutes on a CPU); headless probes are tested below;
    # compile auto, as the node's presets (paper, swav) have it
    command = _study(
        root / "runs",
        *("--headless", "--jobs", "2", "--skip_probes", "--keep_going", "--compile", "auto"),
        *("--export", str(root / "export")),
    )
    done = _node_run(["-m", "swavnb.study", *command, "--data_root", str(data_root)], node_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_the_node_side_imports_nothing_it_lacks(tmp_path):
    modules = "swavnb.study.__main__, swavnb.study.plan, swavnb.study.headless"
    modules += ", swavnb.study.transfer, swavnb.speed.bench, swavnb.study.plots"
    check = (
        f"import sys, {modules}\n"
        f"print(sorted(set(sys.modules) & set({NODE_LACKS!r})))\n"
        "try:\n    import papermill\nexcept ImportError as error:\n    print(error)\n"
    )
    done = _node_run(["-c", check], _node_path(tmp_path))
    assert done.returncode == 0, done.stderr
    loaded, blocked = done.stdout.strip().splitlines()
    assert loaded == "[]"
    assert blocked == "papermill is not installed on the offline GPU node"  # the blockers work


def test_headless_study_runs_every_step_without_jupyter_and_exports_few_small_files(exported):
    runs = exported / "runs" / "smoke"
    rows = pd.read_csv(exported / "results" / "smoke" / "results.csv")
    assert sorted(zip(rows["aug"], rows["mode"], strict=True)) == [
        ("flip", "finetune"),
        ("flip", "linear"),
        ("scratch", "finetune"),
        ("scratch", "linear"),
    ]
    assert not (runs / "flip" / "seed-0" / "probes").exists()  # left to the import (--skip_probes)
    assert not list((runs / "notebooks").glob("*.ipynb"))  # no notebook was executed
    files = sorted((exported / "export").iterdir())
    assert [f.name for f in files] == [
        "flip-seed0.model.1-of-2",
        "flip-seed0.model.2-of-2",
        "results-smoke.tar.gz",
    ]
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files)


def test_without_a_compiler_auto_trains_eager_says_why_once_and_records_it(exported):
    runs = exported / "runs" / "smoke"
    log = (runs / "notebooks" / "pretrain-flip-seed0.log").read_text()
    said = [line for line in log.splitlines() if "torch.compile" in line]
    assert len(said) == 1 and said[0].startswith("torch.compile is off (InvalidCxxCompiler: ")
    assert "the run trains eager" in said[0]
    metrics = json.loads((runs / "flip" / "seed-0" / "metrics.json").read_text())
    assert metrics["config"]["compile"] == "auto" and metrics["compiled"] is False
    assert metrics["compile_fallback"].startswith("InvalidCxxCompiler: No working C++ compiler")
    # --jobs 2: its seconds and img/s were time-shared, and the pretraining table says so
    assert metrics["shared_with_jobs"] == 2
    tables = (exported / "results" / "smoke" / "tables.md").read_text()
    assert any(row.startswith("| flip |") and row.endswith("| 2 |") for row in tables.splitlines())


def test_without_a_compiler_compile_true_stops_at_the_first_step_in_one_line(
    tmp_path, monkeypatch, capsys, data_root
):
    monkeypatch.setenv("CXX", NO_COMPILER["CXX"])  # the steps' processes inherit it
    argv = _study(tmp_path / "runs", "--headless", "--skip_probes", "--modes", "finetune")
    assert command.main([*argv, "--compile", "true", "--data_root", str(data_root)]) == 1
    error = capsys.readouterr().err.splitlines()[0]
    assert error.startswith(
        "error: pretrain flip seed 0 failed (headless, exit 2): error: torch.compile"
    )
    assert "(InvalidCxxCompiler: No working C++ compiler" in error
    assert error.endswith(
        "rerun with --compile false: the same training, eager, without the compile speed-up"
    )


def test_import_into_fresh_folders_runs_only_the_notebooks_that_draw(exported, tmp_path, capsys):
    fresh = tmp_path / "runs"
    assert command.main(_study(fresh, "--import", str(exported / "export"))) == 0
    out = capsys.readouterr().out
    assert "imported" in out and "1 models" in out
    executed = sorted(p.name for p in (fresh / "smoke" / "notebooks").glob("*.ipynb"))
    assert executed == [
        "probes-flip-seed0.ipynb",
        "probes-scratch-seed0.ipynb",
        "results.ipynb",
    ]  # never retrained
    assert out.count("skipped, results exist") == 5  # the pretraining and the four evaluations
    figures = {p.name for p in (tmp_path / "figures" / "smoke").iterdir()}
    drawn = {"tsne-flip-seed0.png", "prototypes-flip-seed0.svg", "knn.png", "accuracy-finetune.svg"}
    assert drawn <= figures
    imported = pd.read_csv(tmp_path / "results" / "smoke" / "results.csv")
    original = pd.read_csv(exported / "results" / "smoke" / "results.csv")
    pd.testing.assert_frame_equal(imported, original)


@pytest.mark.parametrize(
    ("given", "expected"),
    [({}, "false"), ({"compile": ""}, "false"), ({"compile": "auto"}, "auto")],
)
def test_headless_pretraining_takes_the_studys_compile_or_the_presets(monkeypatch, given, expected):
    configs = []
    monkeypatch.setattr(headless, "pretrain", lambda config, out, progress: configs.append(config))
    headless.run_step("pretrain", {"preset": "smoke", "aug": "flip", "out_dir": "x", **given})
    assert configs[0].compile == expected


def test_headless_and_notebook_runs_of_a_step_give_the_same_row(smoke_study, tmp_path, data_root):
    notebook_row = json.loads(
        (smoke_study["runs"] / "smoke/scratch/seed-0/finetune-0.1" / RESULT).read_text()
    )
    parameters = {"preset": "smoke", "aug": "scratch", "fraction": 0.1, "mode": "finetune"}
    headless.run_step(
        "finetune", {**parameters, "out_dir": str(tmp_path / "ft"), "data_root": str(data_root)}
    )
    headless_row = json.loads((tmp_path / "ft" / RESULT).read_text())
    for row in (notebook_row, headless_row):
        row.pop("seconds"), row.pop("out_dir")
    assert headless_row == notebook_row


@pytest.mark.parametrize("aug", ["flip", "scratch"])
def test_headless_and_notebook_probes_save_the_same_numbers(smoke_study, tmp_path, data_root, aug):
    # a copy of the encoder's weights without its cached features: they are extracted anew
    runs = tmp_path / "runs"
    source = smoke_study["runs"] / "smoke" / aug / "seed-0"
    copy = runs / "smoke" / aug / "seed-0"
    copy.mkdir(parents=True)
    if aug != "scratch":
        shutil.copy(source / "checkpoint.pt", copy / "checkpoint.pt")
    parameters = {"preset": "smoke", "aug": aug, "runs_dir": str(runs), "data_root": str(data_root)}
    headless.run_step("probes", parameters)
    assert list(copy.glob("features-*.pt"))  # extracted here, not read from the notebook's cache
    for name in (KNN, CLUSTERS):
        notebook = json.loads((source / "probes" / name).read_text())
        assert json.loads((copy / "probes" / name).read_text()) == notebook, name

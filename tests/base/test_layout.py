"""One rule for relative paths: from the project root, whatever the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from swavnb.base import layout
from swavnb.base.layout import (
    encoder_checkpoint,
    encoder_folder,
    evaluation_folder,
    figures_folder,
    is_study_run,
    probes_folder,
    project_root,
    resolve,
    run_folder,
    shown,
)
from swavnb.data.cifar import resolve_data_root

CHECKOUT = Path(__file__).resolve().parents[2]


def test_relative_paths_are_taken_from_the_checkout_not_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(layout.ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # as a JupyterLab kernel in notebooks/, or a shell anywhere
    assert project_root() == CHECKOUT
    assert resolve("runs/quick") == CHECKOUT / "runs" / "quick"
    assert (
        resolve(tmp_path / "elsewhere") == tmp_path / "elsewhere"
    )  # absolute paths stay as they are
    assert resolve("~/x") == Path.home() / "x"
    monkeypatch.delenv("SWAVNB_DATA", raising=False)
    assert resolve_data_root() == CHECKOUT / "data"
    assert resolve_data_root("../shared/data") == CHECKOUT / ".." / "shared" / "data"


def test_the_root_can_be_overridden(tmp_path, monkeypatch):
    monkeypatch.setenv(layout.ROOT_ENV, str(tmp_path))
    assert project_root() == tmp_path.resolve()
    assert run_folder("quick", "swav") == tmp_path.resolve() / "runs" / "quick" / "swav" / "seed-0"
    assert shown(tmp_path / "runs" / "x") == "runs/x" and shown("/elsewhere/y") == "/elsewhere/y"


def test_a_run_set_otherwise_than_the_preset_has_a_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv(layout.ROOT_ENV, str(tmp_path))
    runs = tmp_path.resolve() / "runs" / "quick"
    assert run_folder("quick", "swav", 1, "", {}) == runs / "swav" / "seed-1"
    custom = run_folder("quick", "swav", 1, "", {"lr": 0.01, "epochs": 2})
    assert custom == runs / "custom" / "epochs-2__lr-0.01" / "swav" / "seed-1"  # fields sorted
    assert is_study_run("swav/seed-1/finetune-0.1/result.json")
    assert not is_study_run(custom.relative_to(runs) / "finetune-0.1" / "result.json")
    assert not is_study_run("sweep-lr/0.01/swav/seed-0/finetune-0.1/result.json")


def test_the_run_folder_rule(tmp_path, monkeypatch):
    monkeypatch.setenv(layout.ROOT_ENV, str(tmp_path))
    root = tmp_path.resolve()
    # every replicate (seed) of every encoder has a folder of its own; '' is the default runs/
    assert run_folder("quick", "flip", 2, "") == root / "runs" / "quick" / "flip" / "seed-2"
    assert run_folder("quick", "flip", 0, "elsewhere") == root / "elsewhere/quick/flip/seed-0"
    assert encoder_checkpoint("quick", "swav", 1) == "runs/quick/swav/seed-1/checkpoint.pt"
    assert encoder_checkpoint("quick", "scratch", 1) == "none"
    assert encoder_folder("none", "quick", 3) == root / "runs" / "quick" / "scratch" / "seed-3"
    assert encoder_folder("runs/quick/swav/seed-0/checkpoint.pt", "quick") == root / (
        "runs/quick/swav/seed-0"
    )
    assert encoder_folder("/abs/flip/checkpoint.pt", "quick", runs_dir="elsewhere") == Path(
        "/abs/flip"
    )
    assert evaluation_folder(root / "e", "linear", 0.1) == root / "e" / "linear-0.1"
    assert evaluation_folder(root / "e", "finetune", 1.0) == root / "e" / "finetune-1"
    # an evaluation seed that is not the encoder's own is in the name: it never shares a folder
    assert evaluation_folder(root / "e", "finetune", 0.1, 4) == root / "e" / "finetune-0.1-seed4"
    assert probes_folder(root / "e") == root / "e" / "probes"
    assert probes_folder(root / "e", 4) == root / "e" / "probes-seed4"
    assert figures_folder("smoke", "figs") == root / "figs" / "smoke"
    assert figures_folder("smoke", "") == root / "figures" / "smoke"


@pytest.mark.parametrize("checkpoint", [None, "", "none"])
def test_random_init_spellings(checkpoint):
    assert layout.is_random_init(checkpoint) and not layout.is_random_init("runs/a/checkpoint.pt")

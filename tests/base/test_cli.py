"""Command lines: bad input exits non-zero with one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swavnb import finetune, pretrain
from swavnb.base import cli

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("swavnb.pretrain", "--preset", "huge", "--out", "x"), "unknown preset 'huge'"),
        (
            ("swavnb.pretrain", "--aug", "crop", "--out", "x"),
            "unknown aug 'crop'; choose one of flip, jitter, swav",
        ),
        (("swavnb.pretrain", "--out", "x", "--epochz", "3"), "unknown option --epochz"),
        (
            ("swavnb.finetune", "--checkpoint", "none", "--fraction", "0", "--out", "x"),
            "fraction must be in (0, 1]",
        ),
        (
            (
                "swavnb.finetune",
                "--checkpoint",
                "none",
                "--fraction",
                "1.5",
                "--out",
                "x",
            ),
            "fraction must be in (0, 1]",
        ),
        (
            (
                "swavnb.finetune",
                "--checkpoint",
                "none",
                "--fraction",
                "0.1",
                "--mode",
                "x",
                "--out",
                "x",
            ),
            "unknown mode",
        ),
    ],
)
def test_bad_input_is_one_clear_line(args, message, capsys):
    # in this process (each command's `python -m` wiring is checked below, in a process of its own)
    main = {"swavnb.pretrain": pretrain.main, "swavnb.finetune": finetune.main}[args[0]]
    with pytest.raises(SystemExit) as exited:
        cli.run(main, list(args[1:]))
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_missing_checkpoint_is_one_clear_line_from_the_command():
    result = _run(
        "swavnb.finetune",
        "--checkpoint",
        "missing.pt",
        "--fraction",
        "0.1",
        "--out",
        "x",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "does not exist" in lines[0]


def test_missing_dataset_names_the_fix(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "swavnb.pretrain",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "run"),
            "--data_root",
            str(tmp_path / "nowhere"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "SWAVNB_DATA"}, "SWAVNB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "CIFAR-100 not found" in result.stderr and "SWAVNB_DATA" in result.stderr


def test_a_pretraining_set_otherwise_than_the_preset_trains_in_a_folder_of_its_own(
    tmp_path, monkeypatch
):
    # the study's folder of this encoder stays untouched: its own run is still to come there
    monkeypatch.setenv("SWAVNB_ROOT", str(tmp_path))
    tiny = ["--train_images", "32", "--batch_size", "16", "--epochs", "1", "--image_size", "8"]
    tiny += ["--local_size", "4", "--n_prototypes", "12", "--feat_dim", "8"]
    pretrain.main(["--preset", "smoke", "--aug", "flip", "--seed", "2", "--no-progress", *tiny])
    runs = tmp_path.resolve() / "runs" / "smoke"
    name = "batch_size-16__epochs-1__feat_dim-8__image_size-8__local_size-4__n_prototypes-12"
    custom = runs / "custom" / f"{name}__train_images-32" / "flip" / "seed-2"
    assert (custom / "checkpoint.pt").is_file() and not (runs / "flip").exists()

"""results.csv and tables.md from run folders of synthetic results."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from swavnb.results import (
    COLUMNS,
    SEED_RESULTS,
    NoRunsError,
    collect_knn,
    collect_results,
    save_knn,
    write_results,
)


def _result(folder: Path, aug: str, mode: str, fraction: float, top1: float) -> None:
    row = {
        "preset": "smoke",
        "aug": aug,
        "mode": mode,
        "fraction": fraction,
        "top1": top1,
        "top5": top1 + 20,
        "epochs": 1.0,
        "seconds": 3.0,
        "device": "cpu",
        "n_labels": 100,
        "test_images": 100,
        "checkpoint": "none" if aug == "scratch" else f"runs/smoke/{aug}/checkpoint.pt",
        "curves": [
            {
                "step": 1,
                "epoch": 1.0,
                "train_loss": 4.0,
                "train_top1": 1.0,
                "test_top1": 1.0,
                "test_top5": 5.0,
            }
        ],
        "per_superclass": {"fish": 10.0},
    }
    out = folder / aug / f"{mode}-{fraction:g}"
    out.mkdir(parents=True)
    (out / "result.json").write_text(json.dumps(row))


def _study(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    run_dir = runs / "smoke"
    _result(run_dir, "scratch", "finetune", 0.1, 3.0)
    _result(run_dir, "flip", "linear", 0.1, 12.0)
    _result(run_dir, "flip", "finetune", 0.1, 17.5)
    _result(run_dir, "flip", "finetune", 0.01, 4.0)
    _result(run_dir, "swav", "finetune", 1.0, 40.0)
    save_knn(
        {
            "precise": {20: {"top1": 11.0, "top5": 30.0}, 200: {"top1": 10.0, "top5": 31.0}},
            "ema": {20: {"top1": 9.0, "top5": 28.0}},
        },
        "smoke",
        "flip",
        run_dir / "flip" / "probes",
    )
    metrics = {
        "config": {"aug": "flip"},
        "device": "cpu",
        "epochs": [
            {
                "epoch": 1,
                "loss": 3.0,
                "lr": 1e-3,
                "img_per_s": 10.0,
                "seconds": 60.0,
                "usage_entropy": 0.8,
                "prototypes_used": 0.9,
            }
        ],
    }
    (run_dir / "flip" / "metrics.json").write_text(json.dumps(metrics))
    return runs


def test_results_csv_has_the_study_columns_first_and_one_row_per_run(tmp_path):
    runs = _study(tmp_path)
    results = write_results("smoke", runs, tmp_path / "results")
    csv = pd.read_csv(tmp_path / "results" / "smoke" / "results.csv")
    assert tuple(csv.columns[: len(COLUMNS)]) == COLUMNS
    assert "curves" not in csv.columns and "per_superclass" not in csv.columns
    assert len(csv) == 5 and results.csv == tmp_path / "results" / "smoke" / "results.csv"
    assert list(csv["aug"]) == [
        "flip",
        "flip",
        "flip",
        "swav",
        "scratch",
    ]  # study order, then mode and fraction
    assert list(csv["mode"][:3]) == ["finetune", "finetune", "linear"]
    scratch = csv[csv["aug"] == "scratch"]
    assert list(scratch["fraction"]) == [0.1] and scratch["top1"].item() == 3.0


def test_tables_put_ours_beside_every_seed_number_and_the_scratch_baseline(tmp_path):
    runs = _study(tmp_path)
    write_results("smoke", runs, tmp_path / "results")
    tables = (tmp_path / "results" / "smoke" / "tables.md").read_text()
    for table in SEED_RESULTS.values():
        for top1, top5 in table.values():
            assert f"{top1:.2f}" in tables and f"{top5:.2f}" in tables
    assert "## Table 1 of the seed: jitter" in tables and "## Table 2 of the seed: flip" in tables
    flip = tables.split("## Table 2")[1].split("##")[0]
    assert "| 10% | 17.50 | 37.50 | 18.69 | 41.44 | -1.19 | 3.00 | 23.00 |" in flip
    assert "| 1% | 4.00 | 24.00 | 4.72 | 16.22 | -0.72 | – | – |" in flip
    assert "| 10% | 12.00 / 32.00 |" in tables.split("## Linear")[1]  # the linear row
    knn = tables.split("## Weighted k-NN")[1]
    assert "| k = 20, precise BN | k = 200, precise BN | k = 20, ema BN |" in knn
    assert "| flip | 11.00 / 30.00 | 10.00 / 31.00 | 9.00 / 28.00 |" in knn
    assert "## Pretraining runs" in tables and "| flip | 1 | 3.0000 |" in tables
    # a run from before jobs were recorded: not known whether its minutes were time-shared
    assert "| precision | shared with jobs |" in tables and "| cpu | – | – |" in tables


def test_knn_rows_round_trip_through_knn_json(tmp_path):
    written = save_knn(
        {"precise": {5: {"top1": 1.5, "top5": 7.0}}, "ema": {5: {"top1": 2.0 / 3, "top5": 8.0}}},
        "smoke",
        "scratch",
        tmp_path / "a" / "probes",
    )
    assert list(written.columns) == ["preset", "aug", "bn_stats", "k", "top1", "top5"]
    collected = collect_knn(tmp_path)
    assert collected.to_dict("records") == [
        {
            "preset": "smoke",
            "aug": "scratch",
            "bn_stats": "ema",
            "k": 5,
            "top1": 0.6667,
            "top5": 8.0,
        },
        {
            "preset": "smoke",
            "aug": "scratch",
            "bn_stats": "precise",
            "k": 5,
            "top1": 1.5,
            "top5": 7.0,
        },
    ]  # rounded like results.csv


def test_an_empty_study_is_an_error_naming_the_folder_and_the_command_and_writes_nothing(tmp_path):
    assert tuple(collect_results(tmp_path).columns) == COLUMNS
    runs = _study(tmp_path)
    write_results("smoke", runs, tmp_path / "results")
    before = {path: path.read_bytes() for path in (tmp_path / "results" / "smoke").iterdir()}
    with pytest.raises(
        NoRunsError,
        match=r"no runs of preset 'smoke' under '.*empty/smoke'.*python -m swavnb.study "
        r"--preset smoke",
    ):
        write_results("smoke", tmp_path / "empty", tmp_path / "results")
    assert {
        path: path.read_bytes() for path in (tmp_path / "results" / "smoke").iterdir()
    } == before


def test_a_study_with_no_probes_yet_still_gets_tables(tmp_path):
    runs = tmp_path / "runs"
    _result(runs / "smoke", "scratch", "finetune", 0.1, 3.0)
    results = write_results("smoke", runs, tmp_path / "results")
    assert (
        len(results.rows) == 1 and "2.92" in results.tables and "No probes yet." in results.tables
    )

"""results.csv and tables.md from run folders of synthetic results."""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from swavnb.base.errors import DamagedFileError, DiskFullError, RunFolderBusy
from swavnb.base.layout import CLUSTERS, KNN
from swavnb.study.results import (
    COLUMNS,
    REPORT_RESULTS,
    NoRunsError,
    collect_knn,
    collect_results,
    knn_table,
    results_current,
    save_clusters,
    save_knn,
    write_results,
)


def _result(folder: Path, aug: str, mode: str, fraction: float, top1: float, seed: int = 0) -> None:
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
        "n_labels": round(fraction * 5000),  # of a 5,000-image pool, as quick's
        "test_images": 100,
        "seed": seed,
        "checkpoint": "none" if aug == "scratch" else f"runs/smoke/{aug}/seed-0/checkpoint.pt",
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
    out = folder / aug / f"seed-{seed}" / f"{mode}-{fraction:g}"
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
        run_dir / "flip" / "seed-0" / "probes",
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
    (run_dir / "flip" / "seed-0" / "metrics.json").write_text(json.dumps(metrics))
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
    # every row says how many labels and which seed, and the test-set error of its accuracy
    assert list(scratch["n_labels"]) == [500] and list(scratch["seed"]) == [0]
    assert scratch["top1_se"].item() == pytest.approx(100 * math.sqrt(0.03 * 0.97 / 100), abs=1e-4)


def test_sweep_and_custom_runs_stay_out_of_the_study_rows(tmp_path):
    runs = _study(tmp_path)
    # the same encoder, seed and cell trained otherwise: rows of their own, not the study's
    _result(runs / "smoke" / "custom" / "epochs-2", "flip", "finetune", 0.1, 99.0)
    _result(runs / "smoke" / "sweep-lr" / "0.01", "flip", "finetune", 0.1, 98.0)
    rows = collect_results(runs / "smoke")
    assert len(rows) == 5 and rows["top1"].max() == 40.0


def test_several_seeds_give_a_mean_and_a_t_interval_and_claims_md(tmp_path):
    runs = tmp_path / "runs"
    for seed, (flip, scratch) in enumerate([(10.0, 3.0), (12.0, 4.0), (14.0, 5.0)]):
        _result(runs / "smoke", "flip", "finetune", 0.1, flip, seed)
        _result(runs / "smoke", "scratch", "finetune", 0.1, scratch, seed)
    results = write_results("smoke", runs, tmp_path / "results")
    # mean 12, sd 2 over 3 seeds: t(0.975, 2) * 2 / sqrt(3) = 4.97
    assert "| 500 | 12.00 ± 4.97 |" in results.tables.split("## Table 2")[1]
    assert "mean over 3 seeds (0, 1, 2)" in results.tables
    claims = (tmp_path / "results" / "smoke" / "claims.md").read_text()
    assert claims == results.claims and "| flip − scratch | 500 | +8.00 [+5.52, +10.48] | 3 |" in (
        claims
    )


def test_tables_name_the_seed_of_a_one_seed_study_and_the_cells_short_of_seeds(tmp_path):
    runs = tmp_path / "runs"
    _result(runs / "smoke", "flip", "finetune", 0.1, 10.0, seed=1)
    assert "one run (seed 1)" in write_results("smoke", runs, tmp_path / "results").tables
    for seed in (0, 2):
        _result(runs / "smoke", "flip", "finetune", 0.1, 11.0 + seed, seed)
    _result(runs / "smoke", "scratch", "finetune", 0.1, 3.0, seed=0)
    tables = write_results("smoke", runs, tmp_path / "results").tables
    assert "mean over 3 seeds (0, 1, 2)" in tables
    assert "cells over fewer seeds: scratch finetune at 500 labels (1 seed)." in tables


def test_tables_put_ours_beside_every_report_number_and_the_scratch_baseline(tmp_path):
    runs = _study(tmp_path)
    write_results("smoke", runs, tmp_path / "results")
    tables = (tmp_path / "results" / "smoke" / "tables.md").read_text()
    for table in REPORT_RESULTS.values():
        for top1, top5 in table.values():
            assert f"{top1:.2f}" in tables and f"{top5:.2f}" in tables
    assert "## Table 1 of the reference report: jitter" in tables
    assert "## Table 2 of the reference report: flip" in tables
    flip = tables.split("## Table 2")[1].split("##")[0]
    # rows are label counts: our 10 % of a 5,000-image pool is the report's 1 % of 50,000 (4.72);
    # ours beside the random-init baseline, the report's last and no difference: another scale
    ci = lambda p: f"{100 * p:.2f} ± {1.959964 * 100 * math.sqrt(p * (1 - p) / 100):.2f}"
    line = f"| 500 | {ci(0.175)} | {ci(0.375)} | {ci(0.03)} | {ci(0.23)} | 4.72 | 16.22 |"
    assert line in flip
    assert f"| 50 | {ci(0.04)} | {ci(0.24)} | – | – | – | – |" in flip
    assert "| 5,000 | – | – | – | – | 18.69 | 41.44 |" in flip
    assert "Δ" not in tables and "50,000 images, 32 px, 100 epochs" in tables
    assert f"| 500 | {ci(0.12)} / {ci(0.32)} |" in tables.split("## Linear")[1]  # the linear row
    assert "test-set standard error" in tables  # one seed: the interval says what it is
    knn = tables.split("## Weighted k-NN")[1]
    assert "| k = 20, precise BN | k = 200, precise BN | k = 20, ema BN |" in knn
    assert "| flip | 11.00 / 30.00 | 10.00 / 31.00 | 9.00 / 28.00 |" in knn
    assert "## Pretraining runs" in tables and "| flip | 0 | 1 | 3.0000 |" in tables
    # which usage entropy: the last epoch's training views, not the probes' test-image figure
    assert "| usage entropy (last epoch) | prototypes used (last epoch) |" in tables
    assert "last pretraining epoch's training views" in tables and "usage-<aug>-seed" in tables
    # a run from before jobs were recorded: not known whether its minutes were time-shared
    assert "| precision | shared with jobs |" in tables and "| cpu | – | – |" in tables


def test_knn_rows_round_trip_through_knn_json(tmp_path):
    written = save_knn(
        {"precise": {5: {"top1": 1.5, "top5": 7.0}}, "ema": {5: {"top1": 2.0 / 3, "top5": 8.0}}},
        "smoke",
        "scratch",
        tmp_path / "a" / "probes",
        seed=2,
        test_images=100,
    )
    assert list(written.columns) == [
        "preset",
        "aug",
        "seed",
        "bn_stats",
        "k",
        "top1",
        "top5",
        "test_images",
    ]
    collected = collect_knn(tmp_path)
    common = {"preset": "smoke", "aug": "scratch", "seed": 2, "k": 5, "test_images": 100}
    assert collected.to_dict("records") == [
        {**common, "bn_stats": "ema", "top1": 0.6667, "top5": 8.0},
        {**common, "bn_stats": "precise", "top1": 1.5, "top5": 7.0},
    ]  # rounded like results.csv


def test_probe_rows_are_written_under_the_folders_lock(tmp_path, lock_holder):
    # a notebook cell rerun after its kernel released the folder is refused while a study has it
    probes = tmp_path / "flip" / "seed-0" / "probes"
    holder = lock_holder(probes)
    with pytest.raises(RunFolderBusy, match=f"probes folder .+ in use by process {holder.pid}"):
        save_knn({"precise": {5: {"top1": 1.0, "top5": 5.0}}}, "smoke", "flip", probes)
    with pytest.raises(RunFolderBusy, match=f"in use by process {holder.pid}"):
        save_clusters([], probes)
    assert not (probes / KNN).exists() and not (probes / CLUSTERS).exists()


def test_knn_over_seeds_is_a_mean_with_its_interval(tmp_path):
    for seed, top1 in enumerate((10.0, 12.0, 14.0)):
        save_knn(
            {"precise": {20: {"top1": top1, "top5": 30.0}}},
            "smoke",
            "flip",
            tmp_path / "flip" / f"seed-{seed}" / "probes",
            seed,
            2000,
        )
    table = knn_table(collect_knn(tmp_path))
    assert "| flip | 12.00 ± 4.97 / 30.00 ± 0.00 |" in table


def test_an_empty_study_is_an_error_naming_the_folder_and_the_command_and_writes_nothing(tmp_path):
    assert tuple(collect_results(tmp_path).columns)[: len(COLUMNS)] == COLUMNS
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


def test_a_full_disk_while_results_are_written_keeps_every_previous_file_and_names_the_file(
    tmp_path, monkeypatch
):
    runs, out = _study(tmp_path), tmp_path / "results" / "smoke"
    write_results("smoke", runs, tmp_path / "results")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    _result(runs / "smoke", "jitter", "finetune", 0.1, 15.0)  # a new run to gather
    written = []

    def fsync_then_full(fd):  # the disk fills up after the first file
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    with pytest.raises(DiskFullError) as full:
        write_results("smoke", runs, tmp_path / "results")
    message = str(full.value)
    assert "\n" not in message and f"no space left to write '{out}/" in message, message
    assert re.search(r"\d KiB needed, [\d.]+ [KM]iB free", message), message
    assert "the previous version is intact" in message
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert set(after) == set(before)  # no temporary left
    assert after["results.csv"] == before["results.csv"]  # the new rows are not there: not done
    assert not results_current("smoke", runs, tmp_path / "results")
    monkeypatch.undo()  # space freed: the same command writes them
    write_results("smoke", runs, tmp_path / "results")
    assert results_current("smoke", runs, tmp_path / "results")
    assert "jitter" in (out / "results.csv").read_text()


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: "",  # what a full disk left with to_csv: an empty file
        lambda text: text[: len(text) // 2],  # cut off
        lambda text: text.replace("top1", "t1"),  # a column missing
        lambda text: "\x00\xff garbage",
    ],
)
def test_the_results_step_is_done_only_when_its_files_are_whole_and_current(tmp_path, damage):
    from swavnb.study.plan import plan

    runs, results = _study(tmp_path), tmp_path / "results"
    step = plan("smoke", ["flip"], [0.1], runs_dir=runs, results_dir=results)[-1]
    assert step.name == "results" and not step.done()
    write_results("smoke", runs, results)
    assert step.done()
    csv = results / "smoke" / "results.csv"
    good = csv.read_text()
    csv.write_text(damage(good))
    assert not step.done()  # never "skipped, results exist" on a damaged file
    csv.write_text(good)
    (results / "smoke" / "tables.md").write_text("")
    assert not step.done()
    write_results("smoke", runs, results)
    assert step.done()
    _result(runs / "smoke", "jitter", "finetune", 0.1, 15.0)
    assert not step.done()  # a run the tables do not hold yet


@pytest.mark.parametrize(
    ("field", "text", "problem"),
    [
        ("top1", "-5", "top1 -5 is not a percentage in [0, 100]"),
        ("top1", "NaN", "top1 nan is not a percentage"),
        ("top5", "1e999", "top5 inf is not a percentage"),
        ("top5", "1.0", "top5 1.0 is below top1 12.0"),
        ("top1_se", "-0.5", "top1_se -0.5 is not a finite number >= 0"),
        ("fraction", "0", "fraction 0 is not in (0, 1]"),
    ],
)
def test_an_impossible_result_value_is_refused_naming_the_file(tmp_path, field, text, problem):
    runs = _study(tmp_path)
    path = runs / "smoke" / "flip" / "seed-0" / "linear-0.1" / "result.json"
    path.write_text(
        path.read_text()
        .replace("{", f'{{"{field}": {text}, ', 1)
        .replace(f', "{field}": ', ', "_old": ', 1)
    )
    with pytest.raises(DamagedFileError) as refused:
        write_results("smoke", runs, tmp_path / "results")
    message = str(refused.value)
    assert "\n" not in message and f"'{path}' is damaged ({problem}" in message, message
    assert "rerun the study, which redoes that evaluation" in message
    assert not (tmp_path / "results").exists()  # nothing written from the bad row


@pytest.mark.parametrize("name", ["result.json", "knn.json", "metrics.json"])
def test_a_cut_off_json_file_is_one_line_naming_it(tmp_path, name):
    runs = _study(tmp_path)
    folder = runs / "smoke" / "flip" / "seed-0"
    path = {"result.json": folder / "linear-0.1", "knn.json": folder / "probes"}.get(name, folder)
    path = path / name
    path.write_text(path.read_text()[:20])
    with pytest.raises(DamagedFileError) as refused:
        write_results("smoke", runs, tmp_path / "results")
    message = str(refused.value)
    assert "\n" not in message and f"'{path}' is damaged (not readable JSON" in message, message
    assert not results_current("smoke", runs, tmp_path / "results")

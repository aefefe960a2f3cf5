"""The study's rows are refused, naming the folders, where a mean over seeds would miscount them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from swavnb.base.errors import StudyRowsError
from swavnb.study.claims import comparisons
from swavnb.study.results import collect_results, summarise, write_results
from swavnb.study.rows import check_rows


def _result(runs: Path, aug: str, mode: str, fraction: float, seed: int, **fields) -> Path:
    """A finished evaluation's result.json in the study's layout (``folder`` overrides it)."""
    folder = fields.pop("folder", f"{mode}-{fraction:g}")
    out = runs / "smoke" / aug / f"seed-{fields.get('encoder_seed', seed)}" / folder
    out.mkdir(parents=True)
    row = {
        "preset": "smoke",
        "aug": aug,
        "mode": mode,
        "fraction": fraction,
        "top1": 10.0 + seed,
        "top5": 30.0,
        "epochs": 1.0,
        "seconds": 1.0,
        "device": "cpu",
        "n_labels": round(fraction * 5000),
        "test_images": 100,
        "image_size": 16,
        "seed": seed,
        "out_dir": str(out.relative_to(runs.parent)),
        **fields,
    }
    (out / "result.json").write_text(json.dumps(row))
    return out


def _two_seeds(runs: Path) -> None:
    for seed in (0, 1):
        for aug in ("flip", "scratch"):
            _result(runs, aug, "finetune", 0.1, seed, encoder_seed=seed, bn_stats="trained")


def test_sound_rows_pass_and_give_tables(tmp_path):
    runs = tmp_path / "runs"
    _two_seeds(runs)
    check_rows(collect_results(runs / "smoke"))
    assert "mean over 2 seeds" in write_results("smoke", runs, tmp_path / "results").tables


def test_an_evaluation_with_another_seed_than_its_encoders_is_refused_and_nothing_is_written(
    tmp_path,
):
    runs, results = tmp_path / "runs", tmp_path / "results"
    _two_seeds(runs)
    write_results("smoke", runs, results)
    written = [results / "smoke" / name for name in ("results.csv", "tables.md", "claims.md")]
    before = [path.read_text() for path in written]
    # seed 1's evaluation of seed 0's encoder: a second row for seed 1, on another encoder
    extra = _result(runs, "flip", "finetune", 0.1, 1, encoder_seed=0, folder="finetune-0.1-seed1")
    with pytest.raises(StudyRowsError, match="another seed than their encoder's") as error:
        write_results("smoke", runs, results)
    assert extra.name in str(error.value) and "move these folders out" in str(error.value)
    assert [path.read_text() for path in written] == before


@pytest.mark.parametrize("entry", [check_rows, summarise, comparisons])
def test_two_rows_for_one_seed_of_one_cell_are_refused_by_every_entry_point(tmp_path, entry):
    runs = tmp_path / "runs"
    _two_seeds(runs)
    # 0.10001 of 5,000 is the same 500 labels in a folder of its own: one seed counted twice
    _result(runs, "flip", "finetune", 0.10001, 0, encoder_seed=0, bn_stats="trained")
    rows = collect_results(runs / "smoke")
    with pytest.raises(StudyRowsError, match="2 rows for flip finetune at 500 labels, seed 0"):
        entry(rows)


def test_a_cell_whose_seeds_used_different_bn_statistics_is_refused(tmp_path):
    runs = tmp_path / "runs"
    for seed, bn_stats in ((0, "ema"), (1, "precise")):
        _result(runs, "swav", "linear", 0.1, seed, encoder_seed=seed, bn_stats=bn_stats)
    rows = collect_results(runs / "smoke")
    with pytest.raises(StudyRowsError, match="mixes bn_stats ema, precise across seeds"):
        summarise(rows)
    # the same seeds with one setup are a cell
    rows["bn_stats"] = "precise"
    assert summarise(rows)["top1"].item().n == 2


def test_the_committed_rows_are_sound():
    check_rows(pd.read_csv(Path(__file__).parents[2] / "results" / "quick" / "results.csv"))


def _claimed(folder: Path, fraction: float, **settings) -> None:
    """The manifest an evaluation of flip (seed 0) at ``fraction`` writes when it starts."""
    from swavnb.base import run_guard
    from swavnb.evaluation.config import finetune_config
    from swavnb.evaluation.features import Encoder
    from swavnb.evaluation.folders import evaluation_identity

    source = "runs/smoke/flip/seed-0/checkpoint.pt"
    encoder = Encoder("flip", 0, "run-1", "smoke", source, folder.parent)
    identity = evaluation_identity(
        encoder, "finetune", finetune_config("smoke", **settings), fraction
    )
    run_guard.claim(folder, identity, "run-1", ("result.json",), source)


def test_a_one_off_at_another_fraction_of_the_same_labels_is_one_evaluation_kept_once(
    tmp_path, capsys
):
    runs, results = tmp_path / "runs", tmp_path / "results"
    # smoke's 200-image pool: 1 % (the study's) and 30 % (a one-off) both take 1 image a class
    cell = dict(n_labels=100, encoder_seed=0, bn_stats="trained")
    one_off = _result(runs, "flip", "finetune", 0.3, 0, **cell, top1=13.0)
    studied = _result(runs, "flip", "finetune", 0.01, 0, **cell)
    for folder, fraction in ((one_off, 0.3), (studied, 0.01)):
        _claimed(folder, fraction)
    rows = write_results("smoke", runs, results).rows
    assert list(zip(rows["fraction"], rows["top1"], strict=True)) == [(0.01, 10.0)]
    assert len(pd.read_csv(results / "smoke" / "results.csv")) == 1
    said = capsys.readouterr().out
    assert f"results: '{one_off}' evaluated the same 100 labels of flip finetune (seed 0)" in said
    assert f"as '{studied}', with the same settings: the tables take the latter" in said
    # trained otherwise (another lr_head): not the same evaluation, so still two rows of one run
    (one_off / "run.json").unlink()
    _claimed(one_off, 0.3, lr_head=0.05)
    with pytest.raises(StudyRowsError, match="2 rows for flip finetune at 100 labels, seed 0"):
        write_results("smoke", runs, results)

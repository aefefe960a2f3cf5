"""The pretraining budget: epochs checked before anything trains, the preset's own epochs read
from the study's run (not trained twice), rows with their errors, trends computed from them."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from swavnb.base.layout import CHECKPOINT, SCRATCH, run_folder, sweep_folder
from swavnb.evaluation.intervals import accuracy_se
from swavnb.study import __main__ as command
from swavnb.study.budget import collect_budget, parse_budget
from swavnb.study.budget_claims import budget_claims, effects, trends
from swavnb.study.budget_plan import plan_budget
from swavnb.study.budget_plots import RANDOM_INIT, budget_claims_figure, budget_figure
from swavnb.study.sweeps import parse_sweep


@pytest.mark.parametrize(
    "text, message",
    [
        ("4", "--budget needs at least two different epochs"),
        ("1,two", "--budget takes epochs as whole numbers"),
        ("0,4", "--budget epochs must be >= 1 (random init is the budget-0 point)"),
    ],
)
def test_bad_budgets_are_refused_before_anything_trains(text, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        command.main(["--preset", "smoke", "--budget", text, "--runs_dir", str(tmp_path)])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_budget_is_its_own_command_not_a_sweep_of_epochs():
    with pytest.raises(ValueError, match="--budget 1,2,8"):
        parse_sweep("epochs=1,2,8", "smoke", "flip")
    assert parse_budget("8,1,2,1", "smoke") == (1, 2, 8)


def test_the_presets_own_epochs_are_the_studys_run_and_every_evaluation_follows_its_pretraining(
    tmp_path,
):
    runs = tmp_path / "runs"
    steps = plan_budget("smoke", (1, 2, 4), ["flip", "swav"], (0, 1), runs_dir=runs)
    names = [step.name for step in steps]
    assert len(names) == len(set(names))  # the scheduler tells steps apart by name
    pretrainings = {s.name: s for s in steps if s.notebook == "pretrain"}
    assert len(pretrainings) == 3 * 2 * 2
    for seed in (0, 1):
        for aug in ("flip", "swav"):
            own = pretrainings[f"pretrain {aug} 2 epochs seed {seed}"].parameters
            assert own["out_dir"] == str(run_folder("smoke", aug, seed, runs))  # smoke: 2 epochs
            assert own["overrides"] == {}
            other = pretrainings[f"pretrain {aug} 4 epochs seed {seed}"].parameters
            assert other["out_dir"] == str(sweep_folder("smoke", "epochs", 4, aug, seed, runs))
            assert other["overrides"] == {"epochs": 4}
    evaluations = [s for s in steps if s.notebook in ("finetune", "linear", "knn")]
    # random init and 3 budgets of 2 augs, for 2 seeds: fine-tuned, linear, k-NN each
    assert len(evaluations) == (1 + 3 * 2) * 2 * 3
    for step in evaluations:
        if step.parameters["checkpoint"] == "none":
            continue
        assert step.after and step.after[0] in names[: names.index(step.name)]
    assert steps[-1].notebook == "budget" and set(steps[-1].after) == set(names[:-1])


def test_a_smoke_budget_reads_the_studys_run_trains_the_rest_once_and_resumes(
    smoke_study, data_root, tmp_path, capsys
):
    # a copy of the finished smoke study (flip, 2 epochs, random init): only flip's 1 epoch trains
    runs = tmp_path / "runs"
    shutil.copytree(smoke_study["runs"], runs, symlinks=True)
    study_run = run_folder("smoke", "flip", 0, runs)
    stamp = (study_run / CHECKPOINT).stat().st_mtime_ns
    out = {"results": tmp_path / "results", "figures": tmp_path / "figures"}
    argv = ["--preset", "smoke", "--augs", "flip", "--budget", "1,2", "--headless"]
    argv += ["--jobs", "2", "--data_root", str(data_root), "--runs_dir", str(runs)]
    argv += ["--results_dir", str(out["results"]), "--figures_dir", str(out["figures"])]
    assert command.main(argv) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "pretraining: 1 epoch to go in 1 run (flip: 1)" in said  # the cost, before it runs
    assert (study_run / CHECKPOINT).stat().st_mtime_ns == stamp  # not trained twice
    assert (sweep_folder("smoke", "epochs", 1, "flip", 0, runs) / CHECKPOINT).is_file()

    rows = pd.read_csv(out["results"] / "smoke" / "budget.csv")
    assert set(zip(rows["aug"], rows["epochs"], rows["seed"], strict=True)) == {
        ("flip", 1, 0),
        ("flip", 2, 0),
        (SCRATCH, 0, 0),
    }
    for _, encoder in rows.groupby(["aug", "epochs"]):
        assert sorted(encoder["evaluation"]) == ["finetune", "knn", "linear", "linear"]
    assert rows["top1"].notna().all()
    for row in rows.itertuples():  # each row's test-set error, from its own top-1 and test images
        assert row.top1_se == pytest.approx(accuracy_se(row.top1, row.test_images), abs=1e-4)
    # the 2-epoch point is the study's own fine-tuning, read from its folder
    study_rows = pd.read_csv(smoke_study["results"] / "smoke" / "results.csv")
    study_ft = study_rows[(study_rows["aug"] == "flip") & (study_rows["mode"] == "finetune")]
    budget_ft = rows[(rows["aug"] == "flip") & (rows["epochs"] == 2)]
    budget_ft = budget_ft[budget_ft["evaluation"] == "finetune"]
    assert budget_ft["top1"].round(4).tolist() == study_ft["top1"].round(4).tolist()
    pd.testing.assert_frame_equal(rows, collect_budget(runs, "smoke"))
    for name in ("budget", "budget-claims"):
        assert (out["figures"] / "smoke" / f"{name}.png").is_file()
    claims = (out["results"] / "smoke" / "claims.md").read_text()
    assert "## Against the pretraining budget" in claims
    assert "| C1: " in claims and "| C4: " in claims

    # rerun: every pretraining and evaluation is found done; nothing trains
    assert command.main(argv) == 0
    rerun = capsys.readouterr().out
    assert "pretraining: all 2 runs done" in rerun
    for step in plan_budget("smoke", (1, 2), ["flip"])[:-1]:  # the results step may rewrite
        assert f"{step.name}: skipped, results exist" in rerun


def _rows(effect_per_doubling: float, noise: float, seeds: int = 3) -> pd.DataFrame:
    """Budget rows of swav and random init: swav's top-1 is 10 + effect x log2(epochs) + noise."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        rows.append(_row(SCRATCH, 0, seed, 10.0 + rng.normal(0, noise)))
        for epochs in (1, 2, 4, 8, 16):
            top1 = 10.0 + effect_per_doubling * np.log2(epochs) + rng.normal(0, noise)
            rows.append(_row("swav", epochs, seed, top1))
    return pd.DataFrame(rows)


def _row(aug: str, epochs: int, seed: int, top1: float) -> dict:
    return {
        "preset": "quick", "aug": aug, "epochs": epochs, "seed": seed, "evaluation": "linear",
        "fraction": 0.1, "n_labels": 500, "top1": top1, "top1_se": 0.5, "top5": top1 * 2,
        "top5_se": 0.8, "test_images": 2000,
    }  # fmt: skip


def test_an_effect_that_grows_with_the_budget_is_found_to_grow_and_a_flat_one_is_not():
    growing, flat = trends(_rows(2.0, 0.2)), trends(_rows(0.0, 0.2))
    assert list(growing["claim"]) == ["C1"] and list(growing["trend"]) == ["grows"]
    assert growing["slope"].iloc[0] == pytest.approx(2.0, abs=0.3)
    assert list(flat["trend"]) == ["cannot tell"]
    assert flat["low"].iloc[0] < 0 < flat["high"].iloc[0]
    # the effect at each budget is paired by seed: swav minus that seed's random init
    at16 = effects(_rows(2.0, 0.0))
    assert at16[at16["epochs"] == 16]["effect"].iloc[0] == pytest.approx(8.0)
    lines = budget_claims(_rows(2.0, 0.2))
    c1 = next(line for line in lines if line.startswith("| C1"))
    assert "**grows**" in c1 and "**holds**" in c1  # at 16 epochs, +8 points
    assert next(line for line in lines if line.startswith("| C2")).count("not in the budget") == 1


def test_the_budget_figures_draw_intervals_on_a_log_axis_with_random_init_as_a_band():
    rows = _rows(2.0, 0.2)
    fig = budget_figure(rows)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "epochs" in ax.get_xlabel() and ax.get_title()
    assert any(patch.get_gid() == RANDOM_INIT for patch in ax.patches)
    assert {"swav", "random init"} <= set(ax.get_legend_handles_labels()[1])
    assert len(ax.containers) == 1 and ax.containers[0].has_yerr  # swav's 95 % intervals
    claims = budget_claims_figure(rows)
    assert claims.axes[0].get_xscale() == "log" and "C1" in claims.axes[0].get_title()

"""Sweeps: values checked before anything trains, one encoder per value, resumed, rows and a
verdict computed from them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from swavnb.base.layout import CHECKPOINT, run_folder, sweep_folder
from swavnb.study import __main__ as command
from swavnb.study import plan as study
from swavnb.study import sweeps
from swavnb.study.sweeps import (
    collect_sweep,
    parse_sweep,
    sweep_checkpoints,
    sweep_claims,
    verdict,
)


@pytest.mark.parametrize(
    "text, message",
    [
        ("colour=1,2", "cannot sweep 'colour'; sweepable fields: "),
        ("device=cpu,cuda", "cannot sweep 'device'"),
        ("n_prototypes=30", "needs at least two different values"),
        ("n_prototypes=30,many", "--n_prototypes: cannot read 'many' as int"),
        ("batch_size=16,512", "--sweep batch_size=512: batch_size 512 is larger than the 200"),
        (
            "queue_length=64,8",
            "--sweep queue_length=8: queue_length 8 must hold at least one batch",
        ),
        ("n_prototypes", "--sweep takes FIELD=v1,v2,..."),
        ("aug=flip,colour", "--sweep aug=colour: unknown aug 'colour'; choose one of flip,"),
    ],
)
def test_bad_sweeps_are_refused_before_anything_trains(text, message, tmp_path, capsys):
    with pytest.raises(ValueError) as refused:
        parse_sweep(text, "smoke", "flip")
    assert message in str(refused.value)
    with pytest.raises(SystemExit) as exited:  # the command: one line, exit 2, nothing written
        command.main(["--preset", "smoke", "--sweep", text, "--runs_dir", str(tmp_path)])
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_verdict_on_the_seeds_choice_comes_from_the_rows():
    def rows(values: dict[int, list[float]]) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"value": v, "aug": "swav", "seed": s, "linear_top1": a, "linear_top1_se": 0.5}
                for v, accuracies in values.items()
                for s, a in enumerate(accuracies)
            ]
        )

    best = rows({300: [8.0, 8.2, 8.1], 3000: [10.0, 10.3, 10.1]})
    assert verdict(best, "n_prototypes")[1] == "holds"
    worse = rows({300: [10.0, 10.3, 10.1], 3000: [8.0, 8.2, 8.1]})
    assert verdict(worse, "n_prototypes")[1] == "does not hold"
    noisy = rows({300: [8.0, 11.0, 9.0], 3000: [10.0, 8.5, 9.6]})
    assert verdict(noisy, "n_prototypes")[1] == "cannot tell at this scale"
    assert verdict(rows({30: [1.0], 300: [2.0]}), "n_prototypes")[1].startswith("cannot tell:")
    assert verdict(best, "lr")[1] == "–"  # the reference report claims nothing about the lr
    # two encoders' sweeps are two verdicts: one table would pair flip's seed 0 with swav's
    both = pd.concat([best, worse.assign(aug="flip")])
    with pytest.raises(ValueError, match="one encoder's rows, got swav, flip"):
        verdict(both, "n_prototypes")


def test_a_sweep_before_the_study_links_the_presets_value_to_the_studys_future_run(tmp_path):
    # the CI failure of stop 26: the link was made to a folder that did not exist yet
    sweep = parse_sweep("n_prototypes=10,30", "smoke", "flip")
    runs = tmp_path / "runs"
    planned = sweep_checkpoints("smoke", sweep, "flip", [0, 1], runs)
    assert [(value, seed) for value, seed, _ in planned] == [(10, 0), (30, 0), (10, 1), (30, 1)]
    for seed in (0, 1):
        linked = sweep_folder("smoke", "n_prototypes", 30, "flip", seed, runs)
        assert linked.is_symlink() and not Path(os.readlink(linked)).is_absolute()
        assert linked.resolve() == run_folder("smoke", "flip", seed, runs).resolve()
        assert linked.resolve().is_dir()  # the study's pretraining writes there later
        own = sweep_folder("smoke", "n_prototypes", 10, "flip", seed, runs)
        assert not own.is_symlink() and (own / CHECKPOINT) in [c for _, _, c in planned]
    # planned again (a rerun): the links are kept, not made twice
    assert sweep_checkpoints("smoke", sweep, "flip", [0, 1], runs) == planned


def test_a_sweep_of_aug_evaluates_the_studys_run_of_each_strategy(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep = parse_sweep("aug=flip,swav", "smoke", "swav")
    steps = study.plan_sweep("smoke", sweep, "swav", runs_dir=runs)
    pretrainings = [s for s in steps if s.notebook == "pretrain"]
    assert [s.name for s in pretrainings] == [
        "pretrain flip aug=flip seed 0",
        "pretrain swav aug=swav seed 0",
    ]
    for step, aug in zip(pretrainings, ("flip", "swav"), strict=True):
        assert step.parameters["aug"] == aug and step.parameters["overrides"] == {}
        linked = sweep_folder("smoke", "aug", aug, aug, 0, runs)
        assert linked.resolve() == run_folder("smoke", aug, 0, runs).resolve()
    with pytest.raises(SystemExit):
        command.main(["--preset", "smoke", "--sweep", "aug=flip,swav", "--augs", "flip"])
    assert "drop --augs" in capsys.readouterr().err


def test_a_smoke_sweep_trains_each_value_once_resumes_and_gathers_its_rows(
    smoke_study, data_root, tmp_path, capsys
):
    # a copy of the finished smoke study: 30 prototypes is its flip run's own value, linked, and the
    # study's linear probe at 10 % is the sweep's, so only value 10 trains
    runs = tmp_path / "runs"
    shutil.copytree(smoke_study["runs"], runs, symlinks=True)
    study_run = run_folder("smoke", "flip", 0, runs)
    stamp = (study_run / CHECKPOINT).stat().st_mtime_ns
    argv = ["--preset", "smoke", "--augs", "flip", "--sweep", "n_prototypes=10,30", "--headless"]
    argv += ["--jobs", "2", "--data_root", str(data_root), "--runs_dir", str(runs)]
    argv += ["--results_dir", str(tmp_path / "results"), "--figures_dir", str(tmp_path / "figures")]
    assert command.main(argv) == 0, capsys.readouterr().err
    skipped = capsys.readouterr().out.count("skipped, results exist")
    assert skipped == 2  # value 30: its pretraining and its linear probe
    rows = collect_sweep(runs, "smoke", "n_prototypes")
    assert list(rows["value"]) == [10, 30] and rows["linear_top1"].notna().all()
    assert rows["knn_top1"].notna().all() and (rows["final_loss"] > 0).all()
    csv = pd.read_csv(tmp_path / "results" / "smoke" / "sweep-n_prototypes.csv")
    assert list(csv["value"]) == [10, 30]
    linked = sweep_folder("smoke", "n_prototypes", 30, "flip", 0, runs)
    assert linked.is_symlink() and linked.resolve() == study_run.resolve()
    assert (study_run / CHECKPOINT).stat().st_mtime_ns == stamp
    assert (tmp_path / "figures" / "smoke" / "sweep-n_prototypes.png").is_file()
    lines = sweep_claims(runs, "smoke")
    assert any(line.startswith("| n_prototypes | 3,000 prototypes") for line in lines)
    # an interruption lost value 10's k-NN: the rerun evaluates it again, trains nothing
    trained = sweep_folder("smoke", "n_prototypes", 10, "flip", 0, runs)
    kept = (trained / CHECKPOINT).stat().st_mtime_ns
    evaluations = sorted(folder.name for folder in trained.iterdir() if folder.is_dir())
    assert evaluations == ["knn", "linear-0.1"]
    shutil.rmtree(trained / "knn")
    assert command.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("skipped, results exist") == 5  # 2 pretrainings, 30: 2 evaluations, 10: linear
    assert (trained / CHECKPOINT).stat().st_mtime_ns == kept and (trained / "knn").is_dir()


def test_a_sweep_of_two_encoders_gets_a_verdict_each(monkeypatch):
    rows = pd.DataFrame(
        [
            {"value": v, "aug": aug, "seed": s, "linear_top1": a + s / 10, "linear_top1_se": 0.3}
            for aug, better in (("swav", 3000), ("flip", 300))
            for v in (300, 3000)
            for s, a in enumerate([8.0, 8.0, 8.0] if v != better else [10.0, 10.0, 10.0])
        ]
    )
    monkeypatch.setattr(sweeps, "sweep_fields", lambda runs_dir, preset: ["n_prototypes"])
    monkeypatch.setattr(sweeps, "collect_sweep", lambda runs_dir, preset, field: rows)
    lines = [line for line in sweeps.sweep_claims("runs", "smoke") if "n_prototypes (" in line]
    assert len(lines) == 2
    assert lines[0].startswith("| n_prototypes (swav) |") and "**holds**" in lines[0]
    assert lines[1].startswith("| n_prototypes (flip) |") and "**does not hold**" in lines[1]

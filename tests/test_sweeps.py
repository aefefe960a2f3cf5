"""Sweeps: values checked before anything trains, one encoder per value, resumed, rows and a
verdict computed from them."""

from __future__ import annotations

import pandas as pd
import pytest

from swavnb import study
from swavnb.layout import CHECKPOINT, run_folder, sweep_folder
from swavnb.sweeps import collect_sweep, parse_sweep, sweep_claims, verdict


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
    ],
)
def test_bad_sweeps_are_refused_before_anything_trains(text, message, tmp_path, capsys):
    with pytest.raises(ValueError) as refused:
        parse_sweep(text, "smoke", "flip")
    assert message in str(refused.value)
    with pytest.raises(SystemExit) as exited:  # the command: one line, exit 2, nothing written
        study.main(["--preset", "smoke", "--sweep", text, "--runs_dir", str(tmp_path)])
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
    assert verdict(best, "lr")[1] == "–"  # the seed claims nothing about the learning rate


def test_a_smoke_sweep_trains_each_value_once_resumes_and_gathers_its_rows(tmp_path, capsys):
    folders = [f"--{name}_dir" for name in ("runs", "results", "figures")]
    # 30 is the smoke preset's own: that value is the study's run of flip, linked, not trained twice
    argv = ["--preset", "smoke", "--augs", "flip", "--sweep", "n_prototypes=10,30", "--headless"]
    argv += ["--jobs", "2"]
    for flag in folders:
        argv += [flag, str(tmp_path / flag.strip("-").removesuffix("_dir"))]
    assert study.main(argv) == 0, capsys.readouterr().err
    runs = tmp_path / "runs"
    rows = collect_sweep(runs, "smoke", "n_prototypes")
    assert list(rows["value"]) == [10, 30] and rows["linear_top1"].notna().all()
    assert rows["knn_top1"].notna().all() and (rows["final_loss"] > 0).all()
    csv = pd.read_csv(tmp_path / "results" / "smoke" / "sweep-n_prototypes.csv")
    assert list(csv["value"]) == [10, 30]
    linked = sweep_folder("smoke", "n_prototypes", 30, "flip", 0, runs)
    assert (
        linked.is_symlink() and linked.resolve() == run_folder("smoke", "flip", 0, runs).resolve()
    )
    assert (tmp_path / "figures" / "smoke" / "sweep-n_prototypes.png").is_file()
    lines = sweep_claims(runs, "smoke")
    assert any(line.startswith("| n_prototypes | 3,000 prototypes") for line in lines)
    # an interruption that lost value 10's run: the rerun trains it again, and only it
    kept = linked / CHECKPOINT
    stamp = kept.stat().st_mtime_ns
    lost = sweep_folder("smoke", "n_prototypes", 10, "flip", 0, runs)
    for path in sorted(lost.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    capsys.readouterr()
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("skipped, results exist") == 3  # value 30: pretraining, linear, k-NN
    assert kept.stat().st_mtime_ns == stamp and (lost / CHECKPOINT).is_file()

""" "seed" means a random seed only: what the study writes and every command's --help call the
course report the study reproduces "the reference report" (``ref. report`` where narrow)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from swavnb import finetune, pretrain
from swavnb.speed import bench, loss_curve
from swavnb.study import __main__ as study
from swavnb.study.claims import claims_markdown
from swavnb.study.results import markdown_tables
from swavnb.study.sweeps import verdict

# the old name of the reference report; "seed 1", "4 seeds" and "seed-0/" are random seeds
REPORT_AS_SEED = re.compile(r"the seed\b|seed's|\(seed\)|seed top-|seed paper", re.IGNORECASE)


def _rows() -> pd.DataFrame:
    """Two seeds of every encoder at the reference report's smallest label count and one more."""
    return pd.DataFrame(
        [
            {
                "preset": "quick",
                "aug": aug,
                "mode": mode,
                "fraction": fraction,
                "n_labels": round(5000 * fraction),
                "seed": seed,
                "top1": 5.0 + i + 10 * fraction + seed,
                "top1_se": 0.5,
                "top5": 15.0 + i + seed,
                "top5_se": 0.8,
                "test_images": 2000,
                "image_size": 16,
                "device": "cpu",
            }
            for i, aug in enumerate(("jitter", "flip", "swav", "scratch"))
            for mode in ("finetune", "linear")
            for fraction in (0.02, 0.1)
            for seed in (0, 1)
        ]
    )


def test_tables_and_claims_call_the_report_the_reference_report():
    rows = _rows()
    knn = pd.DataFrame(
        [
            {"preset": "quick", "aug": "flip", "seed": s, "bn_stats": "precise", "k": 20}
            | {"top1": 5.0 + s, "top5": 15.0, "test_images": 2000}
            for s in (0, 1)
        ]
    )
    tables, claims = markdown_tables(rows, knn, "quick"), claims_markdown(rows, "quick")
    sweep = pd.DataFrame({"aug": ["swav"], "value": [30], "seed": [0], "linear_top1": [1.0]})
    statement = verdict(sweep, "lr")[0]
    for text in (tables, claims, statement):
        assert not REPORT_AS_SEED.search(text), REPORT_AS_SEED.search(text)
    assert "## Table 1 of the reference report: jitter views" in tables
    assert "| ref. report top-1 | ref. report top-5 |" in tables and "Δ" not in tables
    assert "| C1: pretraining beats random init at every label count | ref. report |" in claims
    assert "mean over 2 seeds (0, 1)" in tables  # "seed" still names the random seeds


@pytest.mark.parametrize(
    "main", [study.main, pretrain.main, finetune.main, bench.main, loss_curve.main]
)
def test_every_command_help_calls_the_report_the_reference_report(main, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m swavnb.")
    assert not REPORT_AS_SEED.search(text), REPORT_AS_SEED.search(text)

"""The reference report's claims: each verdict follows from the rows' intervals."""

from __future__ import annotations

import pandas as pd

from swavnb.study.claims import FAILS, HOLDS, UNSURE, claims_markdown, comparisons, verdicts


def _rows(table: dict[str, dict[int, list[float]]], mode: str = "finetune") -> pd.DataFrame:
    """{aug: {labels: [top-1 of seed 0, 1, ...]}} as results.csv rows (test-set error 0.5)."""
    return pd.DataFrame(
        [
            {"aug": aug, "mode": mode, "n_labels": n, "seed": seed, "top1": v, "top1_se": 0.5}
            for aug, by_count in table.items()
            for n, values in by_count.items()
            for seed, v in enumerate(values)
        ]
    )


def _verdict(rows: pd.DataFrame, claim: str, mode: str = "finetune") -> str:
    table = verdicts(rows)
    return table[(table["claim"] == claim) & (table["mode"] == mode)]["verdict"].item()


def test_clear_effects_hold_and_reversed_ones_do_not():
    rows = _rows(
        {
            "scratch": {100: [3.0, 3.2, 2.9], 500: [6.0, 6.3, 6.1]},
            "jitter": {100: [4.0, 4.1, 4.2], 500: [7.0, 7.2, 7.1]},
            "flip": {100: [5.0, 5.2, 5.1], 500: [8.0, 8.1, 8.3]},
            "swav": {100: [9.0, 9.1, 9.3], 500: [12.0, 12.2, 12.1]},
        }
    )
    assert [_verdict(rows, c) for c in ("C1", "C2", "C3", "C4")] == [HOLDS] * 4
    found = comparisons(rows)
    c2 = found[found["claim"] == "C2"]
    assert list(c2["labels"]) == ["100", "500"] and c2["effect"].round(2).tolist() == [1.0, 1.03]
    assert len(found[found["claim"] == "C3"]) == 4  # every encoder, 100 -> 500 labels
    # jitter beats flip in every seed: C2 does not hold; the rest is unchanged
    swapped = rows.replace({"aug": {"jitter": "flip", "flip": "jitter"}})
    assert _verdict(swapped, "C2") == FAILS and _verdict(swapped, "C1") == HOLDS


def test_noise_as_large_as_the_effect_cannot_tell():
    rows = _rows({"jitter": {500: [7.0, 9.0, 6.0]}, "flip": {500: [8.0, 6.5, 8.0]}})
    assert _verdict(rows, "C2") == UNSURE
    # one seed: the test-set errors decide (2 points apart, errors 0.5 each: 2 > 1.96 * 0.71)
    single = _rows({"jitter": {500: [7.0]}, "flip": {500: [9.0]}})
    assert _verdict(single, "C2") == HOLDS
    assert _verdict(single, "C4") == "cannot tell: no rows to compare"  # no swav rows


def test_claims_md_lists_every_verdict_and_comparison_per_mode():
    rows = pd.concat(
        [
            _rows({"flip": {500: [8.0]}, "scratch": {500: [3.0]}}),
            _rows({"flip": {500: [1.0]}, "scratch": {500: [3.0]}}, mode="linear"),
        ]
    )
    text = claims_markdown(rows, "quick")
    assert (
        "| C1: pretraining beats random init at every label count | ref. report | finetune | "
        in text
    )
    assert "| finetune | **holds** |" in text and "| linear | **does not hold** |" in text
    assert "| C1 | linear | flip − scratch | 500 | -2.00 [-3.39, -0.61] | 1 |" in text

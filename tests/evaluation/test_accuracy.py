"""Accuracy metrics."""

from __future__ import annotations

import pytest
import torch

from swavnb.evaluation.accuracy import per_group_accuracy, topk_accuracy


def test_topk_counts_label_among_highest_scores():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 2])
    accuracy = topk_accuracy(logits, labels, ks=(1, 2, 3))
    assert accuracy[1] == pytest.approx(100 / 3)  # only row 0
    assert accuracy[2] == pytest.approx(200 / 3)  # rows 0 and 1
    assert accuracy[3] == pytest.approx(100.0)


def test_topk_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="3 score rows for 2 labels"):
        topk_accuracy(torch.zeros(3, 5), torch.zeros(2, dtype=torch.long))


def test_per_group_accuracy():
    predictions, labels = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 0])
    groups = torch.tensor([0, 0, 1, 1])
    assert per_group_accuracy(predictions, labels, groups, ["a", "b", "c"]) == {
        "a": 50.0,
        "b": 50.0,
    }

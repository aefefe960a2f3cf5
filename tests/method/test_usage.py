"""Prototype usage: the entropy and share of used prototypes that reveal collapse."""

from __future__ import annotations

import pytest
import torch

from swavnb.method.usage import usage_summary


def test_usage_summary_detects_collapse():
    uniform = usage_summary(torch.full((100,), 5))
    collapsed = usage_summary(torch.tensor([500] + [0] * 99))
    assert uniform["usage_entropy"] == pytest.approx(1.0) and uniform["prototypes_used"] == 1.0
    assert collapsed["usage_entropy"] == pytest.approx(0.0) and collapsed[
        "prototypes_used"
    ] == pytest.approx(0.01)

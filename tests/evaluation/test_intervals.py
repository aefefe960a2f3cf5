"""Intervals: the binomial error of one run, Student's t over seeds, differences paired by seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from swavnb.evaluation.intervals import Z95, accuracy_se, mean_interval, paired_difference


def test_the_test_set_error_is_the_binomial_one_and_shrinks_with_more_images():
    # 8 % right on 2,000 images: sqrt(0.08 * 0.92 / 2000) = 0.607 points
    assert accuracy_se(8.0, 2000) == pytest.approx(0.6066, abs=1e-4)
    assert accuracy_se(8.0, 10000) < accuracy_se(8.0, 2000)
    assert accuracy_se(0.0, 100) == accuracy_se(100.0, 100) == 0.0
    with pytest.raises(ValueError, match="at least one test image"):
        accuracy_se(5.0, 0)


def test_a_mean_over_seeds_has_students_t_interval():
    values = [9.1, 10.4, 8.7, 11.0]
    estimate = mean_interval(values, [0.6] * 4)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert estimate.basis == "seeds" and estimate.n == 4
    assert (estimate.low, estimate.high) == (pytest.approx(low), pytest.approx(high))
    one = mean_interval([9.1], [0.6])  # one seed: the test-set error alone, and it says so
    assert one.basis == "test set" and one.half_width == pytest.approx(Z95 * 0.6)


def test_differences_are_paired_by_seed():
    a = {0: (10.0, 0.5), 1: (12.0, 0.5), 2: (11.0, 0.5), 9: (50.0, 0.5)}
    b = {0: (8.0, 0.4), 1: (11.0, 0.4), 2: (8.0, 0.4)}
    diff = paired_difference(a, b)  # seed 9 has no partner and is left out
    assert diff.n == 3 and diff.mean == pytest.approx(2.0)
    expected = mean_interval([2.0, 1.0, 3.0], [0.0] * 3)
    assert diff.half_width == pytest.approx(expected.half_width)
    single = paired_difference({0: (10.0, 0.3)}, {0: (9.0, 0.4)})
    assert single.half_width == pytest.approx(Z95 * 0.5) and single.basis == "test set"
    assert paired_difference({0: (1.0, 0.1)}, {1: (1.0, 0.1)}) is None
    assert math.isclose(str(single).count("±"), 1)

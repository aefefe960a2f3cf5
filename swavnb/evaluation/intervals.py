"""Uncertainty of the study's accuracies: the test-set standard error of one run, a 95 % interval
of a mean over seeds, and of a difference between two settings paired by seed.

With two or more seeds the interval is Student's t over the seeds (it holds every source of
variation a replicate redraws: initialisation, augmentations, label subset, test noise); with one
seed it is the binomial standard error of that run's test set alone, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the normal distribution's 97.5 % quantile


def accuracy_se(accuracy: float, n_test: int) -> float:
    """Binomial standard error (percentage points) of an ``accuracy`` (%) on ``n_test`` images."""
    if n_test < 1:
        raise ValueError(f"a standard error needs at least one test image, got {n_test}")
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n_test)


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % interval."""

    mean: float
    half_width: float
    n: int  # seeds behind it
    basis: str  # "seeds" (t over the seeds) or "test set" (one run's binomial error)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.half_width:.2f}"


def _t95(n: int) -> float:
    # imported here: scipy.stats adds 1-2 s to every step's process, most of which never ask
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def mean_interval(values: Sequence[float], ses: Sequence[float]) -> Estimate:
    """The mean of one setting's runs (one per seed) and its 95 % interval.

    Args:
        values: the accuracy of each seed.
        ses: each run's test-set standard error (used when there is a single seed).
    """
    n = len(values)
    if n == 0:
        raise ValueError("no runs to average")
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, Z95 * ses[0], 1, "test set")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, _t95(n) * sd / math.sqrt(n), n, "seeds")


def paired_difference(
    a: Mapping[int, tuple[float, float]], b: Mapping[int, tuple[float, float]]
) -> Estimate | None:
    """``a`` minus ``b`` over the seeds both have, with its 95 % interval.

    Runs of one seed share what a seed fixes (the label subset, the test subset), so differences
    are taken seed by seed; with one common seed the two runs' test-set errors are combined.

    Args:
        a, b: {seed: (accuracy, its test-set standard error)}.

    Returns:
        None when the two have no seed in common.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    if len(seeds) == 1:
        (va, sa), (vb, sb) = a[seeds[0]], b[seeds[0]]
        return Estimate(va - vb, Z95 * math.hypot(sa, sb), 1, "test set")
    return mean_interval([a[s][0] - b[s][0] for s in seeds], [0.0] * len(seeds))

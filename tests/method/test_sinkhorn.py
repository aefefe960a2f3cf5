"""Sinkhorn-Knopp codes: marginals, equality with the authors' algorithm, stability."""

from __future__ import annotations

import pytest
import torch

from swavnb.method.sinkhorn import sinkhorn


def random_scores(
    batch: int, n_prototypes: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Cosine-like scores, uniform in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n_prototypes, generator=generator, dtype=torch.float64) * 2 - 1).to(
        dtype
    )


def reference_sinkhorn(scores: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """The SwAV authors' ``distributed_sinkhorn`` on one process, transcribed in float64."""
    q = torch.exp(scores.double() / epsilon).t()  # (K, B)
    n_prototypes, batch = q.shape
    q /= q.sum()
    for _ in range(n_iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= batch
    q *= batch
    return q.t()


def naive_float32_sinkhorn(scores: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """The same algorithm without log-space care, in float32."""
    q = torch.exp(scores.float() / epsilon).t()
    n_prototypes, batch = q.shape
    q /= q.sum()
    for _ in range(n_iters):
        q /= q.sum(dim=1, keepdim=True) * n_prototypes
        q /= q.sum(dim=0, keepdim=True) * batch
    return (q * batch).t()


def column_error(codes: torch.Tensor) -> float:
    """Largest relative deviation of a prototype's mass from the equipartition B/K."""
    batch, n_prototypes = codes.shape
    return (codes.sum(dim=0) / (batch / n_prototypes) - 1).abs().max().item()


def test_three_iterations_rows_exact_columns_approximate():
    scores = random_scores(256, 32)
    codes = sinkhorn(scores, epsilon=0.05, n_iters=3)
    assert codes.shape == (256, 32) and codes.dtype == torch.float32
    assert (codes >= 0).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(256), atol=1e-5, rtol=0)
    torch.testing.assert_close(codes.sum(), torch.tensor(256.0), atol=1e-3, rtol=0)
    # Three rounds only approach equipartition, but much closer than the plain softmax does.
    softmax_error = column_error(torch.softmax(scores / 0.05, dim=1))
    assert column_error(codes) < 0.25
    assert column_error(codes) < 0.5 * softmax_error


def test_many_iterations_give_tight_column_marginals():
    scores = random_scores(64, 16, seed=1)
    errors = [column_error(sinkhorn(scores, epsilon=0.05, n_iters=n)) for n in (1, 3, 10, 50)]
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 1e-3
    codes = sinkhorn(scores, epsilon=0.05, n_iters=50)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(codes.sum(dim=0), torch.full((16,), 4.0), atol=4e-3, rtol=0)


@pytest.mark.parametrize(
    ("batch", "n_prototypes", "epsilon", "n_iters"),
    [(32, 10, 0.05, 3), (20, 50, 0.05, 1), (64, 16, 0.1, 7), (128, 30, 0.03, 3)],
)
def test_matches_authors_algorithm_in_float64(batch, n_prototypes, epsilon, n_iters):
    scores = random_scores(batch, n_prototypes, seed=batch + n_iters, dtype=torch.float64)
    expected = reference_sinkhorn(scores, epsilon, n_iters)
    codes = sinkhorn(scores, epsilon=epsilon, n_iters=n_iters)
    assert codes.dtype == torch.float64
    torch.testing.assert_close(codes, expected, rtol=1e-9, atol=1e-12)
    # float32 input runs the same algorithm in float32.
    codes32 = sinkhorn(scores.float(), epsilon=epsilon, n_iters=n_iters)
    assert codes32.dtype == torch.float32
    torch.testing.assert_close(codes32.double(), expected, rtol=1e-4, atol=1e-6)


def test_small_epsilon_stays_finite_where_naive_float32_overflows():
    scores = random_scores(64, 16, seed=2)
    assert scores.max() > 0.9  # exp(0.9 / 0.01) is past float32's range
    assert not torch.isfinite(naive_float32_sinkhorn(scores, 0.01, 3)).all()
    codes = sinkhorn(scores, epsilon=0.01, n_iters=3)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(
        codes.double(), reference_sinkhorn(scores, 0.01, 3), rtol=1e-3, atol=1e-5
    )
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)


def test_bfloat16_under_autocast_gives_float32_codes():
    scores = random_scores(64, 16, seed=3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = sinkhorn(scores, epsilon=0.05, n_iters=3)
    assert codes.dtype == torch.float32
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        codes.double(), reference_sinkhorn(scores.double(), 0.05, 3), rtol=1e-4, atol=1e-6
    )


def test_codes_carry_no_gradient():
    scores = random_scores(16, 8).requires_grad_()
    codes = sinkhorn(scores)
    assert not codes.requires_grad
    assert codes.grad_fn is None


@pytest.mark.parametrize(
    ("scores", "kwargs"),
    [
        (torch.rand(10), {}),
        (torch.rand(2, 3, 4), {}),
        (torch.rand(4, 3), {"epsilon": 0.0}),
        (torch.rand(4, 3), {"epsilon": -0.05}),
        (torch.rand(4, 3), {"n_iters": 0}),
    ],
    ids=["1d", "3d", "epsilon0", "epsilon_negative", "n_iters0"],
)
def test_bad_inputs_raise_value_error(scores, kwargs):
    with pytest.raises(ValueError):
        sinkhorn(scores, **kwargs)

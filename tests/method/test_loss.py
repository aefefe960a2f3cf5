"""Swapped-prediction loss: eq. 12 by hand, multi-crop, gradients, queue, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swavnb.method.loss import swav_loss
from swavnb.method.sinkhorn import sinkhorn

BATCH, K, T = 32, 20, 0.1


def crop_scores(
    n_crops: int, batch: int = BATCH, seed: int = 0, requires_grad: bool = False
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(batch, K, generator=generator) * 2 - 1).requires_grad_(requires_grad)
        for _ in range(n_crops)
    ]


def cross_entropy(codes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Batch mean of -sum_k q_k log softmax(s / T)_k."""
    return -(codes * F.log_softmax(scores / T, dim=1)).sum(dim=1).mean()


def hand_multicrop_loss(
    scores: list[torch.Tensor], n_assign: int, codes: list[torch.Tensor]
) -> torch.Tensor:
    """SwAV's multi-crop loss: per assigned crop, mean over every *other* crop, then mean over
    assigned crops."""
    n_crops = len(scores)
    terms = torch.zeros(n_assign, n_crops)
    for i in range(n_assign):
        for v in range(n_crops):
            if v != i:
                terms[i, v] = cross_entropy(codes[i], scores[v])
    return terms.sum() / ((n_crops - 1) * n_assign)


def test_two_crops_equal_eq12_by_hand():
    s1, s2 = crop_scores(2)
    q1, q2 = sinkhorn(s1, 0.05, 3), sinkhorn(s2, 0.05, 3)
    expected = (
        -0.5 * (q1 * F.log_softmax(s2 / T, dim=1)).sum(dim=1).mean()
        - 0.5 * (q2 * F.log_softmax(s1 / T, dim=1)).sum(dim=1).mean()
    )
    loss = swav_loss([s1, s2], n_assign=2, temperature=T, epsilon=0.05, n_iters=3)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("n_crops", "n_assign"), [(5, 2), (4, 3), (3, 1), (6, 6)])
def test_multicrop_equals_definition(n_crops, n_assign):
    scores = crop_scores(n_crops, seed=n_crops * 10 + n_assign)
    codes = [sinkhorn(s, 0.05, 3) for s in scores[:n_assign]]
    loss = swav_loss(scores, n_assign=n_assign, temperature=T)
    torch.testing.assert_close(
        loss, hand_multicrop_loss(scores, n_assign, codes), rtol=1e-6, atol=1e-6
    )


def test_gradient_reaches_every_crop_and_not_through_codes():
    scores = crop_scores(5, seed=1, requires_grad=True)
    swav_loss(scores, n_assign=2, temperature=T).backward()
    grads = [s.grad.clone() for s in scores]
    for crop, grad in enumerate(grads):
        assert grad is not None and torch.isfinite(grad).all()
        assert grad.abs().sum() > 0, f"crop {crop} got no gradient"

    # Same loss with the codes frozen as constants: identical gradients mean none flowed through the
    # codes.
    constants = [s.detach().clone().requires_grad_() for s in scores]
    codes = [sinkhorn(s.detach(), 0.05, 3) for s in constants[:2]]
    hand_multicrop_loss(constants, 2, codes).backward()
    for grad, const in zip(grads, constants, strict=True):
        torch.testing.assert_close(grad, const.grad, rtol=1e-5, atol=1e-7)


def test_queue_joins_sinkhorn_but_loss_uses_batch_rows_only():
    s1, s2 = crop_scores(2, seed=2)
    queue = crop_scores(2, batch=96, seed=3)
    plain = swav_loss([s1, s2], temperature=T)
    queued = swav_loss([s1, s2], temperature=T, queue_scores=queue)
    assert not torch.isclose(plain, queued, rtol=1e-4, atol=0)

    q1 = sinkhorn(torch.cat([s1, queue[0]]), 0.05, 3)[:BATCH]
    q2 = sinkhorn(torch.cat([s2, queue[1]]), 0.05, 3)[:BATCH]
    torch.testing.assert_close(
        queued, 0.5 * cross_entropy(q1, s2) + 0.5 * cross_entropy(q2, s1), rtol=1e-6, atol=1e-6
    )

    # An empty slot means that crop's codes come from the batch alone.
    half = swav_loss([s1, s2], temperature=T, queue_scores=[queue[0], None])
    q2_plain = sinkhorn(s2, 0.05, 3)
    torch.testing.assert_close(
        half, 0.5 * cross_entropy(q1, s2) + 0.5 * cross_entropy(q2_plain, s1)
    )


def test_bfloat16_scores_give_finite_float32_loss():
    scores = [s.bfloat16().requires_grad_() for s in crop_scores(3, seed=4)]
    loss = swav_loss(scores)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(s.grad is not None and s.grad.dtype == torch.bfloat16 for s in scores)


@pytest.mark.parametrize(
    ("scores", "kwargs"),
    [
        (crop_scores(1), {"n_assign": 1}),
        (crop_scores(2), {"n_assign": 0}),
        (crop_scores(2), {"n_assign": 3}),
        ([torch.rand(BATCH, K), torch.rand(BATCH + 1, K)], {}),
        ([torch.rand(BATCH, K), torch.rand(BATCH, K + 1)], {}),
        (crop_scores(3), {"n_assign": 2, "queue_scores": [torch.rand(8, K)]}),
        (crop_scores(3), {"n_assign": 2, "queue_scores": [torch.rand(8, K)] * 3}),
    ],
    ids=[
        "one_crop",
        "n_assign0",
        "n_assign_too_big",
        "batch_mismatch",
        "k_mismatch",
        "queue_short",
        "queue_long",
    ],
)
def test_bad_inputs_raise_value_error(scores, kwargs):
    with pytest.raises(ValueError):
        swav_loss(scores, **kwargs)

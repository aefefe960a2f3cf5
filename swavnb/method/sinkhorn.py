"""Sinkhorn-Knopp equipartition of samples over prototypes (SwAV eq. 3-4)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _global_logsumexp_over_samples(log_q: torch.Tensor) -> torch.Tensor:
    """logsumexp over dim 0 (samples) of the *global* batch: (B, K) -> (1, K).

    Each rank holds a shard of the rows; the max is all-reduced first so the
    exponentials cannot overflow, then the shifted sums are all-reduced.
    """
    if not _distributed():
        return torch.logsumexp(log_q, dim=0, keepdim=True)
    shift = log_q.amax(dim=0, keepdim=True)  # (1, K)
    dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    total = torch.exp(log_q - shift).sum(dim=0, keepdim=True)  # (1, K)
    dist.all_reduce(total)
    return torch.log(total) + shift


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """Soft codes that split the batch evenly over the prototypes.

    Runs the SwAV authors' Sinkhorn-Knopp: ``Q = exp(scores / epsilon)``, scaled to
    total mass 1, then ``n_iters`` rounds of (every prototype's mass to 1/K, every
    sample's mass to 1/B), and finally scaled so each sample's row sums to 1.

    The iterations run in log space (each normalisation is a ``logsumexp``), which
    gives the same matrix as the plain version but cannot overflow or underflow to
    an empty row: ``exp(1 / 0.01)`` is already past float32's range. They run in
    float32 (float64 if given) whatever autocast is active. When
    ``torch.distributed`` is initialised the prototype sums are all-reduced, so each
    rank's rows equal the rows it would get from the whole global batch.

    Args:
        scores: (B, K) similarities between B embeddings and K prototypes.
        epsilon: entropic regularisation; smaller gives sharper codes.
        n_iters: rounds of the alternating normalisation (at least 1).

    Returns:
        (B, K) codes, non-negative, each row summing to 1 and each column to B/K
        (approximately, after a finite number of rounds).

    Reference:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting
        Cluster Assignments", NeurIPS 2020, sec. 3.1 and appendix A.1.
    """
    if scores.dim() != 2:
        raise ValueError(f"sinkhorn expects scores of shape (B, K), got {tuple(scores.shape)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1 so the rows are normalised, got {n_iters}")
    n_prototypes = scores.shape[1]
    # filled on the device, not copied from the host: no GPU wait; all-reduced into the global count
    n_samples = torch.full((), float(scores.shape[0]), device=scores.device)
    if _distributed():
        dist.all_reduce(n_samples)
    log_n_samples = torch.log(n_samples)
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_q = scores.to(dtype) / epsilon  # (B, K)
        # The authors first scale Q to total mass 1; the first column step below
        # rescales every column anyway, so that step changes nothing and is skipped.
        for _ in range(n_iters):
            log_q = log_q - _global_logsumexp_over_samples(log_q) - math.log(n_prototypes)
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_n_samples
        return torch.exp(log_q + log_n_samples)  # (B, K), rows sum to 1

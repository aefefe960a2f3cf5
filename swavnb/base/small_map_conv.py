"""A Conv2d whose float32 weight gradient on a CPU is one matrix product where its map is tiny.

oneDNN computes a convolution's weight gradient image by image; where the output map has a few
pixels (ResNet-18's last stage at 16 px and below) each product's inner dimension is 1-4 and float32
is several times slower than one product over the whole batch (docs/performance.md). Forward and the
input gradient stay oneDNN's; bf16 autocast, CUDA and compiled graphs keep torch's own path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

# at most this many output pixels per image: the crossover measured on the Zen 3 (2x2 and 1x1
# outputs 1.5-11x faster as one product, 4x4 not: docs/performance.md)
MAX_OUTPUT_PIXELS = 4
_enabled = True


@contextmanager
def standard_weight_grad() -> Iterator[None]:
    """Within the block every SmallMapConv2d takes torch's own backward (A/B timings, tests)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def batch_weight_grad(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride, padding
) -> torch.Tensor:
    """d loss / d weight of ``conv2d(x, weight)`` (no dilation, one group) as one GEMM.

    Args:
        grad_output: (N, C_out, OH, OW) gradient of the convolution's output.
        x: (N, C_in, H, W) the convolution's input.
        weight: (C_out, C_in, kh, kw) its weight: the result takes its shape and memory format.
        stride, padding: the convolution's.

    Returns:
        The weight gradient, summed over the batch.
    """
    n, c_out = grad_output.shape[:2]
    cols = F.unfold(x, weight.shape[2:], padding=padding, stride=stride)  # (N, C_in*kh*kw, L)
    left = grad_output.transpose(0, 1).reshape(c_out, -1)  # (C_out, N*L)
    right = cols.transpose(1, 2).reshape(left.shape[1], -1)  # (N*L, C_in*kh*kw)
    return torch.empty_like(weight).copy_((left @ right).view(weight.shape))


class _BatchWeightGradConv(torch.autograd.Function):
    """conv2d without bias, its weight gradient from :func:`batch_weight_grad`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride, padding) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            # oneDNN's own input gradient, given the real input so that it keeps its memory format
            grad_x = torch.ops.aten.convolution_backward(
                grad_output,
                x,
                weight,
                None,
                ctx.stride,
                ctx.padding,
                (1, 1),
                False,
                (0, 0),
                1,
                (True, False, False),
            )[0]
        if ctx.needs_input_grad[1]:
            grad_weight = batch_weight_grad(grad_output, x, weight, ctx.stride, ctx.padding)
        return grad_x, grad_weight, None, None


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state dict) taking :func:`batch_weight_grad` where it is
    faster: training in float32 on a CPU, eager, with at most :data:`MAX_OUTPUT_PIXELS` output
    pixels, no bias, no dilation, one group."""

    def _batch_grad_pays(self, x: torch.Tensor) -> bool:
        if not (_enabled and x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled()):
            return False
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return False
        if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
            return False
        if self.bias is not None or self.groups != 1 or self.dilation != (1, 1):
            return False
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return False
        out = [
            (size + 2 * pad - kernel) // step + 1
            for size, pad, kernel, step in zip(
                x.shape[-2:], self.padding, self.kernel_size, self.stride, strict=True
            )
        ]
        return out[0] * out[1] <= MAX_OUTPUT_PIXELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._batch_grad_pays(x):
            return _BatchWeightGradConv.apply(x, self.weight, self.stride, self.padding)
        return super().forward(x)


def use_small_map_convs(net: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` of ``net`` into a :class:`SmallMapConv2d`, in place: the same
    modules and parameters (no re-initialisation, no draw from the RNG), so weights, state dicts and
    seeds are unchanged."""
    for module in net.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = SmallMapConv2d
    return net

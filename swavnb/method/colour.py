"""Colour ops on batches of (B, 3, H, W) float images in [0, 1], with one factor per image.

They are torchvision's / PIL's definitions (the ones kornia's ``adjust_*_with_*`` functions
implement), written in plain torch so the package runs where kornia is not installed, as on an
offline GPU node; tests check them against kornia on real images.
"""

from __future__ import annotations

import math

import torch

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's "L" mode


def _per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of RGB images."""
    r, g, b = x.unbind(dim=1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale every pixel by ``factor`` (0: black, 1: unchanged)."""
    return (x * _per_image(factor)).clamp(0, 1)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma (0: flat grey, 1: unchanged)."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * _per_image(factor) + mean).clamp(0, 1)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's luma (0: grayscale, 1: unchanged)."""
    gray = grayscale(x)
    return ((x - gray) * _per_image(factor) + gray).clamp(0, 1)


def _rgb_to_hsv(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """RGB in [0, 1] -> HSV with hue in radians [0, 2 pi)."""
    value, argmax = x.max(dim=1)
    delta = value - x.min(dim=1).values
    sat = delta / (value + eps)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    r, g, b = x.unbind(dim=1)
    hue = torch.stack([(g - b) / safe, 2 + (b - r) / safe, 4 + (r - g) / safe], dim=1)
    hue = hue.gather(1, argmax.unsqueeze(1)).squeeze(1)
    hue = torch.where(delta == 0, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6, 1.0) * (2 * math.pi)
    return torch.stack([hue, sat, value], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    hue, sat, value = x.unbind(dim=1)
    hue = hue / (2 * math.pi) * 6
    sector = torch.floor(hue) % 6
    f = hue - torch.floor(hue)
    p, q, t = value * (1 - sat), value * (1 - f * sat), value * (1 - (1 - f) * sat)
    table = torch.stack(
        [
            torch.stack(c, dim=1)
            for c in (
                (value, t, p),
                (q, value, p),
                (p, value, t),
                (p, q, value),
                (t, p, value),
                (value, p, q),
            )
        ],
        dim=1,
    )
    index = sector.long().unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)  # (B, 1, 3, H, W)
    return table.gather(1, index).squeeze(1)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (-0.5..0.5; torchvision's hue factor)."""
    hsv = _rgb_to_hsv(x)
    rotated = torch.remainder(hsv[:, :1] + _per_image(shift) * 2 * math.pi, 2 * math.pi)
    rotated = rotated.masked_fill(rotated >= 2 * math.pi, 0.0)  # -1e-8 wraps to 2 pi in float32
    return _hsv_to_rgb(torch.cat([rotated, hsv[:, 1:]], dim=1)).clamp(0, 1)

"""The checks the typed run configs share (:mod:`swavnb.base.config`): each returns what is wrong
with some fields, and :func:`refuse` names every bad field in one line."""

from __future__ import annotations

import math
from typing import Any

# the pools a run's image counts are taken from: CIFAR-100's training and test splits
TRAIN_POOL, TEST_POOL = 50_000, 10_000


def at_least(config: Any, minimum: int, names: tuple[str, ...]) -> list[str]:
    """What is wrong with each of ``names`` below ``minimum``."""
    return [
        f"{name} must be >= {minimum}, got {getattr(config, name)}"
        for name in names
        if getattr(config, name) < minimum
    ]


def finite(config: Any, names: tuple[str, ...], positive: bool = True) -> list[str]:
    """Each of ``names`` a finite number, > 0 (``positive``) or >= 0: an inf or NaN rate trains on
    a NaN loss."""
    bound = "> 0" if positive else ">= 0"
    return [
        f"{name} must be a finite number {bound}, got {value}"
        for name in names
        if not math.isfinite(value := getattr(config, name))
        or (value <= 0 if positive else value < 0)
    ]


def image_count(config: Any, name: str, pool: int) -> list[str]:
    """``name`` 0 (the whole pool) or a class-stratified subset of at most ``pool`` images."""
    count = getattr(config, name)
    if 0 <= count <= pool:
        return []
    return [
        f"{name} must be 0 (all {pool:,} images) or 1 to {pool:,} (a class-stratified subset, at "
        f"least one image per class), got {count}"
    ]


def refuse(problems: list[str]) -> None:
    """One line naming every bad field."""
    if problems:
        raise ValueError("; ".join(problems))

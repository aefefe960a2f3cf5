"""What the typed run configs share: each field says whether it changes the run, a config is built
from a preset and overrides, and the checks that name every bad field in one line.

A field that *changes the run* is part of its identity: a run folder holds one value of it, and a
run resumes only with the same. A *runtime* field changes where or how fast a run goes, never its
result (the data folder, the device, compiling): a run may resume with another value, and it names
no folder. Every field says which in its own declaration (:func:`changes_run`, :func:`runtime`);
:func:`run_config` refuses a config class with a field that does not.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar, get_type_hints

_CHANGES_RUN = "changes_run"  # the field metadata key
T = TypeVar("T")

# the pools a run's image counts are taken from: CIFAR-100's training and test splits
TRAIN_POOL, TEST_POOL = 50_000, 10_000


def changes_run(default: Any) -> Any:
    """A field whose value is part of the run's identity (its folder, its manifest)."""
    return dataclasses.field(default=default, metadata={_CHANGES_RUN: True})


def runtime(default: Any) -> Any:
    """A field that changes where or how fast a run goes, never its result."""
    return dataclasses.field(default=default, metadata={_CHANGES_RUN: False})


def run_config(cls: type[T]) -> type[T]:
    """``cls`` as a dataclass, refused unless every field says whether it changes the run.

    Raises:
        TypeError: naming the fields that say nothing.
    """
    cls = dataclasses.dataclass(cls)
    silent = [f.name for f in dataclasses.fields(cls) if _CHANGES_RUN not in f.metadata]
    if silent:
        raise TypeError(
            f"{cls.__name__} fields {silent} must say whether they change the run: declare them "
            "with changes_run(default) or runtime(default) (swavnb.base.config)"
        )
    return cls


def as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def run_fields(config: Any) -> dict[str, Any]:
    """The fields of ``config`` that change the run, in declaration order."""
    values = as_dict(config)
    return {f.name: values[f.name] for f in dataclasses.fields(config) if f.metadata[_CHANGES_RUN]}


def parse_value(value: Any, kind: Any, name: str) -> Any:
    """Turn a command-line / papermill value into the field's type."""
    if not isinstance(value, str):
        if kind is float and isinstance(value, int):
            return float(value)
        if kind == tuple[int, ...] and isinstance(value, (list, tuple)):
            return tuple(int(v) for v in value)
        return value
    try:
        if kind is bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if kind == tuple[int, ...]:
            return tuple(int(v) for v in value.replace(",", " ").split())
        return kind(value)
    except ValueError as error:
        raise ValueError(
            f"--{name}: cannot read {value!r} as {getattr(kind, '__name__', kind)}"
        ) from error


def build(cls: type[T], presets: dict[str, dict[str, Any]], preset: str, overrides: dict) -> T:
    """``cls`` with ``preset``'s values (one of ``presets``), then ``overrides`` (strings parsed;
    None leaves the preset's).

    Raises:
        ValueError: an unknown preset or field, or a value that does not parse.
    """
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} field(s) {unknown}; valid fields: {', '.join(sorted(names))}"
        )
    values = {**presets[preset], **{k: v for k, v in overrides.items() if v is not None}}
    parsed = {k: parse_value(v, hints[k], k) for k, v in values.items()}
    return cls(**{**parsed, "preset": preset})


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

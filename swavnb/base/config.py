"""What the typed run configs share: each field says whether it changes the run, and a config is
built from a preset and overrides (the checks of its values: :mod:`swavnb.base.field_checks`).

A field that *changes the run* is part of its identity: a run folder holds one value of it, and a
run resumes only with the same. A *runtime* field changes where or how fast a run goes, never its
result (the data folder, the device, compiling): a run may resume with another value, and it names
no folder. Every field says which in its own declaration (:func:`changes_run`, :func:`runtime`);
:func:`run_config` refuses a config class with a field that does not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, get_type_hints

_CHANGES_RUN = "changes_run"  # the field metadata key
T = TypeVar("T")


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

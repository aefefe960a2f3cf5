"""What runs stored (``result.json``, ``knn.json``, ``clusters.json``, a pretraining's
``metrics.json``), read back and checked: a damaged file or an impossible value (top-1 -5, NaN,
1e999, top-5 below top-1) is named with what redoes it, never counted as done or averaged into a
table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from swavnb.base.errors import DamagedFileError
from swavnb.base.files import read_json
from swavnb.base.layout import RESULT, resolve, shown

REWRITE_METRICS = (
    "rerun the study or the pretrain command that wrote it: a finished pretraining rewrites it "
    "from its checkpoint"
)
REDO = "rerun the study, which redoes that evaluation (or delete its folder and rerun its command)"
_REQUIRED = ("aug", "mode", "fraction", "top1", "top5")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problems(row: Any, required: tuple[str, ...]) -> list[str]:
    """What is impossible in one stored row (accuracies are percentages)."""
    if not isinstance(row, dict):
        return [f"a row is {type(row).__name__}, not an object"]
    missing = [key for key in required if key not in row]
    if missing:
        return [f"no {', '.join(missing)}"]
    found = []
    for key in ("top1", "top5"):
        if key in row and not (_number(row[key]) and 0 <= row[key] <= 100):
            found.append(f"{key} {row[key]!r} is not a percentage in [0, 100]")
    if not found and "top5" in row and row["top5"] < row["top1"]:
        found.append(f"top5 {row['top5']!r} is below top1 {row['top1']!r}")
    for key in ("top1_se", "top5_se", "epochs", "seconds"):
        if row.get(key) is not None and not (_number(row[key]) and row[key] >= 0):
            found.append(f"{key} {row[key]!r} is not a finite number >= 0")
    for key in ("n_labels", "test_images", "k"):
        if row.get(key) is not None and not (_number(row[key]) and row[key] >= 1):
            found.append(f"{key} {row[key]!r} is not a count >= 1")
    if "fraction" in row and not (_number(row["fraction"]) and 0 < row["fraction"] <= 1):
        found.append(f"fraction {row['fraction']!r} is not in (0, 1]")
    if "value" in row and not _number(row["value"]):
        found.append(f"value {row['value']!r} is not a finite number")
    return found


def _checked(path: Path, rows: list[Any], required: tuple[str, ...]) -> None:
    for row in rows:
        if problems := _problems(row, required):
            raise DamagedFileError(f"'{shown(path)}' is damaged ({'; '.join(problems)}); {REDO}")


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """One evaluation's row (``result.json``).

    Raises:
        DamagedFileError: unreadable, or a value no evaluation gives; one line naming the file.
    """
    path = resolve(path)
    row = read_json(path, REDO)
    _checked(path, [row], _REQUIRED)
    return row


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One encoder's probe rows (``knn.json`` or ``clusters.json``), each checked as
    :func:`read_result` checks a result.

    Raises:
        DamagedFileError: unreadable, not a list of rows, or a value no probe gives.
    """
    path = resolve(path)
    rows = read_json(path, REDO)
    if not isinstance(rows, list):
        raise DamagedFileError(f"'{shown(path)}' is damaged (not a list of rows); {REDO}")
    _checked(path, rows, ())
    return rows


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A pretraining's ``metrics.json``.

    Raises:
        DamagedFileError: unreadable, or without its config and epochs; one line naming the file.
    """
    path = resolve(path)
    metrics = read_json(path, REWRITE_METRICS)
    if not isinstance(metrics, dict) or not {"config", "epochs"} <= set(metrics):
        raise DamagedFileError(
            f"'{shown(path)}' is damaged (no config or epochs); {REWRITE_METRICS}"
        )
    return metrics


def intact(path: str | os.PathLike) -> bool:
    """Whether a stored result file (``result.json``, ``knn.json`` or ``clusters.json``) exists
    and reads back sound: what lets an evaluation count as done."""
    path = resolve(path)
    if not path.is_file():
        return False
    try:
        read_result(path) if path.name == RESULT else read_rows(path)
    except (DamagedFileError, OSError):
        return False
    return True

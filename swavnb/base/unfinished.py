"""A run folder whose run stopped before writing any of its results may be taken by another run.

A run writes its manifest (:mod:`swavnb.base.run_guard`) when it starts. One that then crashed, was
stopped or was killed before its first result leaves a manifest naming it and nothing else, and the
corrected command (another setting, so another run) would be refused by that manifest for good.
Such a folder holds nothing to lose: it is taken over, after one line saying what it held. A folder
holding any result of another run is never taken (the manifest's refusal stands), nor one whose run
is live (it holds the folder's lock, which the taker must hold).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from swavnb.base import run_guard
from swavnb.base.layout import MANIFEST, resolve, shown


def left_unfinished(
    folder: str | os.PathLike,
    identity: Mapping[str, Any],
    results: Sequence[str],
    source: str | None = None,
) -> dict[str, Any] | None:
    """The manifest of ``folder`` when it names another run than ``identity`` (or the same run of
    another ``source`` checkpoint) that wrote none of ``results``; else None.

    Args:
        results: the file names a finished run of that kind leaves (result.json; checkpoint.pt and
            metrics.json; ...).
    """
    held = run_guard.read_manifest(folder)
    if held is None:
        return None
    asked = json.loads(json.dumps(dict(identity)))  # as the manifest holds it: tuples as lists
    other_source = None not in (source, held.get("source")) and held["source"] != source
    if held.get("identity") == asked and not other_source:
        return None
    if any((resolve(folder) / name).exists() for name in results):
        return None
    return held


def take_over(
    folder: str | os.PathLike,
    identity: Mapping[str, Any],
    results: Sequence[str],
    source: str | None = None,
) -> bool:
    """Forget the manifest of an unfinished other run in ``folder`` (:func:`left_unfinished`),
    saying so in one line, so that ``identity`` can claim the folder.

    The caller holds the folder's lock (:func:`swavnb.base.run_guard.locked`): a live run holds it
    from its claim to its results, so only a run that has ended is taken over.

    Returns:
        Whether the folder was taken over.
    """
    held = left_unfinished(folder, identity, results, source)
    if held is None:
        return False
    (resolve(folder) / MANIFEST).unlink()
    print(
        f"'{shown(folder)}' held {run_guard.describe(held.get('identity') or {})}, which stopped "
        f"before writing {' or '.join(results)}: this run takes the folder over",
        flush=True,
    )
    return True

"""Keeps one run out of another's folder: the manifest each run folder carries (``run.json``).

A run's *identity* (kind, preset, encoder, seed, mode, fraction, the fields that change the run)
says which run it is, its *version* which pretraining of its encoder it came from (results of a
redone one are stale). :func:`check` is the one check of a folder against a run: before the run
claims it (:func:`claim`), and where the study asks whether it is done. A manifest whose run wrote
none of its results is taken over; another run's results, or files we never write, are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swavnb.base.errors import RunFolderError, another_folder, setting
from swavnb.base.files import write_json
from swavnb.base.layout import MANIFEST, foreign_entries, shown


def _plain(value: Any) -> Any:
    """``value`` as a manifest holds it (tuples as lists)."""
    return json.loads(json.dumps(value))


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None when it has none (a new folder)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderError(
            f"'{shown(path)}' is unreadable ({type(error).__name__}); delete it if the folder's "
            "run is yours, or choose another folder"
        ) from error


def describe(identity: Mapping[str, Any]) -> str:
    """A run's identity in a few words: ``finetune of swav (seed 0) at 10% of the labels``."""
    encoder = identity.get("encoder") or {}
    what = (
        f"{identity.get('aug')} pretraining (seed {identity.get('seed')})"
        if identity.get("kind") == "pretrain"
        else f"{identity.get('mode', identity.get('kind'))} of {encoder.get('aug')} "
        f"(seed {encoder.get('seed')})"
    )
    if "fraction" in identity:
        what += f" at {100 * identity['fraction']:g}% of the labels"
    if identity.get("kind") != "pretrain" and identity.get("seed") != encoder.get("seed"):
        what += f", evaluation seed {identity.get('seed')}"
    return f"{what}, preset {identity.get('preset')}"


def _refusal(folder: Path, held: Mapping, asked: Mapping, fix: str | None) -> RunFolderError:
    """One line: what ``folder`` holds, what was asked, where they differ, and ``fix``."""
    changed = []
    for old, new in ((held, asked), (held.get("config") or {}, asked.get("config") or {})):
        for key in sorted({*old, *new} - {"config"}):
            if old.get(key) != new.get(key):
                changed.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return RunFolderError(
        f"'{shown(folder)}' holds {describe(held)}, not {describe(asked)} "
        f"({'; '.join(changed[:4])}): {fix or another_folder()}"
    )


def _other_source(held: Mapping[str, Any], source: str | None) -> bool:
    return None not in (source, held.get("source")) and held["source"] != source


def check(
    folder: Path,
    identity: Mapping[str, Any],
    results: Sequence[str] | None = None,
    source: str | None = None,
    fix: str | None = None,
    recorded: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The manifest of ``folder`` where it holds the run ``identity``, else None (no run, or one
    that wrote none of ``results``: None never); RunFolderError where it holds another.

    Args:
        source: the checkpoint an evaluation evaluates, as rows show it.
        fix: what a refusal advises (default: :func:`swavnb.base.errors.another_folder`).
        recorded: what the folder's results say they are, where it has no manifest.
    """
    asked, held = _plain(dict(identity)), read_manifest(folder)
    if held is not None:
        same = held.get("identity") == asked
        if same and not _other_source(held, source):
            return held
        if results is None or any((folder / name).exists() for name in results):
            if not same:
                raise _refusal(folder, held.get("identity") or {}, asked, fix)
            return held
    if foreign := foreign_entries(folder):
        raise RunFolderError(
            f"'{shown(folder)}' holds files this project did not write "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}) and no {MANIFEST}: "
            f"choose a new or empty folder with {setting('out')} (or leave it unset so the folder "
            "is derived from the run); nothing was written there"
        )
    if held is None and recorded is not None and (recorded := _plain(dict(recorded))) != asked:
        raise _refusal(folder, recorded, asked, fix)
    return None


def claim(
    folder: Path,
    identity: Mapping[str, Any],
    version: str,
    replaces: Sequence[str] = (),
    source: str | None = None,
    **checked: Any,
) -> bool:
    """Mark ``folder`` (its lock held) as holding ``identity`` of ``version`` (the encoder's run
    id) before the run writes there; True where it held the same run of another version.

    Args:
        replaces: the results deleted where the folder held the same run of another version.
        source: another version of another checkpoint is another encoder: refused, not replaced.
        checked: :func:`check`'s ``results``, ``fix`` and ``recorded``.
    """
    held = check(folder, identity, source=source, **checked)
    if held is None and (stopped := read_manifest(folder)) is not None:
        print(
            f"'{shown(folder)}' held {describe(stopped.get('identity') or {})}, which stopped "
            f"before writing {' or '.join(checked['results'])}: this run takes the folder over",
            flush=True,
        )
    stale = held is not None and held.get("version") != version
    if stale and _other_source(held, source):
        raise RunFolderError(
            f"'{shown(folder)}' holds {describe(held['identity'])} of '{held['source']}', not "
            f"of '{source}': choose another folder with {setting('out')}, or delete that "
            "folder to evaluate the new checkpoint there"
        )
    for name in replaces if stale else ():
        (folder / name).unlink(missing_ok=True)
    if held is None or stale:
        manifest = {"identity": _plain(dict(identity)), "version": version}
        write_json(folder / MANIFEST, manifest | ({} if source is None else {"source": source}))
    return stale

"""Carry a study's results off a machine in a few small files, and back in
(``study --export`` / ``--import``).

An offline GPU node returns at most 8 files of at most 16 MiB: one ``results-<preset>.tar.gz`` of
every JSON the runs wrote (metrics, result rows, k-NN, clusters, benchmark) and each pretrained
model as bf16 weights split into parts of at most 15 MiB. Importing rebuilds each model as a
finished checkpoint (no optimiser state: it evaluates, it does not train further) where the
probes and results notebooks look for it.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from swavnb.base.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from swavnb.base.errors import DamagedExportError, RunFolderError
from swavnb.base.files import write_bytes
from swavnb.base.layout import CHECKPOINT, MANIFEST, resolve, run_folder, shown
from swavnb.method.augment import AUGMENTATIONS

FORMAT = "swavnb-export-v1"
PART_BYTES = 15 * 2**20
_RESULT_FILES = ("*.json",)  # every result, metrics, k-NN and clusters row, and the benchmark
# each headless step's log, its end only: what failed on a machine that is gone afterwards
_LOG_FILES, LOG_TAIL_BYTES = ("notebooks/*.log",), 64 * 2**10


def export_results(runs_dir: str | os.PathLike, preset: str, dest: str | os.PathLike) -> Path:
    """(Re)write ``dest/results-<preset>.tar.gz``: every JSON under ``runs_dir/<preset>``, and the
    end of each headless step's log; returns it."""
    run_dir, dest = resolve(runs_dir) / preset, resolve(dest)
    dest.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    files = [(p, 0) for pattern in _RESULT_FILES for p in sorted(run_dir.rglob(pattern))]
    files += [(p, LOG_TAIL_BYTES) for pattern in _LOG_FILES for p in sorted(run_dir.glob(pattern))]
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, tail in files:
            try:  # bytes first, then their size: a file replaced meanwhile is never cut short
                data = path.read_bytes()
            except FileNotFoundError:  # removed since the listing (a --force rerun)
                continue
            data = data[-tail:] if tail else data
            info = tarfile.TarInfo(str(path.relative_to(run_dir)))
            info.size, info.mtime = len(data), int(time.time())
            archive.addfile(info, io.BytesIO(data))
    target = dest / f"results-{preset}.tar.gz"
    write_bytes(target, buffer.getvalue())
    return target


def export_model(checkpoint: str | os.PathLike, dest: str | os.PathLike, name: str) -> list[Path]:
    """Write a finished run's model as bf16 weights in parts ``dest/<name>.model.<i>-of-<n>``;
    returns them."""
    state = load_checkpoint(checkpoint)
    weights = {k: v.bfloat16() if v.is_floating_point() else v for k, v in state["model"].items()}
    payload = {
        "format": FORMAT,
        "run_id": state.get("run_id"),
        "config": state["config"],
        "model_hparams": state["model_hparams"],
        "metrics": state["metrics"],
        "epoch": state["epoch"],
        "model": weights,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data, dest = buffer.getvalue(), resolve(dest)
    dest.mkdir(parents=True, exist_ok=True)
    n = -(-len(data) // PART_BYTES)
    for old in dest.glob(f"{name}.model.*"):
        old.unlink()
    parts = [dest / f"{name}.model.{i + 1}-of-{n}" for i in range(n)]
    for i, part in enumerate(parts):
        write_bytes(part, data[i * PART_BYTES : (i + 1) * PART_BYTES])
    return parts


_PART = re.compile(r"(?P<name>[^/]+)\.model\.(?P<index>[1-9][0-9]*)-of-(?P<total>[1-9][0-9]*)")


def _model_parts(src: Path) -> dict[str, list[Path]]:
    """{name: its parts in order} of every complete model export in ``src``.

    Raises:
        DamagedExportError: a file named like a part is not one (``<name>.model.<i>-of-<n>``).
        ValueError: a model's parts are not all there.
    """
    found: dict[str, dict[int, Path]] = {}
    totals: dict[str, set[int]] = {}
    for path in src.glob("*.model.*-of-*"):
        if path.name.startswith("."):  # an unfinished atomic write, cut off with its machine
            continue
        part = _PART.fullmatch(path.name)
        if part is None or int(part["index"]) > int(part["total"]):
            raise DamagedExportError(
                f"'{shown(path)}' is not a model part (--export names them "
                "<name>.model.<i>-of-<n>, i from 1 to n): move it out of the export folder"
            )
        found.setdefault(part["name"], {})[int(part["index"])] = path
        totals.setdefault(part["name"], set()).add(int(part["total"]))
    complete = {}
    for name, parts in found.items():
        if len(totals[name]) > 1:
            raise DamagedExportError(
                f"the parts of model export '{name}' in '{shown(src)}' belong to different exports "
                f"(-of-{', -of-'.join(map(str, sorted(totals[name])))}): copy one export's parts"
            )
        total = totals[name].pop()
        if len(parts) != total:
            raise ValueError(
                f"model export '{name}' in '{src}' has {len(parts)} of its {total} parts; "
                "copy all of them"
            )
        complete[name] = [parts[index] for index in sorted(parts)]
    return complete


def _unexpected(name: str) -> str:
    """Why ``name`` is not a file the export writes, or '' when it is one: a JSON file of a run
    folder or a step's log under ``notebooks/``, a plain relative path without hidden parts."""
    path = PurePosixPath(name)
    if path.is_absolute():
        return "an absolute path"
    if any(part in ("", ".", "..") or part.startswith(".") for part in path.parts):
        return "a path that leaves its folder or names a hidden file"
    if any(part == CHECKPOINT or part.endswith(".pt") for part in path.parts):
        return "a checkpoint or cached features, which an import never writes"
    if path.suffix == ".json" or (
        len(path.parts) == 2 and path.parts[0] == "notebooks" and path.suffix == ".log"
    ):
        return ""
    return "not a result (JSON) file or a step's log"


def _read_archive(archive: Path) -> dict[str, bytes]:
    """{relative name: bytes} of every file in a results archive, read whole and checked before
    anything is written: only the names the export writes (:func:`_unexpected`), plain files, and
    JSON that parses."""
    fix = f"copy '{archive.name}' again from the export folder (it is rewritten after every step)"
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = tar.getmembers()
            read = {  # links are never followed: a member that is one is refused below
                str(PurePosixPath(m.name)): tar.extractfile(m).read()  # "./a.json" is "a.json"
                for m in members
                if m.isfile()
            }
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DamagedExportError(
            f"'{shown(archive)}' is not a readable results archive ({type(error).__name__}: "
            f"{error}); {fix}"
        ) from error
    for member in members:
        why = _unexpected(member.name) or (
            "" if member.isfile() else "a link, folder or device, not a plain file"
        )
        if not why and member.name.endswith(".json"):
            try:
                json.loads(read[str(PurePosixPath(member.name))])
            except ValueError:
                why = "JSON that does not parse"
        if why:
            raise DamagedExportError(
                f"'{shown(archive)}' holds {member.name!r}, {why}: an export holds only its runs' "
                f"JSON files and step logs; {fix}"
            )
    return read


def _read_model(name: str, parts: list[Path]) -> dict[str, Any]:
    """The payload of one model export, checked before any checkpoint is written."""
    data = b"".join(part.read_bytes() for part in parts)
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:  # a cut-off copy fails inside torch's zip reader in many ways
        raise DamagedExportError(
            f"model export '{name}' ({len(parts)} parts, {len(data):,} bytes in "
            f"'{shown(parts[0].parent)}') is truncated or damaged ({type(error).__name__}); copy "
            "its parts again from the export folder"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DamagedExportError(
            f"'{shown(parts[0])}' is not a swavnb model export (expected format {FORMAT})"
        )
    return payload


def _check_model_target(target: Path, payload: dict[str, Any]) -> bool:
    """Whether ``target`` already holds this model (skip it); refuse when it holds another
    pretraining."""
    if not target.exists():
        return False
    try:
        held = load_checkpoint(target).get("run_id")
    except CheckpointError as error:
        raise RunFolderError(f"{error}; the import would replace it: move it away first") from error
    if held and held == payload.get("run_id"):
        return True
    raise RunFolderError(
        f"'{shown(target)}' holds another pretraining (run {held}) than the export's "
        f"(run {payload.get('run_id')}): move that folder away, or import with another --runs_dir"
    )


def _check_manifests(run_dir: Path, members: dict[str, bytes]) -> None:
    """Refuse when a run folder here holds another run than the same folder in the archive."""
    for name, data in members.items():
        if PurePosixPath(name).name != MANIFEST:
            continue
        local = run_dir / name
        if not local.is_file():
            continue
        held, incoming = json.loads(local.read_text()), json.loads(data)
        if held.get("identity") != incoming.get("identity"):
            raise RunFolderError(
                f"'{shown(local.parent)}' holds another run than the export's folder of that name: "
                "move it away, or import with another --runs_dir"
            )


def import_study(
    src: str | os.PathLike, runs_dir: str | os.PathLike, preset: str
) -> dict[str, Any]:
    """Unpack an export into ``runs_dir/<preset>``: the JSON files, and each model as a finished
    checkpoint.

    Everything is read and checked first, so a damaged archive or model part, or a run folder here
    that holds another run, writes nothing.

    Raises:
        DamagedExportError: the archive or a model part cannot be read back (one line, the fix).
        RunFolderError: a checkpoint or run folder here holds another pretraining or run.

    Returns:
        {"files": JSON files written, "checkpoints": checkpoints written}.
    """
    src, run_dir = resolve(src), resolve(runs_dir) / preset
    archive = src / f"results-{preset}.tar.gz"
    if not archive.is_file():
        raise FileNotFoundError(
            f"'{archive}' not found: run the study with --export {src} (same --preset) first"
        )
    members = _read_archive(archive)
    models = {name: _read_model(name, parts) for name, parts in sorted(_model_parts(src).items())}
    targets = {}
    for name, payload in models.items():
        config = payload["config"]
        seed = config.get("seed", 0)
        if config.get("aug") not in AUGMENTATIONS or type(seed) is not int or seed < 0:
            raise DamagedExportError(
                f"model export '{name}' names aug {config.get('aug')!r} and seed {seed!r}, which "
                "no pretraining writes: it is not a swavnb export"
            )
        target = run_folder(preset, config["aug"], config.get("seed", 0), runs_dir) / CHECKPOINT
        if not _check_model_target(target, payload):
            targets[name] = target
    _check_manifests(run_dir, members)
    for name, data in members.items():
        write_bytes(run_dir / name, data)
    for name, target in targets.items():
        payload = models[name]
        save_checkpoint(
            {
                "run_id": payload.get("run_id"),
                "config": payload["config"],
                "model_hparams": payload["model_hparams"],
                "model": {
                    k: v.float() if v.is_floating_point() else v
                    for k, v in payload["model"].items()
                },
                "optimizer": None,
                "queue": None,
                "queue_pushes": 0,
                "rng": None,
                "epoch": payload["epoch"],
                "step": 0,
                "metrics": payload["metrics"],
                "finished": True,
                "tally": None,
                "imported_from": name,
            },
            target,
        )
    return {"files": sorted(members), "checkpoints": list(targets.values())}

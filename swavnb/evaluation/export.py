"""A pretraining checkpoint's backbone, exported for use without swavnb
(``python -m swavnb.export``): ``encoder.safetensors`` (:mod:`swavnb.method.encoder_file`) and its
model card (:mod:`swavnb.evaluation.model_card`), ``README.md`` and ``model_card.json``, in one
folder.

Exporting the same checkpoint again rewrites the folder (the card then lists any rows added since);
a folder holding another checkpoint's export is replaced only when told (``force``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from swavnb.base.checkpoint import CheckpointError, load_checkpoint
from swavnb.base.errors import EncoderFileError, ExportFolderError, in_notebook
from swavnb.base.files import write_bytes, write_json
from swavnb.base.layout import CARD, CARD_JSON, ENCODER, resolve, shown
from swavnb.evaluation.features import read_encoder
from swavnb.evaluation.model_card import card_markdown, model_card
from swavnb.method.encoder_file import (
    backbone_tensors,
    encoder_metadata,
    parameter_count,
    read_metadata,
    tensors_digest,
    write_encoder,
)

OURS = (ENCODER, CARD_JSON, CARD)  # the files an export writes, in the order it writes them
_ZIP = b"PK\x03\x04"  # how every file torch.save writes begins


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` begins as a safetensors file does: a header length, then JSON."""
    with open(path, "rb") as file:
        head = file.read(9)
    size = path.stat().st_size
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") + 8 <= size


def read_trained_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A finished pretraining checkpoint, or one line naming what is wrong with the file and the
    fix.

    Raises:
        CheckpointError: missing, a folder, an exported encoder, not a checkpoint, truncated or
            damaged.
        ValueError: an unfinished run.
    """
    path = resolve(path)
    if path.is_file() and not path.stat().st_size:
        raise CheckpointError(
            f"checkpoint '{shown(path)}' is empty (a copy cut short?): copy it again, or rerun its "
            "pretraining command to write it"
        )
    if path.is_file() and _is_safetensors(path):
        raise CheckpointError(
            f"'{shown(path)}' is an exported encoder already, not a checkpoint: load it with "
            "swavnb.load_encoder; the export takes a run folder's checkpoint.pt"
        )
    try:
        state = load_checkpoint(path)
    except CheckpointError as error:
        if error.__cause__ is None:  # missing, a folder, another format: its message has the fix
            raise
        with open(path, "rb") as file:
            zipped = file.read(4) == _ZIP
        if not zipped:
            raise CheckpointError(
                f"'{shown(path)}' is not a swavnb pretraining checkpoint (not a file torch.save "
                "writes): pass the checkpoint.pt of a pretraining run folder"
            ) from error
        raise CheckpointError(
            f"checkpoint '{shown(path)}' is truncated or damaged "
            f"({type(error.__cause__).__name__}): copy it again from where it was trained, or "
            "rerun its pretraining command to write it again"
        ) from error
    if not state.get("finished"):
        raise ValueError(
            f"'{shown(path)}' is an unfinished pretraining run (epoch {state.get('epoch')} of "
            f"{state['config'].get('epochs')}): rerun its pretrain command to finish it, then "
            "export"
        )
    return state


def check_export_folder(out: Path, digest: str, force: bool = False) -> bool:
    """Whether ``out`` may take the export of the encoder whose tensors have SHA-256 ``digest``.

    Returns:
        True when ``out`` holds another (or a damaged, or a partial) export that ``force``
        replaces; False when it is new, empty or holds this encoder's export.

    Raises:
        ExportFolderError: ``out`` is a file, holds files an export does not write, or (without
            ``force``) holds another encoder's export; one line naming the file and the fix.
    """
    if out.exists() and not out.is_dir():
        raise ExportFolderError(
            f"'{shown(out)}' is a file: pass a new or empty folder as the export folder"
        )
    if not out.is_dir():
        return False
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    others = [name for name in names if name not in OURS]
    if others:
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        raise ExportFolderError(
            f"'{shown(out)}' holds '{others[0]}'{more}, which an encoder export does not write: "
            "export into a new or empty folder"
        )
    if not names:
        return False
    force_it = "force=True" if in_notebook() else "--force"  # a notebook calls the function
    fix = f"choose another folder, or pass {force_it} to replace it"
    if ENCODER not in names:
        if force:
            return True
        raise ExportFolderError(
            f"'{shown(out)}' holds {names[0]} but no {ENCODER} (an export cut short, or not an "
            f"export): {fix}"
        )
    try:
        held = read_metadata(out / ENCODER)
    except EncoderFileError as error:
        if force:
            return True
        raise ExportFolderError(
            f"'{shown(out / ENCODER)}' is damaged or not a swavnb export: {fix}"
        ) from error
    if held.get("sha256") == digest:
        return False
    if force:
        return True
    raise ExportFolderError(
        f"'{shown(out / ENCODER)}' holds another encoder (from '{held.get('checkpoint')}', "
        f"{held.get('preset')} {held.get('aug')} seed {held.get('seed')}, run "
        f"{held.get('run_id')}): {fix}"
    )


def export_encoder(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False
) -> dict[str, Any]:
    """Write a finished checkpoint's backbone and its model card into ``out_dir``.

    ``out_dir/encoder.safetensors`` is a torchvision ``resnet18`` state dict (CIFAR stem, no
    ``fc``) whose metadata names the architecture, stem, input and training; ``out_dir/README.md``
    and ``out_dir/model_card.json`` are its card. Each file is written atomically.

    Args:
        checkpoint: a finished pretraining ``checkpoint.pt``; evaluations are looked up in its
            folder.
        out_dir: a new or empty folder, or one holding this checkpoint's export.
        force: replace another checkpoint's (or a damaged) export in ``out_dir``.

    Returns:
        ``{"folder", "encoder", "card", "card_json"}`` paths and ``"facts"``, the card's content.

    Raises:
        CheckpointError, ValueError: the checkpoint is missing, damaged, not one, or unfinished.
        ExportFolderError: ``out_dir`` holds something else (:func:`check_export_folder`).
    """
    checkpoint, out = resolve(checkpoint), resolve(out_dir)
    state = read_trained_checkpoint(checkpoint)
    try:
        tensors = backbone_tensors(state["model"])
    except ValueError as error:
        raise CheckpointError(f"'{shown(checkpoint)}': {error}") from error
    digest = tensors_digest(tensors)
    replacing = check_export_folder(out, digest, force)
    run_id = read_encoder(checkpoint, state["config"]["seed"], state=state).run_id
    facts = model_card(state, checkpoint, run_id, digest, parameter_count(tensors))
    if not replacing and _holds(out, facts):  # a rerun writes nothing: same weights, same card
        return _exported(out, _read_facts(out))
    if replacing:  # no card of the replaced encoder may stay beside the new weights
        for name in OURS[1:]:
            (out / name).unlink(missing_ok=True)
    training, inputs = facts["training"], facts["input"]
    metadata = encoder_metadata(
        {
            "sha256": digest,
            "image_size": str(inputs["image_size"]),
            "input": "RGB float32 in [0, 1] (pixels / 255), normalised by mean and std",
            "mean": inputs["mean"],
            "std": inputs["std"],
            "preset": training["preset"],
            "aug": training["aug"],
            "seed": str(training["seed"]),
            "epochs": str(training["epochs"]),
            "train_images": str(training["images"]),
            "precision": facts["hardware"]["precision"],
            "run_id": run_id,
            "checkpoint": facts["source"]["checkpoint"],
            "commit": facts["commit"]["training"] or "not recorded",
            "card": CARD,
        }
    )
    encoder = write_encoder(out / ENCODER, tensors, metadata)
    write_json(out / CARD_JSON, facts)
    write_bytes(out / CARD, card_markdown(facts).encode())
    return _exported(out, facts, encoder)


def _read_facts(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / CARD_JSON).read_text())
    except (OSError, ValueError):
        return None


def _holds(out: Path, facts: dict[str, Any]) -> bool:
    """Whether ``out`` holds an export whose card says what ``facts`` say, apart from when it was
    exported (the weights' digest is in the facts)."""
    held = _read_facts(out)
    if held is None or not all((out / name).is_file() for name in OURS):
        return False
    unstamped = lambda card: {**card, "exported": {**card.get("exported", {}), "at": None}}
    return unstamped(held) == json.loads(json.dumps(unstamped(facts)))


def _exported(out: Path, facts: dict[str, Any], encoder: Path | None = None) -> dict[str, Any]:
    return {
        "folder": out,
        "encoder": encoder or out / ENCODER,
        "card": out / CARD,
        "card_json": out / CARD_JSON,
        "facts": facts,
    }

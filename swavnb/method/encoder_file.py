"""The exported encoder: the SwAV backbone as a torchvision ``resnet18`` state dict in safetensors
(plain tensors, no pickle run on load), the CIFAR stem stated in the file's metadata, and the
loader that gives the torchvision model back.

Written by ``python -m swavnb.export`` (:mod:`swavnb.evaluation.export`); the keys are torchvision's
own (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...), without ``fc``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from swavnb.base.errors import EncoderFileError
from swavnb.base.files import write_bytes
from swavnb.base.layout import ENCODER, resolve, shown
from swavnb.method.model import BACKBONE_DIM, torchvision_cifar_resnet18

FORMAT = "swavnb-encoder-v1"
ARCHITECTURE = "torchvision.models.resnet18"
# what differs from torchvision's resnet18(), layer by layer, as code a reader can paste
STEM = {
    "conv1": "torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)",
    "maxpool": "torch.nn.Identity()",
    "fc": "torch.nn.Identity()",
}
_PREFIX = "backbone."  # the backbone's keys inside a SwAVModel state dict
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_EXPORT_FIX = "export it again with `python -m swavnb.export CHECKPOINT DIR`"


def _empty_encoder() -> nn.Module:
    """The torchvision model with the CIFAR stem, its tensors on the meta device: no memory, no
    initialisation, and no draw from the caller's random generators."""
    with torch.device("meta"):
        return torchvision_cifar_resnet18()


def torchvision_keys() -> list[str]:
    """The state-dict keys of torchvision's resnet18 with the CIFAR stem and no ``fc``."""
    return list(_empty_encoder().state_dict())


def backbone_tensors(model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone of a :class:`~swavnb.method.model.SwAVModel` state dict under torchvision's
    resnet18 names: contiguous CPU tensors, as safetensors stores them.

    Raises:
        ValueError: the state dict's backbone is not the CIFAR-stem ResNet-18 (keys differ).
    """
    tensors = {
        key[len(_PREFIX) :]: value.detach().to("cpu").contiguous()
        for key, value in model_state.items()
        if key.startswith(_PREFIX)
    }
    expected = torchvision_keys()
    if set(tensors) != set(expected):
        extra, missing = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
        raise ValueError(
            f"the checkpoint's backbone is not the CIFAR-stem ResNet-18 (missing {missing[:3]}, "
            f"unexpected {extra[:3]})"
        )
    return {key: tensors[key] for key in expected}


def parameter_count(tensors: Mapping[str, torch.Tensor]) -> int:
    """Trainable parameters among ``tensors`` (BatchNorm's running statistics left out)."""
    return sum(t.numel() for k, t in tensors.items() if not k.endswith(_BUFFERS))


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``: the same weights give the
    same digest, whatever file or order they came in."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encoder_metadata(facts: Mapping[str, object]) -> dict[str, str]:
    """The file's metadata (safetensors keeps string keys and values): format, architecture, stem
    and output, then ``facts`` (strings kept, anything else as JSON)."""
    metadata = {
        "format": FORMAT,
        "architecture": ARCHITECTURE,
        **{f"stem.{layer}": code for layer, code in STEM.items()},
        "output": f"(N, {BACKBONE_DIM}) globally average-pooled features",
    }
    for key, value in facts.items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    return metadata


def write_encoder(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Write ``tensors`` with ``metadata`` (:func:`encoder_metadata`) to ``path`` as safetensors,
    atomically; returns the path. ``metadata`` must hold ``sha256`` (:func:`tensors_digest`)."""
    from safetensors.torch import save

    if metadata.get("sha256") != tensors_digest(tensors):
        raise ValueError("the metadata's sha256 is not the digest of the tensors written")
    path = resolve(path)
    write_bytes(path, save(dict(tensors), metadata=dict(metadata)))
    return path


def _encoder_path(path: str | os.PathLike) -> Path:
    """The file ``path`` names: itself, or the ``encoder.safetensors`` in a folder.

    Raises:
        FileNotFoundError: one line naming the command that writes it.
    """
    path = resolve(path)
    if path.is_dir():
        if not (path / ENCODER).is_file():
            raise FileNotFoundError(
                f"'{shown(path)}' holds no {ENCODER}: pass the folder `python -m swavnb.export "
                "CHECKPOINT DIR` wrote, or the file itself"
            )
        return path / ENCODER
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder '{shown(path)}' does not exist: export a pretraining checkpoint with "
            "`python -m swavnb.export CHECKPOINT DIR`, then pass DIR or DIR/" + ENCODER
        )
    return path


def _damaged(path: Path, error: Exception) -> EncoderFileError:
    cause = str(error).splitlines()[0] if str(error) else type(error).__name__
    with open(path, "rb") as file:
        zipped = file.read(4) == b"PK\x03\x04"
    if zipped:  # what torch.save writes: a checkpoint, not an export
        return EncoderFileError(
            f"'{shown(path)}' is a torch checkpoint, not an exported encoder: export it first with "
            f"`python -m swavnb.export {shown(path)} DIR` and load DIR"
        )
    return EncoderFileError(
        f"'{shown(path)}' is truncated or damaged, or not a safetensors file ({cause}): copy it "
        f"again, or {_EXPORT_FIX}"
    )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an exported encoder (:func:`encoder_metadata`), read from its header alone.

    Args:
        path: the ``encoder.safetensors`` file, or the folder holding it.

    Raises:
        FileNotFoundError: no such file.
        EncoderFileError: the file is truncated, damaged, or not a swavnb encoder export.
    """
    from safetensors import safe_open

    path = _encoder_path(path)
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
    except Exception as error:  # safetensors raises its own SafetensorError for every damage
        raise _damaged(path, error) from error
    if metadata.get("format") != FORMAT:
        raise EncoderFileError(
            f"'{shown(path)}' is a safetensors file but not a swavnb encoder export (format "
            f"{metadata.get('format')!r}, expected {FORMAT!r}): {_EXPORT_FIX}"
        )
    return metadata


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The exported encoder as the torchvision model it is, in eval mode.

    The model is ``torchvision.models.resnet18`` with :data:`STEM` (3x3 stride-1 ``conv1``, no
    max-pool, ``fc`` an Identity): plain torchvision layers, no swavnb class, loaded with strict key
    checking after the file's SHA-256 is checked. Its ``forward`` takes normalised images at the
    resolution it was trained on (the model card beside it says which) and gives (N, 512) features.

    Args:
        path: the ``encoder.safetensors`` that ``python -m swavnb.export`` wrote, or its folder.
        device: where the weights go.

    Returns:
        The model in eval mode (BatchNorm uses its stored running statistics).

    Raises:
        FileNotFoundError: no such file.
        EncoderFileError: the file is truncated, damaged or not a swavnb encoder export (one line
            naming the fix).
    """
    from safetensors.torch import load_file

    path = _encoder_path(path)
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as error:
        raise _damaged(path, error) from error
    if tensors_digest(tensors) != metadata.get("sha256"):
        raise EncoderFileError(
            f"'{shown(path)}' is damaged: its weights do not match the SHA-256 its export "
            f"recorded; copy it again, or {_EXPORT_FIX}"
        )
    model = _empty_encoder()
    try:  # strict: every key of torchvision's model, no other
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as error:
        raise EncoderFileError(
            f"'{shown(path)}' does not fit torchvision's resnet18 with the CIFAR stem "
            f"({str(error).splitlines()[0]}): {_EXPORT_FIX}"
        ) from error
    return model.eval()

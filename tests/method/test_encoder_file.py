"""The exported encoder file: plain torchvision loads it and computes the backbone's features; a
damaged, truncated or foreign file is one line naming it and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import swavnb
from swavnb.base.errors import EncoderFileError
from swavnb.base.layout import ENCODER
from swavnb.method.encoder_file import (
    ARCHITECTURE,
    FORMAT,
    STEM,
    backbone_tensors,
    encoder_metadata,
    load_encoder,
    parameter_count,
    tensors_digest,
    write_encoder,
)
from swavnb.method.model import SwAVModel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_backbone() -> nn.Module:
    """A SwAV backbone whose BatchNorm statistics are not the initial ones (a few train-mode
    passes), so the export must carry buffers as well as weights."""
    torch.manual_seed(0)
    model = SwAVModel(feat_dim=8, n_prototypes=10)
    with torch.no_grad():
        for _ in range(3):
            model.backbone(torch.randn(8, 3, 16, 16) * 2 + 0.5)
    return model


@pytest.fixture
def exported(trained_backbone: nn.Module, tmp_path: Path) -> Path:
    tensors = backbone_tensors(trained_backbone.state_dict())
    return write_encoder(
        tmp_path / ENCODER,
        tensors,
        encoder_metadata({"sha256": tensors_digest(tensors), "image_size": "16"}),
    )


def _plain_torchvision() -> nn.Module:
    """What a user without swavnb writes: torchvision's resnet18 with the CIFAR stem."""
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    return net


def test_plain_torchvision_loads_it_strictly_and_computes_the_backbones_features(
    trained_backbone, exported
):
    net = _plain_torchvision()
    result = net.load_state_dict(load_file(exported), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with safe_open(str(exported), framework="pt") as file:
        metadata = file.metadata()
    assert metadata["format"] == FORMAT and metadata["architecture"] == ARCHITECTURE
    assert metadata["stem.conv1"] == STEM["conv1"] and "stride=1" in STEM["conv1"]
    assert metadata["stem.maxpool"] == metadata["stem.fc"] == "torch.nn.Identity()"
    assert not any(key.startswith("fc.") for key in load_file(exported))
    backbone = trained_backbone.backbone.eval()
    with torch.no_grad():
        for size in (16, 32):
            images = torch.randn(4, 3, size, size)
            theirs = net.eval()(images)
            torch.testing.assert_close(theirs, backbone(images), rtol=0, atol=0)
            assert theirs.shape == (4, 512)
    assert parameter_count(load_file(exported)) == sum(p.numel() for p in net.parameters())


def test_load_encoder_gives_the_torchvision_model_without_touching_the_callers_rng(
    trained_backbone, exported
):
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    model = swavnb.load_encoder(exported.parent)  # the folder, or the file itself
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not model.training and isinstance(model, torchvision.models.ResNet)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)  # torchvision's, not swavnb's layers
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert isinstance(model.maxpool, nn.Identity) and isinstance(model.fc, nn.Identity)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(images), trained_backbone.backbone.eval()(images))
    assert all(p.requires_grad for p in model.parameters())  # fine-tunable as it comes


def _one_line(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_a_damaged_truncated_or_foreign_file_is_one_line_naming_it(exported, tmp_path):
    data = exported.read_bytes()
    truncated = tmp_path / "truncated" / ENCODER
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(EncoderFileError) as error:
        load_encoder(truncated)
    _one_line(error, str(truncated), "truncated or damaged", "python -m swavnb.export")
    # the same size, one weight byte changed: only the recorded SHA-256 can tell
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(data[:-1000] + bytes([data[-1000] ^ 0xFF]) + data[-999:])
    with pytest.raises(EncoderFileError) as error:
        load_encoder(flipped)
    _one_line(error, str(flipped), "SHA-256")
    foreign = tmp_path / "foreign.safetensors"  # a safetensors file, not an export of ours
    save_file({"conv1.weight": torch.zeros(64, 3, 3, 3)}, foreign)
    with pytest.raises(EncoderFileError) as error:
        load_encoder(foreign)
    _one_line(error, str(foreign), "not a swavnb encoder export")
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": {}}, checkpoint)
    with pytest.raises(EncoderFileError) as error:
        load_encoder(checkpoint)
    _one_line(error, str(checkpoint), "torch checkpoint", "python -m swavnb.export")
    with pytest.raises(FileNotFoundError) as error:
        load_encoder(tmp_path / "missing.safetensors")
    _one_line(error, "missing.safetensors", "does not exist", "python -m swavnb.export")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        load_encoder(tmp_path / "empty")
    _one_line(error, str(tmp_path / "empty"), f"holds no {ENCODER}")


def test_import_swavnb_stays_light_and_load_encoder_comes_on_first_use():
    check = (
        "import sys, swavnb\n"
        "print('torch' in sys.modules)\n"
        "from swavnb.method import encoder_file\n"
        "print(swavnb.load_encoder is encoder_file.load_encoder)\n"
        "print(hasattr(swavnb, 'load_encoders'))\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "False"]

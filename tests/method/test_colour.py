"""swavnb.method.colour computes what kornia's torchvision-matching colour ops compute, on real
images."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from swavnb.method import colour

kornia = pytest.importorskip("kornia")


@pytest.fixture(scope="module")
def batch(real_images):
    generator = torch.Generator().manual_seed(0)
    x = real_images[:256].float() / 255
    return (
        x,
        torch.rand(256, generator=generator) * 1.6 + 0.2,
        torch.rand(256, generator=generator) - 0.5,
    )


def test_each_op_matches_kornia_on_real_images(batch):
    x, factor, shift = batch
    pairs = {
        "brightness": (
            colour.brightness(x, factor),
            kornia.enhance.adjust_brightness_accumulative(x, factor),
        ),
        "contrast": (
            colour.contrast(x, factor),
            kornia.enhance.adjust_contrast_with_mean_subtraction(x, factor),
        ),
        "saturation": (
            colour.saturation(x, factor),
            kornia.enhance.adjust_saturation_with_gray_subtraction(x, factor),
        ),
        "hue": (
            colour.hue(x, shift),
            kornia.enhance.adjust_hue(x, shift * 2 * math.pi).clamp(0, 1),
        ),
        "grayscale": (colour.grayscale(x), kornia.color.rgb_to_grayscale(x)),
    }
    for name, (ours, theirs) in pairs.items():
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0, msg=name)


def test_identity_factors_leave_images_unchanged(batch):
    x, _, _ = batch
    ones, zeros = torch.ones(len(x)), torch.zeros(len(x))
    for op, neutral in (
        (colour.brightness, ones),
        (colour.contrast, ones),
        (colour.saturation, ones),
        (colour.hue, zeros),
    ):
        torch.testing.assert_close(op(x, neutral), x, atol=2e-6, rtol=0)


def test_the_package_imports_and_augments_without_kornia():
    # a kornia that cannot be imported, as on a node where it is not installed
    code = (
        "import sys; sys.modules['kornia'] = None\n"
        "import torch\n"
        "from swavnb.method.augment import Augmentation\n"
        "from swavnb.study import plan\nfrom swavnb.pretraining import train\n"
        "from swavnb.evaluation import finetuning\n"
        "views = Augmentation('swav')(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), "
        "torch.Generator().manual_seed(0))\nprint(len(views))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "6", out.stderr[-2000:]

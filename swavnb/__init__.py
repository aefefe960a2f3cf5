"""swavnb: SwAV self-supervised learning on CIFAR-100, the package behind the study's notebooks."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # swavnb.load_encoder is looked up on first use: `import swavnb` stays free of torchvision
    if name == "load_encoder":
        from swavnb.method.encoder_file import load_encoder

        return load_encoder
    raise AttributeError(f"module 'swavnb' has no attribute {name!r}")

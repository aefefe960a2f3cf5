"""``python -m swavnb.export CHECKPOINT DIR [--force]``: a pretraining checkpoint's backbone as a
torchvision ``resnet18`` state dict in safetensors, with its model card
(:mod:`swavnb.evaluation.export`).
"""

from __future__ import annotations

import argparse
from typing import Any

from swavnb.base import cli
from swavnb.base.layout import shown
from swavnb.evaluation.export import export_encoder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m swavnb.export",
        description="Export a finished pretraining's backbone for use without swavnb: "
        "DIR/encoder.safetensors (a torchvision resnet18 state dict, CIFAR stem, no fc) and its "
        "model card DIR/README.md (+ model_card.json); load it with swavnb.load_encoder(DIR)",
    )
    parser.add_argument("checkpoint", help="a finished run's checkpoint.pt")
    parser.add_argument(
        "dir", help="a new or empty folder, or one holding this checkpoint's export"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace another checkpoint's (or a damaged) export in DIR",
    )
    args = parser.parse_args(argv)
    exported = export_encoder(args.checkpoint, args.dir, args.force)
    rows = len(exported["facts"]["evaluations"])
    size = exported["encoder"].stat().st_size / 2**20
    print(
        f"exported {shown(exported['encoder'])} ({size:.1f} MiB) and its model card "
        f"{shown(exported['card'])}: " + (f"{rows} evaluation rows" if rows else "not evaluated")
    )
    return exported


if __name__ == "__main__":
    cli.run(main)

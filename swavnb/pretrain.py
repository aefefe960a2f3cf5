"""``python -m swavnb.pretrain --preset P --aug A [--seed S] [--out DIR] [--field value ...]``

Also runs unchanged under ``torchrun --nproc_per_node=N -m swavnb.pretrain ...``.
"""

from __future__ import annotations

from swavnb.base import cli
from swavnb.base.distributed import teardown
from swavnb.base.layout import CHECKPOINT, run_folder, shown
from swavnb.pretraining.config import PRESETS, PretrainConfig, preset_changes, pretrain_config
from swavnb.pretraining.train import pretrain


def main(argv: list[str] | None = None) -> dict:
    parser = cli.parser(
        "python -m swavnb.pretrain",
        "SwAV pretraining on CIFAR-100 (resumes if DIR has a checkpoint)",
        PretrainConfig,
    )
    parser.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument(
        "--out",
        default="",
        help="run folder for checkpoint.pt and metrics.json (default: the study's, "
        "runs/<preset>/<aug>/seed-<seed>; with fields set otherwise than the preset, "
        "runs/<preset>/custom/<field>-<value>__.../<aug>/seed-<seed>)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    args, extra = parser.parse_known_args(argv)
    config = pretrain_config(args.preset, **cli.parse_overrides(extra, PretrainConfig))
    changes = preset_changes(config)  # set otherwise than the preset: a folder of its own
    out = args.out or run_folder(config.preset, config.aug, config.seed, changes=changes)
    try:
        metrics = pretrain(config, out, progress=not args.no_progress)
    finally:
        teardown()  # leave torchrun's process group cleanly, also after an error
    last = metrics["epochs"][-1]
    print(
        f"done: {len(metrics['epochs'])} epochs, loss {last['loss']:.4f}, "
        f"checkpoint {shown(out)}/{CHECKPOINT}"
    )
    return metrics


if __name__ == "__main__":
    cli.run(main)

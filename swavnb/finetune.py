"""``python -m swavnb.finetune --checkpoint C|none --fraction F [--mode finetune|linear]
[--out DIR] [--field value ...]``: one label-fraction evaluation
(:mod:`swavnb.evaluation.finetuning`).
"""

from __future__ import annotations

from typing import Any

from swavnb.base import cli
from swavnb.base.checkpoint import load_checkpoint
from swavnb.base.layout import RESULT, is_random_init
from swavnb.evaluation.config import FRACTIONS, MODES, FinetuneConfig, finetune_config
from swavnb.evaluation.finetuning import finetune
from swavnb.pretraining.config import PRESETS


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = cli.parser(
        "python -m swavnb.finetune",
        "Top-1/top-5 of a backbone trained on a fraction of the labels",
        FinetuneConfig,
    )
    parser.add_argument(
        "--checkpoint", required=True, help="pretraining checkpoint.pt, or 'none' for random init"
    )
    parser.add_argument(
        "--fraction", type=float, required=True, help=f"label fraction in (0, 1], e.g. {FRACTIONS}"
    )
    parser.add_argument("--mode", default="finetune", help=f"one of {', '.join(MODES)}")
    parser.add_argument(
        "--out",
        default="",
        help="folder for result.json (default: <mode>-<fraction> in the checkpoint's folder, or "
        "runs/<preset>/scratch/seed-<seed>/ for random init)",
    )
    parser.add_argument(
        "--preset", default=None, help=f"one of {', '.join(PRESETS)} (default: the checkpoint's)"
    )
    parser.add_argument("--cache", default=None, help="folder for cached features (linear mode)")
    args, extra = parser.parse_known_args(argv)
    overrides = cli.parse_overrides(extra, FinetuneConfig)
    trained = None if is_random_init(args.checkpoint) else load_checkpoint(args.checkpoint)
    preset = args.preset or ("quick" if trained is None else trained["config"]["preset"])
    if trained is not None:  # a replicate: evaluated with its pretraining's seed unless told
        overrides.setdefault("seed", trained["config"]["seed"])
    config = finetune_config(preset, **overrides)
    row = finetune(args.checkpoint, args.fraction, args.mode, args.out, config, args.cache)
    print(
        f"{row['aug']} {row['mode']} {100 * row['fraction']:g}% labels: top-1 {row['top1']:.2f}  "
        f"top-5 {row['top5']:.2f}  ({row['seconds']:.0f} s), {row['out_dir']}/{RESULT}"
    )
    return row


if __name__ == "__main__":
    cli.run(main)

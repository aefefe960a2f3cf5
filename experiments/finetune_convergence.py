"""Has quick's fine-tuning converged where the study fine-tunes? Doubling the steps must move
top-1 by less than one standard error.

``python experiments/finetune_convergence.py --checkpoint runs/quick/swav/seed-0/checkpoint.pt
[--fraction 0.1] [--steps 400,800] [--encoders pretrained,scratch] [--json out.json]``

Fine-tunes the checkpoint's backbone and a random-init one (the same seed) on the preset's labelled
fraction for each step count (``min_steps``, with one epoch so the step count alone decides),
outside the study's folders, and prints top-1 with its test-set standard error per run and the
change from the first step count to each other one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from swavnb.base.device import device_name, pick_device
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.finetuning import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--steps", default="400,800")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--encoders",
        default="pretrained,scratch",
        help="which of the two to fine-tune (one per process runs them side by side)",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.steps.split(",")]
    device = pick_device("auto")
    report = {
        "device": device_name(device),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "preset": args.preset,
        "fraction": args.fraction,
        "seed": args.seed,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        chosen = {"pretrained": args.checkpoint, "scratch": "none"}
        for checkpoint in (chosen[name] for name in args.encoders.split(",")):
            first = None
            for steps in counts:
                config = finetune_config(args.preset, seed=args.seed, epochs=1, min_steps=steps)
                out = Path(tmp) / f"{Path(checkpoint).parent.parent.name}-{steps}"
                row = finetune(checkpoint, args.fraction, "finetune", out, config, runs_dir=tmp)
                first = row["top1"] if first is None else first
                report["runs"].append(
                    {k: row[k] for k in ("aug", "n_labels", "top1", "top1_se", "top5", "seconds")}
                    | {"steps": steps}
                )
                change = row["top1"] - first
                print(
                    f"{row['aug']:8} {row['n_labels']} labels, {steps} steps: top-1 "
                    f"{row['top1']:.2f} ± {row['top1_se']:.2f} (change {change:+.2f}), "
                    f"{row['seconds']:.0f} s",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

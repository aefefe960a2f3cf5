"""Which float32 settings make the ``quick`` preset fastest on a CPU without native bf16?

``python experiments/cpu_float32_ab.py [--augs swav,flip] [--json docs/data/cpu-float32-ab.json]``

Times ``Pretrainer.train_step`` of the quick preset (the study's own step) under each variant
(channels_last on/off, torch.compile on/off, and bf16 autocast for reference where it is
native), alternating timed repetitions between variants so drift hits all alike. Prints
images/s and each variant's ratio to the preset's default; writes the JSON with the CPU named.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from swavnb.base.device import device_name
from swavnb.base.precision import native_bf16
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import Pretrainer
from swavnb.speed.bench import cycling_steps

VARIANTS = {
    "default": {},
    "channels first": {"channels_last": False},
    "compiled": {"compile": True},
    "compiled, channels first": {"compile": True, "channels_last": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augs", default="swav,flip")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if native_bf16("cpu"):
        variants["bf16"] = {"amp": "true"}
    report = {
        "device": device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "preset": "quick",
        "steps": args.steps,
        "repeats": args.repeats,
        "cases": [],
    }
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for aug in args.augs.split(","):
            steppers, times = {}, {}
            for name, change in variants.items():
                config = pretrain_config(
                    "quick", aug=aug, device="cpu", **{"amp": "false", **change}
                )
                trainer = Pretrainer(config, Path(tmp) / f"{aug}-{name}", progress=False)
                steppers[name] = (cycling_steps(trainer), config.batch_size)
                for _ in range(2):  # warm-up (compiles)
                    steppers[name][0]()
                times[name] = []
            for _ in range(args.repeats):
                for name, (step, _) in steppers.items():
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    times[name].append(time.perf_counter() - start)
            rates = {
                name: steppers[name][1] * args.steps / statistics.median(t)
                for name, t in times.items()
            }
            for name, rate in rates.items():
                print(f"{aug:<6}{name:<28}{rate:8.1f} img/s  {rate / rates['default']:5.2f}x")
                report["cases"].append(
                    {
                        "aug": aug,
                        "variant": name,
                        "img_per_s": rate,
                        "ratio_to_default": rate / rates["default"],
                        "seconds": times[name],
                    }
                )
    report["seconds"] = time.perf_counter() - tic
    print(f"{report['seconds']:.0f} s on {report['device']}, torch {report['torch']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

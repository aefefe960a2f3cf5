"""The A/B behind compile-ab-cpu.json: which presets should ``torch.compile`` the network by
default?

Each case runs in a process of its own, as a fresh ``pretrain`` would, with an empty inductor
cache: no compiled code or shape history carries over from another case. There an eager and a
compiled ``Pretrainer`` (same config otherwise) warm up (the compiled one compiles; both times
are kept), then timed repetitions alternate eager / compiled, so drift in the machine's speed
hits both. ``speedup`` is the ratio of the two medians; ``paired_speedup`` the median of the
per-repetition ratios.

    python experiments/compile_ab.py --json results/compile-ab-cpu.json
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# before torch is imported: each process (one per case) compiles from an empty cache, as on a fresh
# machine
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="swavnb-inductor-")
atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402

from swavnb.base.device import device_name, pick_device  # noqa: E402
from swavnb.pretraining.config import pretrain_config  # noqa: E402
from swavnb.pretraining.train import Pretrainer  # noqa: E402
from swavnb.speed.bench import cycling_steps  # noqa: E402

# (preset, aug, batch, steps per repetition): the benchmark's four cases (the paper preset at the
# reference report's batch and the CPU bench's smaller one) and the CPU study preset as the study
# runs it
CASES = [
    ("paper", "flip", 256, 2),
    ("paper", "flip", 64, 4),
    ("paper", "swav", 256, 2),
    ("paper", "swav", 64, 4),
    ("quick", "flip", 64, 8),
    ("quick", "swav", 64, 8),
]


def measure(
    preset: str, aug: str, batch: int, steps: int, args: argparse.Namespace, out: Path
) -> dict:
    steppers, warmup_s = {}, {}
    extra = {"train_images": 4096} if preset == "paper" else {}  # a sample is enough to time steps
    for mode in ("eager", "compiled"):
        config = pretrain_config(
            preset,
            aug=aug,
            batch_size=batch,
            device=args.device,
            compile=mode == "compiled",
            **extra,
        )
        steppers[mode] = cycling_steps(
            Pretrainer(config, out / f"{preset}-{aug}-{batch}-{mode}", progress=False)
        )
        tic = time.perf_counter()
        for _ in range(args.warmup):
            steppers[mode]()
        warmup_s[mode] = time.perf_counter() - tic
    img_per_s: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        for mode, step in steppers.items():
            tic = time.perf_counter()
            for _ in range(steps):
                step()
            img_per_s[mode].append(batch * steps / (time.perf_counter() - tic))
    eager, compiled = (statistics.median(img_per_s[mode]) for mode in ("eager", "compiled"))
    paired = statistics.median(
        c / e for e, c in zip(img_per_s["eager"], img_per_s["compiled"], strict=True)
    )
    return {
        "preset": preset,
        "aug": aug,
        "batch": batch,
        "steps_per_repeat": steps,
        "img_per_s": img_per_s,
        "eager_img_per_s": eager,
        "compiled_img_per_s": compiled,
        "speedup": compiled / eager,
        "paired_speedup": paired,
        "warmup_s": warmup_s,
        "compile_s": warmup_s["compiled"] - warmup_s["eager"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--warmup", type=int, default=3, help="steps before timing, the first one compiles"
    )
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--case", type=int, default=-1, help="run only CASES[i] and print its row as JSON"
    )
    args = parser.parse_args()
    if args.case >= 0:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(*CASES[args.case], args, Path(tmp))))
        return
    tic, rows = time.perf_counter(), []
    for index in range(len(CASES)):
        child = [
            sys.executable,
            __file__,
            "--case",
            str(index),
            "--device",
            args.device,
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(args.warmup),
        ]
        row = json.loads(
            subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[
                -1
            ]
        )
        rows.append(row)
        print(
            f"{row['preset']:<6}{row['aug']:<5}{row['batch']:>4}  "
            f"eager {row['eager_img_per_s']:6.1f}  "
            f"compiled {row['compiled_img_per_s']:6.1f} img/s  x{row['speedup']:.3f} (paired "
            f"x{row['paired_speedup']:.3f})  compile {row['compile_s']:.0f} s",
            flush=True,
        )
    command = "python experiments/compile_ab.py" + (f" --json {args.json}" if args.json else "")
    report = {
        "device": device_name(pick_device(args.device)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "command": command,
        "cases": rows,
        "seconds": time.perf_counter() - tic,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

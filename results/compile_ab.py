"""The A/B behind compile-ab-cpu.json: which presets should ``torch.compile`` the network by default?

Per case, an eager and a compiled ``Pretrainer`` (same config otherwise) are built in one
process; each compiles cold (a fresh inductor cache) during its warm-up, whose time is kept;
then timed repetitions alternate eager / compiled, so drift in the machine's speed hits both.

    python results/compile_ab.py --json results/compile-ab-cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

# before torch is imported: every compile below starts from an empty cache, as on a fresh machine
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="swavnb-inductor-")

import torch  # noqa: E402

from swavnb.config import pretrain_config  # noqa: E402
from swavnb.data import epoch_permutation  # noqa: E402
from swavnb.distributed import device_name, pick_device  # noqa: E402
from swavnb.train import Pretrainer  # noqa: E402

# (preset, aug, batch, steps per repetition): the benchmark's four cases (the paper preset at the seed's batch and
# the CPU bench's smaller one) and the CPU study preset as the study runs it
CASES = [("paper", "flip", 256, 2), ("paper", "flip", 64, 4), ("paper", "swav", 256, 2), ("paper", "swav", 64, 4),
         ("quick", "flip", 64, 8), ("quick", "swav", 64, 8)]


def _stepper(trainer: Pretrainer):
    order = epoch_permutation(len(trainer.images), trainer.config.seed, 0, trainer.device)
    batch, counter = trainer.config.batch_size, iter(range(10**9))

    def step() -> None:
        i = next(counter) % trainer.per_epoch
        trainer.train_step(order[i * batch : (i + 1) * batch], i)

    return step


def measure(preset: str, aug: str, batch: int, steps: int, args: argparse.Namespace, out: Path) -> dict:
    steppers, warmup_s = {}, {}
    for mode in ("eager", "compiled"):
        extra = {"train_images": 4096} if preset == "paper" else {}  # a sample is enough to time steps
        config = pretrain_config(preset, aug=aug, batch_size=batch, device=args.device, compile=mode == "compiled",
                                 **extra)
        steppers[mode] = _stepper(Pretrainer(config, out / f"{preset}-{aug}-{batch}-{mode}", progress=False))
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
    return {"preset": preset, "aug": aug, "batch": batch, "steps_per_repeat": steps, "img_per_s": img_per_s,
            "eager_img_per_s": eager, "compiled_img_per_s": compiled, "speedup": compiled / eager,
            "warmup_s": warmup_s, "compile_s": warmup_s["compiled"] - warmup_s["eager"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing, the first one compiles")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    tic, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            rows.append(measure(*case, args, Path(tmp)))
            row = rows[-1]
            print(f"{row['preset']:<6}{row['aug']:<5}{row['batch']:>4}  eager {row['eager_img_per_s']:6.1f}  "
                  f"compiled {row['compiled_img_per_s']:6.1f} img/s  x{row['speedup']:.3f}  "
                  f"compile {row['compile_s']:.0f} s", flush=True)
    report = {"device": device_name(pick_device(args.device)), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "date": datetime.date.today().isoformat(),
              "command": "python results/compile_ab.py " + (f"--json {args.json}" if args.json else ""),
              "cases": rows, "seconds": time.perf_counter() - tic}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""What the online k-NN costs against a `quick` epoch: training steps and the k-NN timed in one
process, one thread (as each of `make study`'s two jobs), in turn, so both see the same machine.

The budget, fixed before the measurement: at most 5 % of an epoch of `flip` (two 16 px views: the
cheapest epoch of the study's three strategies, so the largest share).

    python experiments/online_knn_cost.py --amp false auto --json docs/data/online-knn-cost.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import tempfile
import time

import torch

from swavnb.base.device import device_name
from swavnb.data.cifar import batch_indices
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.online_knn import OnlineKnn
from swavnb.pretraining.train import Pretrainer


def measure(aug: str, amp: str, steps: int, repeats: int, tests: list[int]) -> dict:
    """Seconds per training step and per online k-NN (pool 1,000, each test size), best of
    ``repeats`` rounds, and the k-NN's share of an epoch."""
    config = pretrain_config("quick", aug=aug, amp=amp)
    with tempfile.TemporaryDirectory() as out:
        trainer = Pretrainer(config, out, progress=False)
        batches = batch_indices(len(trainer.images), config.batch_size, config.seed, 0)
        trainer.scheduled_step(0, 0, next(batches))  # the first step pays one-off costs
        knns = {n: OnlineKnn.for_run(pretrain_config("quick", online_knn_test=n)) for n in tests}
        step_s, knn_s = [], {n: [] for n in tests}
        for repeat in range(repeats):
            tic = time.perf_counter()
            for step in range(steps):
                trainer.scheduled_step(0, 1 + repeat * steps + step, next(batches))
            step_s.append((time.perf_counter() - tic) / steps)
            for n, knn in knns.items():
                backbone, device = trainer.model.backbone, trainer.device
                knn_s[n].append(knn.measure(backbone, device, trainer.bf16)["online_knn_seconds"])
        epoch = min(step_s) * trainer.per_epoch
        return {
            "aug": aug,
            "amp": amp,
            "precision": "bf16" if trainer.bf16 else "float32",
            "steps_per_epoch": trainer.per_epoch,
            "step_seconds": [round(s, 4) for s in step_s],
            "epoch_seconds_from_best_step": round(epoch, 1),
            "knn_seconds": {n: [round(s, 3) for s in v] for n, v in knn_s.items()},
            "share_of_epoch_percent": {n: round(100 * min(v) / epoch, 2) for n, v in knn_s.items()},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aug", default="flip")
    parser.add_argument("--amp", nargs="+", default=["false", "auto"])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tests", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    for amp in args.amp:
        rows.append(measure(args.aug, amp, args.steps, args.repeats, args.tests))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        report = {
            "rule": __doc__.split("\n\n")[1].replace("\n", " "),
            "command": f"python experiments/online_knn_cost.py --aug {args.aug} --amp "
            f"{' '.join(args.amp)} --steps {args.steps} --repeats {args.repeats} "
            f"--json {args.json}",
            "commit": commit,
            "device": device_name(torch.device("cpu")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
            "rows": rows,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()

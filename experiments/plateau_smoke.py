"""The smoke-size runs behind the collapse alarm's tests: does a configuration known to sit on
SwAV's log K plateau sit there at smoke size for every seed, and does a healthy smoke run stay
clear?

Rule, fixed before the runs: the plateau configuration raises the loss alarm at epoch 2 for every
seed, the healthy one raises no alarm for any seed, in float32 and in the precision amp=auto picks.

    python experiments/plateau_smoke.py --seeds 10 --json docs/data/plateau-smoke.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import tempfile
import time

import torch

from swavnb.base.device import device_name
from swavnb.pretraining.alarm import PLATEAU_RECIPE
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import pretrain

CASES = {
    "plateau": PLATEAU_RECIPE,
    "healthy": dict(aug="flip", image_size=8, local_size=4),  # the smoke preset at 8 px
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--amp", nargs="+", default=["false", "auto"])
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tic = time.perf_counter()
    commit = subprocess.run(  # the code the runs import: taken before them
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    for case, fields in CASES.items():
        for amp in args.amp:
            for seed in range(args.seeds):
                config = pretrain_config("smoke", seed=seed, amp=amp, **fields)
                with tempfile.TemporaryDirectory() as out:
                    metrics = pretrain(config, out, progress=False)
                log_k = math.log(config.n_prototypes)
                row = {
                    "case": case,
                    "amp": amp,
                    "precision": metrics["precision"],
                    "seed": seed,
                    "loss_over_log_k": [round(e["loss"] / log_k, 4) for e in metrics["epochs"]],
                    "usage_entropy": [round(e["usage_entropy"], 3) for e in metrics["epochs"]],
                    "alarms": [(a["epoch"], a["kind"]) for a in metrics["alarms"]],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    verdict = {
        "plateau_always_alarms": all(
            (2, "loss_plateau") in map(tuple, r["alarms"]) for r in rows if r["case"] == "plateau"
        ),
        "healthy_never_alarms": all(not r["alarms"] for r in rows if r["case"] == "healthy"),
    }
    print(json.dumps(verdict))
    if args.json:
        report = {
            "rule": __doc__.split("\n\n")[1].replace("\n", " "),
            "command": f"python experiments/plateau_smoke.py --seeds {args.seeds} "
            f"--amp {' '.join(args.amp)} --json {args.json}",
            "commit": commit,
            "cases": CASES,
            "device": device_name(torch.device("cpu")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
            "seconds": round(time.perf_counter() - tic),
            "rows": rows,
            "verdict": verdict,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()

"""The k-NN check behind knn-confirmation.json: swav vs random init on an evaluation draw the study
never used.

Rule, fixed before the first run: with recomputed (precise) BN statistics, every swav encoder beats
every random-init encoder at k = 20 and at k = 200. EMA statistics are reported alongside, with no
rule.

    for s in 1 2 3; do
        python -m swavnb.pretrain --preset quick --aug swav --seed $s --out runs/confirm/swav-s$s
    done
    python experiments/knn_confirmation.py runs/quick/swav/checkpoint.pt \
        runs/confirm/swav-s{1,2,3}/checkpoint.pt \
        --pretraining "..." --json results/quick/knn-confirmation.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import torch

from swavnb.base.checkpoint import load_checkpoint
from swavnb.base.device import device_name
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.features import evaluation_data, frozen_features, load_backbone
from swavnb.evaluation.probes import knn_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("swav", nargs="+", help="swav quick checkpoints")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument(
        "--eval-seed", type=int, default=1, help="draws the pool and test subset (the study uses 0)"
    )
    parser.add_argument(
        "--pretraining", default="", help="how the checkpoints were made (kept in the JSON)"
    )
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    tic = time.perf_counter()
    config = finetune_config("quick", seed=args.eval_seed)
    pool, test = evaluation_data(config)
    encoders = [("swav", load_checkpoint(path)["config"]["seed"], path) for path in args.swav]
    encoders += [("random", seed, "none") for seed in args.random_seeds]
    rows = []
    for kind, seed, checkpoint in encoders:
        backbone, _ = load_backbone(checkpoint, seed, config.image_size)
        row = {"encoder": kind, "seed": seed}
        for bn_stats in ("ema", "precise"):
            pool_features, test_features = frozen_features(
                backbone,
                pool,
                test,
                torch.device("cpu"),
                config,
                cache=None,
                tag="",
                bn_stats=bn_stats,
            )
            accuracy = knn_accuracy(pool_features, pool.fine, test_features, test.fine)
            row[bn_stats] = {k: round(v["top1"], 2) for k, v in accuracy.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    swav, random = ([r for r in rows if r["encoder"] == kind] for kind in ("swav", "random"))
    verdict = {
        f"{bn}_k{k}": {
            "worst_swav": min(r[bn][k] for r in swav),
            "best_random": max(r[bn][k] for r in random),
            "every_swav_ahead": min(r[bn][k] for r in swav) > max(r[bn][k] for r in random),
        }
        for bn in ("precise", "ema")
        for k in rows[0]["ema"]
    }
    print(json.dumps(verdict, indent=1))
    if args.json:
        report = {
            "rule": __doc__.split("\n\n")[1].replace("\n", " "),
            "eval_seed": args.eval_seed,
            "pool_images": len(pool),
            "test_images": len(test),
            "image_size": config.image_size,
            "checkpoints": args.swav,
            "pretraining": args.pretraining,
            "device": device_name(torch.device("cpu")),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
            "seconds": round(time.perf_counter() - tic),
            "rows": rows,
            "verdict": verdict,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

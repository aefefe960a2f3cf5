"""Do two single-threaded processes get more out of a 2-core CPU than one two-threaded one?

``python experiments/cpu_jobs_ab.py [--steps 30] [--workloads finetune] [--json FILE]``

Times the quick preset's own steps, a pretraining step (``Pretrainer.train_step``, flip and swav)
and a fine-tuning step (``finetune.train_finetune``, 500 labels), once as one process with every
core's thread and once as ``--jobs 2`` runs them: two processes side by side, each with half the
threads. Prints the summed steps/s of each arrangement and their ratio; writes the JSON with the
CPU named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = ("pretrain flip", "pretrain swav", "finetune")


def _worker(workload: str, steps: int) -> float:
    """Steps per second of ``workload`` in this process, after two warm-up steps."""
    import torch

    from swavnb.data.cifar import batch_indices, label_subset
    from swavnb.evaluation.config import finetune_config
    from swavnb.evaluation.features import evaluation_data
    from swavnb.pretraining.config import pretrain_config
    from swavnb.pretraining.train import Pretrainer

    if workload.startswith("pretrain"):
        config = pretrain_config("quick", aug=workload.split()[1], device="cpu", amp="false")
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Pretrainer(config, tmp, progress=False)
            batches = batch_indices(len(trainer.images), config.batch_size, 0, 0, trainer.device)
            step = lambda i: trainer.scheduled_step(0, i, next(batches))
            for i in range(2):
                step(i)
            tic = time.perf_counter()
            for i in range(2, 2 + steps):
                step(i)
            return steps / (time.perf_counter() - tic)
    from swavnb.evaluation.finetuning import train_finetune
    from swavnb.method.model import cifar_resnet18

    config = finetune_config("quick", device="cpu", amp="false", n_evals=1)
    pool, test = evaluation_data(config)
    labelled = pool.subset(label_subset(pool.fine, 0.1, 0))
    test = test.subset(torch.arange(64))  # the one evaluation at the end costs little
    timings = []
    for n in (2, 2 + steps):  # the difference of two runs leaves set-up and evaluation out
        run = finetune_config("quick", device="cpu", amp="false", n_evals=1, epochs=1, min_steps=n)
        tic = time.perf_counter()
        train_finetune(cifar_resnet18(), False, labelled, test, run, torch.device("cpu"))
        timings.append(time.perf_counter() - tic)
    return steps / (timings[1] - timings[0])


def _measure(workload: str, steps: int, processes: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", workload, "--steps", str(steps)]
    children = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    rates = [float(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--json", default="")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(_worker(args.worker, args.steps))
        return
    import torch

    from swavnb.base.device import device_name

    cores = len(os.sched_getaffinity(0))
    report = {
        "device": device_name(torch.device("cpu")),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "cases": [],
    }
    for workload in args.workloads.split(","):
        one = _measure(workload, args.steps, 1, cores)
        two = _measure(workload, args.steps, 2, cores // 2)
        report["cases"].append(
            {"workload": workload, "one_process_steps_s": one, "two_processes_steps_s": two}
        )
        print(
            f"{workload}: 1 x {cores} threads {one:.3f} steps/s, 2 x {cores // 2} threads "
            f"{two:.3f} steps/s: {two / one:.2f}x",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

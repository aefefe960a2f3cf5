"""How much faster are float32 CPU steps with SmallMapConv2d's weight gradient than torch's?

``python experiments/small_map_conv_ab.py [--json docs/data/small-map-conv-ab.json]``

Times, on one thread, (1) the weight gradient of each distinct ResNet-18 convolution shape of
the ``quick`` preset both ways, and (2) the study's own steps: ``Pretrainer.train_step`` of
``quick`` for ``flip`` and ``swav``, and a fine-tuning step (backbone + head, batch 64 at 16 px),
each with :func:`~swavnb.base.small_map_conv.standard_weight_grad` (torch's backward) and
without (ours), alternating timed repetitions so drift hits both alike. Prints milliseconds and
ratios; writes the JSON with the CPU named.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from swavnb.base.device import device_name
from swavnb.base.small_map_conv import batch_weight_grad, standard_weight_grad
from swavnb.method.model import BACKBONE_DIM, cifar_resnet18
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import Pretrainer
from swavnb.speed.bench import cycling_steps

# (images, C_in, input px, C_out, stride): quick's 3x3 convolutions at 2x2 and 1x1 output maps
# (2 views of 64 at 16 and 8 px) and one at 4x4, near the crossover
SHAPES = [
    (128, 512, 2, 512, 1),
    (128, 256, 4, 512, 2),
    (128, 512, 1, 512, 1),
    (128, 256, 2, 512, 2),
    (128, 256, 2, 256, 1),
    (128, 256, 4, 256, 1),
]


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def weight_grad_cases(repeats: int) -> list[dict]:
    cases = []
    for n, c_in, size, c_out, stride in SHAPES:
        x = torch.randn(n, c_in, size, size).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(c_out, c_in, 3, 3).contiguous(memory_format=torch.channels_last)
        grad = torch.randn_like(F.conv2d(x, weight, stride=stride, padding=1))
        args = (grad, x, weight, None, (stride,) * 2, (1, 1), (1, 1), False, (0, 0), 1)
        mask = (False, True, False)  # the weight gradient only
        torch_ms = _median_ms(
            lambda a=args, m=mask: torch.ops.aten.convolution_backward(*a, m), repeats
        )
        ours_ms = _median_ms(lambda a=args, s=stride: batch_weight_grad(*a[:3], s, 1), repeats)
        out = grad.shape[-1]
        name = f"{n}x{c_in}x{size}x{size} -> {c_out}, stride {stride}, {out}x{out} out"
        ratio = torch_ms / ours_ms
        print(f"weight grad {name:<44}{torch_ms:8.1f} ms {ours_ms:8.1f} ms {ratio:6.2f}x")
        cases.append({"shape": name, "torch_ms": torch_ms, "ours_ms": ours_ms})
    return cases


def _finetune_step():
    net = nn.Sequential(cifar_resnet18(), nn.Linear(BACKBONE_DIM, 100))
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(64, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (64,))

    def step():
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_cases(tmp: Path, steps: int, repeats: int) -> list[dict]:
    makers = {}
    for aug in ("flip", "swav"):
        config = pretrain_config("quick", aug=aug, device="cpu", amp="false")
        trainer = Pretrainer(config, tmp / aug, progress=False)
        makers[f"pretrain {aug}"] = cycling_steps(trainer)
    makers["finetune"] = _finetune_step()
    cases = []
    for name, step in makers.items():
        times = {"torch": [], "ours": []}
        for _ in range(2):  # warm-up
            step()
        for _ in range(repeats):
            for variant, context in (("torch", standard_weight_grad), ("ours", None)):
                with context() if context else contextlib.nullcontext():
                    start = time.perf_counter()
                    for _ in range(steps):
                        step()
                    times[variant].append((time.perf_counter() - start) / steps)
        torch_s, ours_s = (statistics.median(times[v]) for v in ("torch", "ours"))
        print(f"step {name:<52}{torch_s:8.2f} s  {ours_s:8.2f} s  {torch_s / ours_s:6.2f}x")
        cases.append({"step": name, "torch_s": torch_s, "ours_s": ours_s, "seconds": times})
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the study's jobs run one thread each
    report = {"device": device_name(torch.device("cpu")), "torch": torch.__version__, "threads": 1}
    tic = time.perf_counter()
    print(f"{'':<56}{'torch':>10} {'ours':>10} {'ratio':>7}")
    report["weight_grad"] = weight_grad_cases(max(5, args.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        report["steps"] = step_cases(Path(tmp), args.steps, args.repeats)
    report["seconds"] = time.perf_counter() - tic
    print(f"{report['seconds']:.0f} s on {report['device']}, torch {report['torch']}, one thread")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

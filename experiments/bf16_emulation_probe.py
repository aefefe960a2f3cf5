"""How much slower is bf16 autocast than float32 on this CPU? The numbers behind ``amp=auto``.

``python experiments/bf16_emulation_probe.py [JSON]``: best-of-3 timings of a 1024^2 matmul and of a
ResNet-18 (CIFAR stem, channels_last) forward on 32 images at 32 px, in float32 and in bf16.
"""

import json
import sys
import time

import torch

from swavnb.base.precision import cpu_capability
from swavnb.method.model import cifar_resnet18

torch.manual_seed(0)


def t(f, n=3):
    f()
    best = 1e9
    for _ in range(n):
        tic = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - tic)
    return best


out = {"capability": cpu_capability(), "torch": torch.__version__}
a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
out["matmul_1024_gflops"] = {
    "float32": 2 * 1024**3 / t(lambda: a @ b) / 1e9,
    "bf16": 2 * 1024**3 / t(lambda: a.bfloat16() @ b.bfloat16(), 1) / 1e9,
}
model = cifar_resnet18().eval().to(memory_format=torch.channels_last)
x = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    f32 = t(lambda: model(x))

    def bf():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)

    b16 = t(bf, 1)
out["resnet18_forward_32px_img_per_s"] = {"float32": 32 / f32, "bf16": 32 / b16}
out["slowdown"] = {
    "matmul": out["matmul_1024_gflops"]["float32"] / out["matmul_1024_gflops"]["bf16"],
    "resnet18_forward": b16 / f32,
}
print(json.dumps(out, indent=1))
if len(sys.argv) > 1:
    open(sys.argv[1], "w").write(json.dumps(out, indent=1))

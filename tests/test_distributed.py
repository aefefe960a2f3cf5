"""Two CPU ranks under torchrun (gloo): global Sinkhorn and synchronised weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:  # torchrun's rendezvous hangs with port 0: hand it a free one
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_share_sinkhorn_and_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            str(ROOT / "tests" / "distributed_worker.py"),
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["sinkhorn_max_abs_diff"] < 1e-5  # each rank's rows = rows of the global batch
    # 64 requested images become 100 (at least one per class): 6 steps of 16
    assert report["steps"] == 6 and report["weight_change"] > 0  # training really moved the weights
    assert report["weight_max_abs_diff"] == 0.0  # DDP keeps the ranks identical
    assert (tmp_path / "run" / "checkpoint.pt").exists()  # written by rank 0

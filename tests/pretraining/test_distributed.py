"""Two CPU ranks under torchrun (gloo): sharding of the global batch, global Sinkhorn, synchronised
weights, and a SIGKILLed 2-rank run that resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from distributed_worker import SHARDED, per_sample_network, record_scores
from sigkill_pretrain import KILL_STEP, KILLED_RUN, pretrain_args

from swavnb.base.checkpoint import load_checkpoint
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import Pretrainer

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "pretraining"


def _free_port() -> int:
    with socket.socket() as probe:  # torchrun's rendezvous hangs with port 0: hand it a free one
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _matched(rows: torch.Tensor, reference: torch.Tensor, atol: float) -> bool:
    """Whether ``rows`` are ``reference``'s rows in some order, each within ``atol``."""
    if rows.shape != reference.shape:
        return False
    distance = torch.cdist(rows.double(), reference.double())  # (N, N)
    nearest = distance.argmin(dim=1)
    return bool(distance.min(dim=1).values.max() < atol) and len(set(nearest.tolist())) == len(rows)


def test_two_ranks_train_like_one_process_and_resume_after_sigkill(tmp_path):
    broken = tmp_path / "broken"
    killed = _torchrun(str(TESTS / "sigkill_pretrain.py"), str(KILL_STEP), *pretrain_args(broken))
    assert killed.returncode != 0, "the 2-rank run was not killed"
    interrupted = load_checkpoint(broken / "checkpoint.pt")
    per_epoch = 6  # 64 requested images become 100 (at least one per class): 6 steps of 16
    # mid-epoch, with the queue in use and the prototypes still frozen: every resumed piece runs
    assert (interrupted["epoch"], interrupted["step"]) == (1, 3) and not interrupted["finished"]
    assert interrupted["tally"]["steps"] == 3 and interrupted["queue_pushes"] == per_epoch + 3
    resume_step = interrupted["epoch"] * per_epoch + interrupted["step"]
    assert resume_step < int(KILLED_RUN["freeze_prototypes_epochs"] * per_epoch)  # thaws later

    result = _torchrun(str(TESTS / "distributed_worker.py"), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world_size"] == 2 and report["resumed_from"] == [1, 3]

    # the resumed 2-rank run ends bit-identical to the uninterrupted one, its epoch metrics equal
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    resumed = load_checkpoint(broken / "checkpoint.pt")
    assert straight["finished"] and resumed["finished"]
    for name, weights in straight["model"].items():
        assert torch.equal(resumed["model"][name], weights), name
    assert torch.equal(resumed["queue"], straight["queue"])
    for ours, theirs in zip(
        resumed["metrics"]["epochs"], straight["metrics"]["epochs"], strict=True
    ):
        assert abs(ours["loss"] - theirs["loss"]) < 1e-9 * abs(theirs["loss"])
        assert ours["prototypes_used"] == theirs["prototypes_used"]

    # Sinkhorn: each rank's codes are its rows of the global batch's codes
    assert report["sinkhorn_max_abs_diff"] < 1e-5
    # every rank trains on its share of the global batch, and DDP keeps the ranks identical
    assert report["rank_batch"] == SHARDED["batch_size"] // 2
    assert report["weight_change"] > 0 and report["weight_max_abs_diff"] == 0.0

    # the same global batches in one process: the same scores, queue and weights, to float noise
    one = Pretrainer(pretrain_config("smoke", aug="flip", **SHARDED), tmp_path / "one", False)
    per_sample_network(one)
    scores = record_scores(one)
    metrics = one.fit()
    shards = torch.load(tmp_path / "shards.pt", weights_only=True)
    assert len(shards["scores"]) == len(scores) == per_epoch
    for step, (two_ranks, single) in enumerate(zip(shards["scores"], scores, strict=True)):
        assert _matched(two_ranks, single, atol=1e-4), f"step {step}"
    for view, queued in enumerate(one.queue.embeddings):
        assert _matched(shards["queue"][view], queued, atol=1e-4), f"queue, view {view}"
    two_ranks = load_checkpoint(tmp_path / "shards" / "checkpoint.pt")
    for name, weights in one.model.state_dict().items():
        torch.testing.assert_close(two_ranks["model"][name], weights, rtol=1e-4, atol=1e-5)
    # on CPU (gloo) BatchNorm stays per rank, and the run says so
    assert two_ranks["metrics"]["batchnorm"] == "each rank's shard"
    assert metrics["batchnorm"] == "batch"
    loss = two_ranks["metrics"]["epochs"][0]["loss"]
    assert abs(loss - metrics["epochs"][0]["loss"]) < 1e-5 * loss

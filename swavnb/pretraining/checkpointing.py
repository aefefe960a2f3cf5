"""A pretraining's checkpoint: what a save writes (the weights, the optimiser until the run is
finished, the queue, the epoch and step, the metrics, the epoch's tally so far, the number of
processes) and how a run resumes from it, to the same weights as an uninterrupted run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swavnb.base.checkpoint import save_checkpoint
from swavnb.base.config import as_dict
from swavnb.pretraining.monitoring import check_finite_weights
from swavnb.pretraining.tally import Tally, resumed_tally, saved_tally

if TYPE_CHECKING:
    from swavnb.pretraining.train import Pretrainer


def save(trainer: Pretrainer, tally: Tally | None = None) -> None:
    """Write the run's checkpoint atomically (mid-epoch with the epoch's ``tally`` so far); every
    rank takes part (the queue and tally are per rank), rank 0 writes."""
    check_finite_weights(trainer.model, trainer.epoch, trainer.start_step, trainer.checkpoint)
    runtime = trainer.runtime
    queue = None if trainer.queue is None else trainer.queue.gathered(runtime)
    tally = None if tally is None else saved_tally(tally, runtime)
    if not runtime.is_main:
        return
    state: dict[str, Any] = {
        "run_id": trainer.run_id,
        "config": as_dict(trainer.config),
        "model_hparams": trainer.model.hparams,
        "model": trainer.model.state_dict(),
        # a finished run resumes nothing (more epochs are another run): no optimiser state
        "optimizer": None if trainer.finished else trainer.optimizer.state_dict(),
        "queue": queue,
        "queue_pushes": 0 if trainer.queue is None else trainer.queue.pushes,
        "epoch": trainer.epoch,
        "step": trainer.start_step,
        "metrics": trainer.metrics,
        "finished": trainer.finished,
        "tally": tally,
        "world_size": runtime.world_size,
    }
    save_checkpoint(state, trainer.checkpoint)


def restore(trainer: Pretrainer, state: dict[str, Any]) -> None:
    """Put ``trainer`` where the checkpoint ``state`` left its run.

    Raises:
        ValueError: the checkpoint cannot resume here: an imported model that is unfinished, or a
            run of another number of processes (each rank's shard, views and queue depend on it).
    """
    path = trainer.checkpoint
    trainer.model.load_state_dict(state["model"])
    if state["optimizer"] is None:  # an imported model (swavnb.study.transfer): nothing to resume
        if not state["finished"]:
            raise ValueError(
                f"'{path}' holds no optimiser state and is unfinished: it cannot resume"
            )
        trainer.metrics, trainer.epoch = state["metrics"], state["epoch"]
        return
    saved, world = state["world_size"], trainer.runtime.world_size
    if saved != world:
        raise ValueError(
            f"'{path}' was written by {saved} process(es), and this run has {world}: resume it "
            f"with as many (torchrun --nproc_per_node {saved}, or one process for 1), or choose "
            "another folder to start over"
        )
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.queue is not None:
        trainer.queue.load(state["queue"], state["queue_pushes"], trainer.runtime, str(path))
    trainer.metrics = state["metrics"]
    trainer.epoch, trainer.start_step = state["epoch"], state["step"]
    if state["step"] and state["tally"] is not None:  # stopped mid-epoch: its tally goes on
        trainer.tally = resumed_tally(state["tally"], trainer.runtime)

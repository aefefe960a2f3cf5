"""What watches a pretraining: a NaN or inf loss or weight stops it before a save, and after every
epoch the online k-NN (:mod:`swavnb.pretraining.online_knn`) and the collapse alarm
(:mod:`swavnb.pretraining.alarm`) go into the epoch's record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from swavnb.base.errors import NonFiniteLossError, setting
from swavnb.base.layout import shown
from swavnb.pretraining.alarm import alarm_line, collapse_alarms
from swavnb.pretraining.config import PretrainConfig
from swavnb.pretraining.online_knn import OnlineKnn


def last_save(checkpoint: Path) -> str:
    """What a stopped run leaves to resume from, as its error says it: a checkpoint only where
    one was saved."""
    if checkpoint.is_file():
        return f"The last checkpoint '{shown(checkpoint)}' is intact: rerunning resumes from it."
    return "No checkpoint was saved yet: a rerun starts from the beginning."


def check_finite_losses(
    pending: list[tuple[int, torch.Tensor]], epoch: int, lr: float, checkpoint: Path
) -> None:
    """Raise on the first NaN/inf of the ``(step, loss)`` not checked yet, before anything is
    saved; they are kept on the device so that a GPU does not wait for the host every step."""
    if not pending:
        return
    losses = torch.stack([loss for _, loss in pending])
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        step, value = pending[int(bad[0])][0], losses[int(bad[0])].item()
        raise NonFiniteLossError(
            f"loss is {value} at epoch {epoch} step {step} (lr {lr:.3g}); lower "
            f"{setting('lr')}, {_advice()}. {last_save(checkpoint)}"
        )
    pending.clear()


def check_finite_weights(model: torch.nn.Module, epoch: int, step: int, checkpoint: Path) -> None:
    """Raise before a save on a NaN/inf weight: an overflowing gradient breaks the weights
    under a finite loss, and the checkpoint the save would replace is the last good one."""
    weights = {n: t for n, t in model.state_dict().items() if t.is_floating_point()}
    # one flag per tensor, reduced on the device: one host sync per save, not one per tensor
    finite = torch.stack([torch.isfinite(t).all() for t in weights.values()])
    if not bool(finite.all()):
        name = list(weights)[int((~finite).nonzero()[0])]
        raise NonFiniteLossError(
            f"weight '{name}' is NaN or inf after {epoch} epochs and {step} steps though the loss "
            f"was finite (an overflowing gradient); lower {setting('lr')}, {_advice()}. "
            f"{last_save(checkpoint)}"
        )


def _advice() -> str:
    return f"add warm-up (--warmup_epochs), or try {setting('amp')} false"


class EpochMonitor:
    """The online k-NN and the collapse alarm of one run, after each of its epochs."""

    def __init__(self, config: PretrainConfig, online_knn: bool) -> None:
        """``online_knn``: measure it (the rank that saves, in a run with epochs to go)."""
        self.config = config
        self.online_knn = OnlineKnn.for_run(config) if online_knn else None

    def after_epoch(
        self,
        metrics: dict[str, Any],
        backbone: torch.nn.Module,
        device: torch.device,
        bf16: bool,
    ) -> str | None:
        """Add the online k-NN to the last epoch's record and any new alarm to ``metrics``;
        returns the alarm's line, if one was raised."""
        record = metrics["epochs"][-1]
        if self.online_knn is not None:
            with torch.no_grad():
                record.update(
                    self.online_knn.measure(backbone, device, bf16, self.config.channels_last)
                )
        raised = [alarm["kind"] for alarm in metrics["alarms"]]
        alarms = collapse_alarms(record, self.config.n_prototypes, raised)
        if not alarms:
            return None
        line = alarm_line(alarms, self.config)
        metrics["alarms"].extend({**alarm, "message": line} for alarm in alarms)
        return line

"""The collapse alarm: one line during a pretraining that is not learning, with what usually fixes
it, and the record ``metrics.json`` keeps of it.

SwAV's commonest failure (facebookresearch/swav "Common issues", #12, #62, #69; lightly #736) is a
loss that stays at log K: Sinkhorn's codes are near uniform, so the swapped prediction has nothing
to predict. The other is a collapse of the assignments onto a few prototypes. Both are judged on a
finished epoch's figures from the second epoch on: the first epoch starts at the plateau and from a
random init whose images all sit near one prototype.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from swavnb.base.errors import setting
from swavnb.pretraining.config import PretrainConfig

LOSS_PLATEAU, USAGE_COLLAPSE = "loss_plateau", "usage_collapse"
# against near-uniform codes the cross-entropy cannot fall below log K, so a stuck run sits at log K
# or above it; 0.5 % below is a margin for codes that are almost uniform (docs/monitoring.md)
PLATEAU_SHARE = 0.995
# normalised usage entropy below 0.5 is as concentrated as sqrt(K) prototypes used evenly (17 of
# 300): a few prototypes take the images
COLLAPSED_ENTROPY = 0.5
# a configuration known to sit on the plateau (docs/presets.md: Adam 1e-3, MLP head, 300
# prototypes, epsilon 0.05, swav views) at smoke size, run by the alarm's test and
# experiments/plateau_smoke.py (what it measured: docs/monitoring.md)
PLATEAU_RECIPE: dict[str, Any] = dict(
    aug="swav",
    head="mlp",
    feat_dim=128,
    hidden_dim=2048,
    n_prototypes=300,
    epsilon=0.05,
    optimizer="adam",
    lr=1e-3,
    train_images=100,
    epochs=2,
    online_knn_pool=0,
)


def collapse_alarms(
    epoch: Mapping[str, Any], n_prototypes: int, raised: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The alarms a finished epoch raises, each kind once per run.

    Args:
        epoch: the epoch's record in ``metrics.json`` (``epoch``, ``loss``, ``usage_entropy``).
        n_prototypes: K.
        raised: the kinds raised before (a resumed run's ``metrics["alarms"]``), not raised again.

    Returns:
        [{"epoch", "kind", "value", "threshold"}], empty for a healthy epoch and for the first.
    """
    if epoch["epoch"] < 2:
        return []
    plateau, entropy = PLATEAU_SHARE * math.log(n_prototypes), epoch["usage_entropy"]
    checks = [
        (LOSS_PLATEAU, epoch["loss"], plateau, epoch["loss"] >= plateau),
        (USAGE_COLLAPSE, entropy, COLLAPSED_ENTROPY, entropy < COLLAPSED_ENTROPY),
    ]
    seen = set(raised)
    return [
        {"epoch": epoch["epoch"], "kind": kind, "value": value, "threshold": threshold}
        for kind, value, threshold, fired in checks
        if fired and kind not in seen
    ]


def _symptom(alarm: Mapping[str, Any], n_prototypes: int) -> str:
    if alarm["kind"] == LOSS_PLATEAU:
        return (
            f"the loss {alarm['value']:.3f} has not left log K = {math.log(n_prototypes):.3f} "
            f"({n_prototypes} prototypes; within {100 * (1 - PLATEAU_SHARE):.1f} % or above): "
            "SwAV's plateau, where nothing is learned"
        )
    used = n_prototypes ** alarm["value"]  # the number of evenly used prototypes of that entropy
    return (
        f"prototype usage has collapsed (entropy {alarm['value']:.2f}, as if {used:.0f} of "
        f"{n_prototypes} prototypes took all images)"
    )


def alarm_line(alarms: list[Mapping[str, Any]], config: PretrainConfig) -> str:
    """One line for the alarms of one epoch: what is wrong and what usually fixes it."""
    symptoms = " and ".join(_symptom(alarm, config.n_prototypes) for alarm in alarms)
    fixes = [
        f"a sharper Sinkhorn ({setting('epsilon')} below {config.epsilon:g})",
        f"fewer prototypes ({setting('n_prototypes')}, now {config.n_prototypes})",
        f"prototypes frozen early ({setting('freeze_prototypes_epochs')}, now "
        f"{config.freeze_prototypes_epochs:g})",
    ]
    if config.queue_length:
        fixes.append(f"the queue joining later ({setting('queue_start_epoch')})")
    fixes.append(f"a lower {setting('lr')} or a warm-up ({setting('warmup_epochs')})")
    return (
        f"collapse alarm after epoch {alarms[0]['epoch']}: {symptoms}; usually fixed by "
        f"{', '.join(fixes)} (docs/monitoring.md)"
    )

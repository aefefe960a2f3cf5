"""What a pretraining shows while it runs: the online k-NN after every epoch, the collapse
alarm."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from swavnb.base.checkpoint import load_checkpoint
from swavnb.base.layout import run_folder
from swavnb.data.cifar import label_subset, load_cifar100
from swavnb.evaluation.probes import knn_accuracy
from swavnb.method.knn import extract_features
from swavnb.method.model import SwAVModel
from swavnb.pretraining.alarm import (
    COLLAPSED_ENTROPY,
    LOSS_PLATEAU,
    PLATEAU_RECIPE,
    PLATEAU_SHARE,
    USAGE_COLLAPSE,
    alarm_line,
    collapse_alarms,
)
from swavnb.pretraining.config import preset_changes, pretrain_config
from swavnb.pretraining.folder import pretraining_identity
from swavnb.pretraining.online_knn import BN_STATISTICS, OnlineKnn
from swavnb.pretraining.train import Pretrainer, pretrain

# 8 px, a queue from the first step and prototypes frozen for half the run: every piece of state
# that the online k-NN could disturb is in use
WATCHED = dict(
    train_images=64,
    batch_size=16,
    epochs=2,
    n_prototypes=20,
    feat_dim=8,
    image_size=8,
    local_size=4,
    queue_length=32,
    freeze_prototypes_epochs=1,
)
# the smoke preset at 8 px: its loss is 0.57-0.69 of log K at the second epoch over 10 seeds
HEALTHY = dict(aug="flip", image_size=8, local_size=4)


def _tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a (nested) checkpoint entry, by its path."""
    if torch.is_tensor(state):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state or [])
    found = {}
    for key, value in items:
        if torch.is_tensor(value) or isinstance(value, (dict, list, tuple)):
            found.update(_tensors(value, f"{prefix}/{key}"))
    return found


def test_the_online_knn_changes_nothing_in_the_training(tmp_path):
    config = pretrain_config("smoke", aug="jitter", **WATCHED)
    watched = pretrain(config, tmp_path / "on", progress=False)
    blind = pretrain(replace(config, online_knn_pool=0), tmp_path / "off", progress=False)
    on, off = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("on", "off"))
    # a finished checkpoint keeps no optimiser state (nothing resumes it): the weights and queue
    for part in ("model", "queue"):
        ours, theirs = _tensors(on[part]), _tensors(off[part])
        assert ours.keys() == theirs.keys() and ours, part
        for name, tensor in ours.items():
            assert torch.equal(tensor, theirs[name]), f"{part}{name}"
    monitored = {"seconds", "img_per_s", "online_knn_top1", "online_knn_seconds"}
    untimed = lambda epochs: [{k: v for k, v in e.items() if k not in monitored} for e in epochs]
    assert untimed(watched["epochs"]) == untimed(blind["epochs"])

    # every epoch has its figure, in metrics.json too, with what it measured
    written = json.loads((tmp_path / "on" / "metrics.json").read_text())
    assert [e["epoch"] for e in written["epochs"]] == [1, 2]
    for epoch in written["epochs"]:
        assert 0.0 <= epoch["online_knn_top1"] <= 100.0 and epoch["online_knn_seconds"] > 0
    assert written["online_knn"] == {
        "pool_images": 100,
        "test_images": 100,
        "k": 20,
        "temperature": 0.07,
        "features": "backbone, pooled",
        "bn_statistics": BN_STATISTICS,
    }
    assert "not the probes' precise BN" in BN_STATISTICS
    assert "online_knn" not in blind and all("online_knn_top1" not in e for e in blind["epochs"])


def test_the_online_knn_settings_name_no_folder_and_a_run_resumes_with_them_changed(
    tmp_path, monkeypatch
):
    default = pretrain_config("quick", aug="flip")
    for changed in (dict(online_knn_pool=0), dict(online_knn_pool=2000, online_knn_test=1000)):
        config = pretrain_config("quick", aug="flip", **changed)
        assert preset_changes(config) == {}
        assert pretraining_identity(config) == pretraining_identity(default)
        assert run_folder("quick", "flip", 0, changes=preset_changes(config)) == run_folder(
            "quick", "flip", 0
        )
    run_epoch = Pretrainer._run_epoch

    def stop_after_one(trainer: Pretrainer, bar: Any) -> None:
        if trainer.epoch == 1:
            raise KeyboardInterrupt
        run_epoch(trainer, bar)

    monkeypatch.setattr(Pretrainer, "_run_epoch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        pretrain(pretrain_config("smoke", aug="flip", **WATCHED), tmp_path, progress=False)
    monkeypatch.setattr(Pretrainer, "_run_epoch", run_epoch)
    # a checkpoint written before the setting existed reads as the default (on): it resumes too
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for name in ("online_knn_pool", "online_knn_test"):
        del state["config"][name]
    torch.save(state, tmp_path / "checkpoint.pt")
    more = pretrain_config("smoke", aug="flip", **{**WATCHED, "online_knn_pool": 0})
    metrics = pretrain(more, tmp_path, progress=False)
    assert [("online_knn_top1" in e) for e in metrics["epochs"]] == [True, False]


def test_the_pool_is_stratified_fixed_by_the_seed_and_leaves_the_global_rng_alone():
    config = pretrain_config("quick", aug="flip", seed=3)
    rng = torch.get_rng_state()
    first, again = OnlineKnn.for_run(config), OnlineKnn.for_run(config)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first.pool.images, again.pool.images)
    assert torch.equal(first.test.fine, again.test.fine)
    assert first.pool.fine.bincount().tolist() == [10] * 100  # 1,000 images
    assert first.test.fine.bincount().tolist() == [5] * 100  # 500 images
    assert first.pool.images.shape[-1] == 16  # at the run's resolution
    other = OnlineKnn.for_run(pretrain_config("quick", aug="flip", seed=4))
    assert not torch.equal(first.pool.images, other.pool.images)
    # the same seed's probes draw their 2,000 test images from the same per-class order: ours lie
    # inside theirs
    test = load_cifar100("test")
    ours = label_subset(test.fine, 500 / len(test), 3)
    probes = label_subset(test.fine, 2000 / len(test), 3)
    assert set(ours.tolist()) <= set(probes.tolist())
    assert OnlineKnn.for_run(pretrain_config("quick", online_knn_pool=0)) is None


def test_the_online_knn_is_the_probes_knn_on_running_statistics():
    torch.manual_seed(0)
    model = SwAVModel(feat_dim=8, n_prototypes=10)
    backbone = model.backbone
    with torch.no_grad():  # BN running statistics other than the defaults
        backbone.train()
        backbone(torch.randn(32, 3, 8, 8))
    # quick's sizes: a random-init backbone is above chance there (docs/presets.md), so the
    # comparison is of real predictions
    knn = OnlineKnn.for_run(pretrain_config("quick", image_size=8, seed=1))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.train()
    measured = knn.measure(backbone, torch.device("cpu"), bf16=False)
    assert backbone.training  # its mode is restored ...
    for name, tensor in backbone.state_dict().items():  # ... and its BN statistics untouched
        assert torch.equal(tensor, before[name]), name
    pool = extract_features(backbone, knn.pool.images, amp=False)
    test = extract_features(backbone, knn.test.images, amp=False)
    expected = knn_accuracy(pool, knn.pool.fine, test, knn.test.fine, ks=(20,))
    assert measured["online_knn_top1"] == pytest.approx(expected[20]["top1"], abs=1e-4)
    assert measured["online_knn_top1"] > 2.0  # CIFAR-100's chance is 1 %


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(online_knn_pool=-1), r"online_knn_pool must be in \[0, 50,000\]"),
        (dict(online_knn_test=20_000), r"online_knn_test must be in \[0, 10,000\]"),
        (dict(online_knn_test=0), "online_knn_test is 0 while online_knn_pool is not"),
    ],
)
def test_bad_online_knn_sizes_name_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        pretrain_config("smoke", **bad)


def _epoch(epoch: int, loss: float, entropy: float = 0.9) -> dict[str, Any]:
    return {"epoch": epoch, "loss": loss, "usage_entropy": entropy}


def test_the_alarm_judges_each_epoch_after_the_first_and_raises_each_kind_once():
    log_k = math.log(300)
    assert collapse_alarms(_epoch(1, log_k, 0.1), 300) == []  # the first epoch starts there
    assert collapse_alarms(_epoch(2, 0.98 * log_k), 300) == []  # quick's swav at its 2nd epoch
    assert collapse_alarms(_epoch(2, log_k - 1e-3), 300)  # docs/presets.md's stuck run: 5.704
    plateau = collapse_alarms(_epoch(2, log_k + 0.1), 300)  # above log K is no better
    assert [(a["kind"], a["epoch"]) for a in plateau] == [(LOSS_PLATEAU, 2)]
    assert plateau[0]["threshold"] == pytest.approx(PLATEAU_SHARE * log_k)
    both = collapse_alarms(_epoch(3, log_k, COLLAPSED_ENTROPY - 0.01), 300)
    assert [a["kind"] for a in both] == [LOSS_PLATEAU, USAGE_COLLAPSE]
    assert [a["kind"] for a in collapse_alarms(_epoch(4, log_k, 0.1), 300, [LOSS_PLATEAU])] == [
        USAGE_COLLAPSE
    ]
    assert collapse_alarms(_epoch(3, 2.0, COLLAPSED_ENTROPY), 300) == []


def test_the_alarm_line_says_what_is_wrong_and_what_usually_fixes_it():
    config = pretrain_config("quick", epsilon=0.05)
    alarms = collapse_alarms(_epoch(2, 5.8, 0.3), 300)
    line = alarm_line(alarms, config)
    assert "\n" not in line and line.startswith("collapse alarm after epoch 2:")
    assert "log K = 5.704" in line and "as if 6 of 300 prototypes" in line
    for fix in ("--epsilon below 0.05", "--n_prototypes", "--freeze_prototypes_epochs", "--lr"):
        assert fix in line, fix
    assert "--queue_start_epoch" not in line  # quick has no queue
    assert "--queue_start_epoch" in alarm_line(alarms, pretrain_config("swav"))


def _alarm_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("collapse alarm")]


def test_a_configuration_known_to_sit_on_the_plateau_raises_the_alarm(tmp_path, capfd):
    metrics = pretrain(pretrain_config("smoke", **PLATEAU_RECIPE), tmp_path, progress=False)
    kinds = [(a["kind"], a["epoch"]) for a in metrics["alarms"]]
    assert (LOSS_PLATEAU, 2) in kinds, metrics["epochs"]
    assert json.loads((tmp_path / "metrics.json").read_text())["alarms"] == metrics["alarms"]
    lines = _alarm_lines(capfd.readouterr().err)
    assert len(lines) == 1 and "--epsilon below 0.05" in lines[0]


def test_a_healthy_smoke_run_raises_no_alarm(tmp_path, capfd):
    config = pretrain_config("smoke", **HEALTHY)
    metrics = pretrain(config, tmp_path, progress=False)
    assert metrics["alarms"] == [], metrics["epochs"]
    assert _alarm_lines(capfd.readouterr().err) == []
    assert all("online_knn_top1" in e for e in metrics["epochs"])

"""Presets and field overrides."""

from __future__ import annotations

import pytest

from swavnb.base.cli import parse_overrides
from swavnb.evaluation.config import FinetuneConfig, finetune_config
from swavnb.pretraining.config import (
    PRESETS,
    PretrainConfig,
    preset_changes,
    pretrain_config,
    validate_pretrain,
)


def test_paper_preset_is_the_seed_setup():
    config = pretrain_config("paper")
    assert (config.epochs, config.batch_size, config.feat_dim, config.n_prototypes, config.lr) == (
        100,
        256,
        128,
        3000,
        1e-3,
    )
    assert (
        config.optimizer,
        config.head,
        config.temperature,
        config.epsilon,
        config.sinkhorn_iters,
    ) == (
        "adam",
        "linear",
        0.1,
        0.05,
        3,
    )


def test_swav_preset_uses_the_swav_recipe():
    config = pretrain_config("swav")
    assert config.aug == "swav" and config.head == "mlp" and config.schedule == "cosine"
    assert (
        config.queue_length > 0
        and config.freeze_prototypes_epochs >= 1
        and config.warmup_epochs > 0
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_a_runnable_study(preset):
    pretrain, evaluation = pretrain_config(preset), finetune_config(preset)
    assert pretrain.preset == evaluation.preset == preset
    # evaluation runs at the pretraining resolution (load_backbone refuses any other)
    assert evaluation.image_size == pretrain.image_size
    assert pretrain.batch_size <= (pretrain.train_images or 50_000)  # at least one step an epoch
    # warm-up, frozen prototypes and the queue's start all come before the run ends
    assert max(pretrain.warmup_epochs, pretrain.freeze_prototypes_epochs) < pretrain.epochs
    if pretrain.queue_length:  # a queue holds at least one batch (Pretrainer refuses less)
        assert pretrain.queue_length >= pretrain.batch_size
        assert pretrain.queue_start_epoch < pretrain.epochs
    # k-NN's neighbours and t-SNE's sample fit in the labelled pool and the test images
    assert max(evaluation.knn_k) <= (evaluation.train_images or 50_000)
    assert evaluation.tsne_images <= (evaluation.test_images or 10_000)


def test_preset_changes_are_the_fields_that_train_otherwise_than_the_study():
    # another aug's or seed's own recipe is the study's run of that encoder: no change
    assert preset_changes(pretrain_config("quick", aug="swav", seed=3)) == {}
    assert preset_changes(pretrain_config("quick", aug="flip")) == {}
    # device, precision or compiling change how a run computes, not what it trains
    same = pretrain_config("quick", aug="flip", device="cpu", amp="false", compile="false")
    assert preset_changes(same) == {}
    other = pretrain_config("quick", aug="flip", epochs=2, lr=0.01, amp="false")
    assert preset_changes(other) == {"epochs": 2, "lr": 0.01}


def test_string_overrides_are_typed():
    config = pretrain_config(
        "smoke", **parse_overrides(["--epochs", "7", "--amp=false", "--lr", "0.5"], PretrainConfig)
    )
    assert config.epochs == 7 and config.amp == "false" and config.lr == 0.5
    assert finetune_config("smoke", knn_k="10,30").knn_k == (10, 30)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(aug="crop"), "unknown aug 'crop'; choose one of flip, jitter, swav"),
        (dict(head="deep"), "unknown head"),
        (dict(optimizer="lamb"), "unknown optimizer"),
        (dict(epochs="many"), "cannot read 'many' as int"),
        (dict(amp="maybe"), "unknown amp 'maybe'; choose one of auto, true, false"),
        (dict(compile="maybe"), "unknown compile 'maybe'; choose one of auto, true, false"),
        (dict(channels_last="maybe"), "cannot read 'maybe' as bool"),
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(log_every_steps=0), "log_every_steps must be >= 1"),
        (dict(image_size=24), "image_size must be 32, 16 or 8"),
        (dict(image_size=16, local_size=24), r"local_size must be in \[1, image_size=16\]"),
        (dict(colour=1), "unknown PretrainConfig field"),
    ],
)
def test_bad_values_name_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        pretrain_config("smoke", **bad)


def test_compile_is_auto_where_it_pays_and_a_bool_reads_as_true_or_false():
    # docs/performance.md: compiling pays at batch 256 (paper, swav), not in the short CPU presets
    assert {p: pretrain_config(p).compile for p in PRESETS} == {
        "paper": "auto",
        "swav": "auto",
        "quick": "false",
        "smoke": "false",
    }
    # a notebook's bool or an older checkpoint's reads as true / false, as amp does
    assert PretrainConfig(compile=True).compile == "true"
    assert pretrain_config("paper", compile=False).compile == "false"
    assert pretrain_config("smoke", compile="Auto").compile == "auto"


def test_unknown_bn_stats_names_the_choices():
    assert finetune_config("smoke").bn_stats == "precise"
    with pytest.raises(ValueError, match="unknown bn_stats 'batch'; choose one of precise, ema"):
        finetune_config("smoke", bn_stats="batch")


def test_unknown_preset_and_option():
    with pytest.raises(
        ValueError, match="unknown preset 'huge'; choose one of paper, swav, quick, smoke"
    ):
        pretrain_config("huge")
    with pytest.raises(ValueError, match="unknown option --colour"):
        parse_overrides(["--colour", "red"], FinetuneConfig)
    with pytest.raises(ValueError, match="--epochs needs a value"):
        parse_overrides(["--epochs"], PretrainConfig)


@pytest.mark.parametrize(
    "fields, world, message",
    [
        (dict(batch_size=16), 3, "batch_size 16 does not split evenly over 3 processes"),
        (dict(batch_size=16, queue_length=30), 4, "queue_length 30 does not split evenly over 4"),
    ],
)
def test_a_batch_or_queue_that_ranks_cannot_share_evenly_is_refused(fields, world, message):
    with pytest.raises(ValueError, match=message):
        validate_pretrain(pretrain_config("smoke", **fields), world)


def test_a_batch_and_queue_that_split_evenly_are_accepted():
    config = pretrain_config("smoke", batch_size=16, queue_length=32)
    for world in (1, 2, 4, 8):
        validate_pretrain(config, world)


@pytest.mark.parametrize(
    "bad, message",
    [
        # an inf or NaN rate trains on a NaN loss and would save a chance-level row as valid
        (dict(lr_head="inf"), "lr_head must be a finite number > 0, got inf"),
        (dict(lr_backbone="nan"), "lr_backbone must be a finite number >= 0, got nan"),
        (dict(linear_lr=0), "linear_lr must be a finite number > 0, got 0"),
        (dict(knn_temperature=-1), "knn_temperature must be a finite number > 0"),
        (dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
        (dict(batch_size=0), "batch_size must be >= 1, got 0"),  # was a ZeroDivisionError
        (dict(epochs=-1), "epochs must be >= 0, got -1"),  # the notebook's -p epochs -1
        (dict(epochs=0, min_steps=0), "epochs and min_steps are both 0"),  # was UnboundLocalError
        (dict(linear_epochs=0, min_steps=0), "linear_epochs and min_steps are both 0"),
        (dict(n_evals=0), "n_evals must be >= 1"),
        (dict(train_images=-1), "train_images must be 0 .* or 1 to 50,000"),
        (dict(test_images=10_001), "test_images must be 0 .* or 1 to 10,000"),
        (dict(knn_k="0,20"), r"knn_k must be one or more neighbour counts >= 1, got \(0, 20\)"),
    ],
)
def test_bad_evaluation_values_are_refused_naming_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        finetune_config("smoke", **bad)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(lr="inf"), "lr must be a finite number > 0, got inf"),
        (dict(temperature="nan"), "temperature must be a finite number > 0, got nan"),
        (dict(epsilon=0), "epsilon must be a finite number > 0"),
        (dict(weight_decay=-1), "weight_decay must be a finite number >= 0, got -1"),
        (dict(warmup_epochs="inf"), "warmup_epochs must be a finite number >= 0, got inf"),
        (dict(hidden_dim=0), "hidden_dim must be >= 1, got 0"),
        (dict(queue_start_epoch=-1), "queue_start_epoch must be >= 0"),
        # was "must hold at least one batch", of a queue that cannot hold anything
        (dict(queue_length=-5), r"queue_length must be 0 \(no queue\) or at least batch_size"),
        # was "fraction must be in (0, 1] ... got -2e-05", from deep inside the data loading
        (dict(train_images=-1), r"train_images must be 0 \(all 50,000 images\) or 1 to 50,000"),
        (dict(train_images=60_000), "train_images must be 0 .* got 60000"),
    ],
)
def test_bad_pretraining_values_are_refused_naming_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        pretrain_config("smoke", **bad)


def test_every_bad_field_is_named_in_one_line():
    with pytest.raises(ValueError) as error:
        finetune_config("smoke", batch_size=0, lr_head="inf", epochs=-2)
    message = str(error.value)
    assert "\n" not in message
    assert all(name in message for name in ("batch_size", "lr_head", "epochs"))
    # every preset's own values pass
    for preset in PRESETS:
        finetune_config(preset)
        pretrain_config(preset)

"""Label-fraction evaluation: rows, modes, random-init baseline, bad input."""

from __future__ import annotations

import json

import pytest
import torch

import swavnb.evaluation.features
import swavnb.evaluation.finetuning
from swavnb.base.checkpoint import load_checkpoint
from swavnb.base.files import atomic_save
from swavnb.base.layout import SCRATCH
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.features import (
    evaluation_data,
    frozen_features,
    knn_by_bn_stats,
    load_encoder,
)
from swavnb.evaluation.finetuning import finetune, train_finetune
from swavnb.evaluation.probes import extract_features, knn_accuracy, precise_batchnorm
from swavnb.method.model import cifar_resnet18
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import pretrain

TINY = dict(
    train_images=200,
    test_images=100,
    epochs=1,
    min_steps=2,
    batch_size=50,
    linear_epochs=3,
    n_evals=2,
)
ROW = {
    "preset",
    "aug",
    "mode",
    "fraction",
    "top1",
    "top5",
    "epochs",
    "seconds",
    "device",
    "precision",
}


@pytest.fixture(scope="session")  # built once per worker, however its tests interleave
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    pretrain(
        pretrain_config(
            "smoke",
            aug="jitter",
            train_images=32,
            batch_size=16,
            epochs=1,
            n_prototypes=10,
            feat_dim=8,
        ),
        out,
        progress=False,
    )
    return out / "checkpoint.pt"


def _spy_on_evaluation(monkeypatch) -> dict:
    """What finetune hands to its evaluation (fine-tuning or frozen features): the backbone's
    state before and after, its parameter names and the other arguments."""
    seen = {}
    for name in ("train_finetune", "frozen_features"):
        real = getattr(swavnb.evaluation.finetuning, name)

        def spy(backbone, *args, real=real, **kwargs):
            state = lambda: {k: v.detach().clone() for k, v in backbone.state_dict().items()}
            seen.update(before=state(), args=args, parameters=dict(backbone.named_parameters()))
            result = real(backbone, *args, **kwargs)
            seen["after"] = state()
            return result

        monkeypatch.setattr(swavnb.evaluation.finetuning, name, spy)
    return seen


@pytest.mark.parametrize("mode", ["finetune", "linear"])
def test_row_for_a_pretrained_backbone_evaluates_its_weights(
    tmp_path, checkpoint, mode, monkeypatch
):
    evaluated = _spy_on_evaluation(monkeypatch)
    row = finetune(
        str(checkpoint),
        0.5,
        mode,
        tmp_path / "out",
        finetune_config("smoke", **TINY),
        cache_dir=tmp_path / "cache",
    )
    assert (
        ROW <= set(row)
        and row["aug"] == "jitter"
        and row["mode"] == mode
        and row["preset"] == "smoke"
    )
    assert 0 <= row["top1"] <= row["top5"] <= 100
    assert (
        row["n_labels"] == 100 and row["test_images"] == 100
    )  # stratified: half of 2 per class, 1 per class
    assert len(row["curves"]) == 2 and len(row["per_superclass"]) == 20
    last = row["curves"][-1]  # the last evaluation is of the final model: the row's numbers
    assert (last["test_top1"], last["test_top5"]) == (row["top1"], row["top5"])
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == row
    # the evaluated backbone is the checkpoint's (weights and BN statistics), not a random one
    saved = load_checkpoint(checkpoint)["model"]
    pretrained = {k.removeprefix("backbone."): v for k, v in saved.items() if "backbone." in k}
    before, after = evaluated["before"], evaluated["after"]
    assert before.keys() == pretrained.keys()
    assert all(torch.equal(before[k], v) for k, v in pretrained.items())
    random_init = load_encoder("none", 0)[0].state_dict()
    assert not torch.equal(before["conv1.weight"], random_init["conv1.weight"])
    if mode == "finetune":  # every backbone parameter trains
        assert all(not torch.equal(after[k], before[k]) for k in evaluated["parameters"])
    else:  # frozen: weights and statistics untouched
        assert all(torch.equal(after[k], v) for k, v in before.items())


def test_finetuning_moves_the_backbone_at_lr_backbone_and_a_random_one_at_lr_head(train_split):
    """One SGD step (Nesterov momentum, first step: -lr * 1.9 * (grad + weight decay)) is linear in
    the rate, with the same gradient for every rate (same head init, batch and views)."""
    images = train_split.subset(torch.arange(16)).resized(8)

    def backbone_update(pretrained: bool, lr_backbone: float) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        backbone = cifar_resnet18()
        start = {n: p.detach().clone() for n, p in backbone.named_parameters()}
        config = finetune_config(
            "smoke", image_size=8, batch_size=16, epochs=1, min_steps=1, lr_backbone=lr_backbone
        )  # one step
        train_finetune(backbone, pretrained, images, images, config, torch.device("cpu"))
        return {n: p.detach() - start[n] for n, p in backbone.named_parameters()}

    assert all(not update.any() for update in backbone_update(True, 0.0).values())  # frozen
    slow, scratch = backbone_update(True, 0.02), backbone_update(False, 0.0)  # lr_head 0.1
    for name, update in slow.items():
        assert update.any(), name
        assert (scratch[name] - 5 * update).norm() <= 1e-2 * scratch[name].norm(), name


def test_linear_extracts_features_once_for_every_fraction(tmp_path, checkpoint, monkeypatch):
    calls = []
    for name in ("precise_batchnorm", "extract_features"):
        real = getattr(swavnb.evaluation.features, name)

        def counted(*args, real=real, name=name, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(swavnb.evaluation.features, name, counted)
    config = finetune_config("smoke", **TINY)
    first = finetune(
        str(checkpoint), 1.0, "linear", tmp_path / "a", config, cache_dir=tmp_path / "cache"
    )
    assert calls == ["precise_batchnorm", "extract_features", "extract_features"]  # pool, test
    calls.clear()
    again = finetune(
        str(checkpoint), 1.0, "linear", tmp_path / "b", config, cache_dir=tmp_path / "cache"
    )
    other = finetune(
        str(checkpoint), 0.5, "linear", tmp_path / "c", config, cache_dir=tmp_path / "cache"
    )
    assert calls == []  # both read the cache
    assert again["top1"] == first["top1"] and again["curves"] == first["curves"]
    assert other["n_labels"] == 100


def test_bn_settings_are_cached_apart_and_precise_statistics_come_from_the_pool(
    tmp_path, checkpoint
):
    config = finetune_config("smoke", **TINY)
    backbone, encoder = load_encoder(str(checkpoint), config.seed)
    pool, test = evaluation_data(config)
    cache, tag = tmp_path / "cache", encoder.tag
    precise = frozen_features(backbone, pool, test, torch.device("cpu"), config, cache, tag)
    ema = frozen_features(
        backbone, pool, test, torch.device("cpu"), config, cache, tag, bn_stats="ema"
    )
    assert len(list(cache.iterdir())) == 4 and not torch.allclose(precise[1], ema[1])
    assert torch.allclose(ema[1], extract_features(backbone, test.images, amp=config.amp))
    recalibrated = precise_batchnorm(
        backbone, pool.images, amp=config.amp
    )  # the pool's statistics, not the test's
    assert torch.allclose(
        precise[1], extract_features(recalibrated, test.images, amp=config.amp), atol=1e-5
    )
    row = finetune(str(checkpoint), 1.0, "linear", tmp_path / "out", config, cache_dir=cache)
    assert (
        row["bn_stats"] == "precise" and len(list(cache.iterdir())) == 4
    )  # the linear run reused them
    # another pool gives other precise statistics, so the same test images get new features, not
    # stale ones
    smaller = finetune_config("smoke", **{**TINY, "train_images": 100})
    other_pool, _ = evaluation_data(smaller)
    _, other_test = frozen_features(
        backbone, other_pool, test, torch.device("cpu"), smaller, cache, tag
    )
    assert len(list(cache.iterdir())) == 6
    recalibrated = precise_batchnorm(backbone, other_pool.images, amp=config.amp)
    assert torch.allclose(
        other_test, extract_features(recalibrated, test.images, amp=config.amp), atol=1e-5
    )


def test_knn_under_both_bn_settings_is_knn_of_each_settings_frozen_features(tmp_path, checkpoint):
    config = finetune_config("smoke", **TINY, knn_k=(5, 20))
    backbone, encoder = load_encoder(str(checkpoint), config.seed)
    pool, test = evaluation_data(config)
    cache, tag = tmp_path / "cache", encoder.tag
    knn = knn_by_bn_stats(backbone, pool, test, torch.device("cpu"), config, cache, tag)
    assert list(knn) == ["precise", "ema"] and len(list(cache.iterdir())) == 4
    for bn_stats, rows in knn.items():
        features = frozen_features(
            backbone, pool, test, torch.device("cpu"), config, cache, tag, bn_stats
        )
        expected = knn_accuracy(
            features[0],
            pool.fine,
            features[1],
            test.fine,
            ks=(5, 20),
            temperature=config.knn_temperature,
        )
        assert rows == expected
    assert knn["precise"] != knn["ema"]  # the statistics alone change the neighbours
    ema_only = finetune_config("smoke", **TINY, knn_k=(5,), bn_stats="ema")
    assert list(
        knn_by_bn_stats(backbone, pool, test, torch.device("cpu"), ema_only, cache, tag)
    ) == ["ema"]


def test_random_init_baseline_fine_tunes_the_seeds_random_backbone_at_its_resolution(
    tmp_path, monkeypatch
):
    evaluated = _spy_on_evaluation(monkeypatch)
    config = finetune_config("smoke", **TINY, image_size=8)
    row = finetune("none", 0.5, "finetune", tmp_path, config)
    assert row["aug"] == SCRATCH and row["checkpoint"] == "none" and row["image_size"] == 8
    assert 0 <= row["top1"] <= row["top5"] <= 100
    torch.manual_seed(config.seed)
    expected = cifar_resnet18().state_dict()
    assert all(torch.equal(evaluated["before"][k], v) for k, v in expected.items())
    pretrained, labelled, test = evaluated["args"][:3]
    assert pretrained is False  # every layer at the head's rate
    assert labelled.images.shape[1:] == test.images.shape[1:] == (3, 8, 8)


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1])
def test_fraction_outside_unit_interval(tmp_path, fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        finetune("none", fraction, "finetune", tmp_path, finetune_config("smoke", **TINY))


def test_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="unknown mode 'probe'; choose one of finetune, linear"):
        finetune("none", 0.1, "probe", tmp_path, finetune_config("smoke", **TINY))


def test_resolution_must_match_the_checkpoint(tmp_path, checkpoint):
    with pytest.raises(
        ValueError, match="pretrained at 16 px but evaluation is at 8 px; pass --image_size 16"
    ):
        finetune(
            str(checkpoint), 0.5, "linear", tmp_path, finetune_config("smoke", **TINY, image_size=8)
        )


def test_a_step_is_timed_on_the_threads_asked_and_the_process_keeps_its_own(monkeypatch):
    from swavnb.evaluation import finetuning as module

    seen = []

    def timed(config, steps):
        seen.append(torch.get_num_threads())
        if len(seen) == 3:
            raise RuntimeError("the step failed")
        return 0.5

    monkeypatch.setattr(module, "_time_steps", timed)
    config = finetune_config("smoke")
    held = torch.get_num_threads()
    torch.set_num_threads(3)  # neither 1 nor the suite's one thread per worker
    try:
        assert module.seconds_per_step(config, threads=1) == 0.5
        assert torch.get_num_threads() == 3
        assert module.seconds_per_step(config) == 0.5
        with pytest.raises(RuntimeError, match="the step failed"):
            module.seconds_per_step(config, threads=2)
        assert seen == [1, 3, 2]
        assert torch.get_num_threads() == 3  # restored after a failed step too
    finally:
        torch.set_num_threads(held)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr_head", "inf"], "lr_head must be a finite number > 0, got inf"),
        (["--batch_size", "0"], "batch_size must be >= 1, got 0"),
        (["--epochs", "0", "--min_steps", "0"], "epochs and min_steps are both 0"),
        (["--epochs", "-1"], "epochs must be >= 0, got -1"),
    ],
)
def test_bad_settings_are_one_line_before_the_encoders_folder_is_touched(
    checkpoint, capsys, flags, message
):
    from swavnb.base import cli
    from swavnb.finetune import main

    before = sorted(checkpoint.parent.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, ["--checkpoint", str(checkpoint), "--fraction", "0.5", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert sorted(checkpoint.parent.iterdir()) == before  # no run.json, no folder


@pytest.mark.parametrize(
    "mode, rate", [("finetune", dict(lr_head=1e30)), ("linear", dict(linear_lr=1e20))]
)
def test_a_non_finite_loss_stops_the_run_in_one_line_and_writes_no_row(tmp_path, mode, rate):
    from swavnb.base.errors import NonFiniteLossError

    config = finetune_config("smoke", **{**TINY, "image_size": 8, **rate})
    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError) as error:
        finetune("none", 0.5, mode, out, config, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message and "No result was written" in message
    assert (
        " at epoch " in message
        and " step " in message
        and ("lr_head" if mode == "finetune" else "lr") in message
    )
    assert not (out / "result.json").exists()  # a chance-level row never passes for a result


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut off mid-write by an older writer
        lambda data: b"",
        lambda data: b"not a zip",
    ],
)
def test_a_damaged_feature_cache_is_named_and_extracted_again(tmp_path, checkpoint, damage, capsys):
    config = finetune_config("smoke", **TINY)
    backbone, encoder = load_encoder(str(checkpoint), config.seed)
    pool, test = evaluation_data(config)
    cache, cpu = tmp_path / "cache", torch.device("cpu")
    first = frozen_features(backbone, pool, test, cpu, config, cache, encoder.tag)
    for path in cache.iterdir():
        path.write_bytes(damage(path.read_bytes()))
    again = frozen_features(backbone, pool, test, cpu, config, cache, encoder.tag)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    err = capsys.readouterr().err
    assert err.count("is damaged") == 2 and "extracting again" in err
    assert all(str(path) in err for path in cache.iterdir())
    # rewritten whole: the next read takes them from the cache without a word
    frozen_features(backbone, pool, test, cpu, config, cache, encoder.tag)
    assert capsys.readouterr().err == ""


def test_cached_features_of_the_wrong_size_or_not_finite_are_extracted_again(
    tmp_path, checkpoint, capsys
):
    config = finetune_config("smoke", **TINY)
    backbone, encoder = load_encoder(str(checkpoint), config.seed)
    pool, test = evaluation_data(config)
    cache, cpu = tmp_path / "cache", torch.device("cpu")
    first = frozen_features(backbone, pool, test, cpu, config, cache, encoder.tag)
    train_cache, test_cache = sorted(cache.iterdir(), key=lambda p: torch.load(p).shape[0])[::-1]
    atomic_save(first[0][:10], train_cache)
    atomic_save(torch.full_like(first[1], float("nan")), test_cache)
    again = frozen_features(backbone, pool, test, cpu, config, cache, encoder.tag)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert capsys.readouterr().err.count("is damaged") == 2

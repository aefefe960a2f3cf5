"""``python -m swavnb.export``: a real (tiny) pretraining's backbone leaves the project as a plain
torchvision state dict with a model card listing exactly its checkpoint's evaluations; bad input
is one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import swavnb
from swavnb import export
from swavnb.base import cli
from swavnb.base.checkpoint import load_checkpoint, save_checkpoint
from swavnb.base.commit import source_commit
from swavnb.base.device import pick_device
from swavnb.base.errors import ExportFolderError
from swavnb.base.layout import (
    CARD,
    CARD_JSON,
    CHECKPOINT,
    CLUSTERS,
    ENCODER,
    KNN,
    MANIFEST,
    RESULT,
    run_folder,
)
from swavnb.evaluation.clusters import cluster_assignments, prototype_scores, score_rows
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.export import export_encoder
from swavnb.evaluation.features import evaluation_data, frozen_features, knn_by_bn_stats
from swavnb.evaluation.finetuning import finetune
from swavnb.evaluation.folders import open_evaluation
from swavnb.evaluation.intervals import Z95, accuracy_se
from swavnb.evaluation.model_card import plain_torchvision_lines
from swavnb.method.augment import CIFAR100_MEAN, CIFAR100_STD
from swavnb.method.model import SwAVModel
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import pretrain
from swavnb.study.results import save_clusters, save_knn

ROOT = Path(__file__).resolve().parents[2]
# 8 px and 32 images: what an export reads (weights, config, metrics, rows) needs no resolution
TINY_PRETRAIN = dict(
    train_images=32,
    batch_size=16,
    epochs=1,
    n_prototypes=10,
    feat_dim=8,
    image_size=8,
    local_size=4,
)
TINY_EVAL = dict(
    train_images=200,
    test_images=100,
    epochs=1,
    min_steps=2,
    batch_size=50,
    image_size=8,
    linear_epochs=2,
    knn_k=(5,),
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A finished pretraining in the study's layout, never evaluated."""
    runs = tmp_path_factory.mktemp("export") / "runs"
    folder = run_folder("smoke", "flip", 0, runs)
    pretrain(pretrain_config("smoke", aug="flip", **TINY_PRETRAIN), folder, progress=False)
    return folder / CHECKPOINT


@pytest.fixture(scope="module")
def evaluated(checkpoint, tmp_path_factory) -> Path:
    """The same pretraining copied to another runs folder, then evaluated there (linear at 50 % of
    the labels, the probes' k-NN and cluster scores, as the study's probes step computes them),
    beside the rows an earlier pretraining of that encoder left."""
    runs = tmp_path_factory.mktemp("evaluated") / "runs"
    folder = run_folder("smoke", "flip", 0, runs)
    shutil.copytree(checkpoint.parent, folder)
    copy = folder / CHECKPOINT
    config = finetune_config("smoke", **TINY_EVAL)
    finetune(copy, 0.5, "linear", None, config, runs_dir=runs)
    backbone, encoder, out = open_evaluation(copy, "probes", config, runs_dir=runs)
    pool, test = evaluation_data(config)
    cpu = pick_device("cpu")
    _, features = frozen_features(backbone, pool, test, cpu, config, folder, encoder.tag)
    knn = knn_by_bn_stats(backbone, pool, test, cpu, config, folder, encoder.tag)
    save_knn(knn, config.preset, encoder.aug, out, config.seed, len(test))
    scores = prototype_scores(SwAVModel.from_checkpoint(copy), test.images)
    clusters = cluster_assignments(features, scores, scores.shape[1], config.seed)
    rows = score_rows(clusters, {"fine": test.fine}, config.preset, encoder.aug, scores.shape[1])
    save_clusters(rows, out)
    # what a deleted and redone pretraining leaves: folders whose manifest names the old run (a
    # result row names it too; k-NN rows do not)
    for name, fresh, change in (
        ("linear-0.3", "linear-0.5", {"fraction": 0.3}),
        ("probes-seed3", "probes", {"seed": 3}),
    ):
        stale = folder / name
        shutil.copytree(folder / fresh, stale)
        manifest = json.loads((stale / MANIFEST).read_text())
        manifest["version"] = "0123456789abcdef"
        manifest["identity"].update(change)
        (stale / MANIFEST).write_text(json.dumps(manifest))
        for rows in stale.glob("*.json"):
            if rows.name != MANIFEST:
                data = json.loads(rows.read_text())
                for row in data if isinstance(data, list) else [data]:
                    row.update(change, top1=99.0)
                    if "run_id" in row:
                        row["run_id"] = "0123456789abcdef"
                rows.write_text(json.dumps(data))
    # and a row of this run that cannot be read (edited by hand): left out, not a crash
    shutil.copytree(folder / "linear-0.5", folder / "linear-1")
    (folder / "linear-1" / RESULT).write_text("{")
    return copy


def _plain_torchvision() -> nn.Module:
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    return net


def test_the_export_loads_into_plain_torchvision_and_gives_swavnbs_features(checkpoint, tmp_path):
    exported = export_encoder(checkpoint, tmp_path / "out")
    net = _plain_torchvision()
    result = net.load_state_dict(load_file(exported["encoder"]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ours = SwAVModel.from_checkpoint(checkpoint).backbone.eval()
    # the card's five lines of plain torchvision, as a user pastes them
    pasted: dict = {}
    exec("\n".join(plain_torchvision_lines(str(exported["encoder"]))), pasted)
    images = torch.randn(6, 3, 8, 8)  # the resolution it trained at
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(images), ours(images))
        torch.testing.assert_close(pasted["net"](images), ours(images))
        torch.testing.assert_close(swavnb.load_encoder(tmp_path / "out")(images), ours(images))
    assert "\n".join(plain_torchvision_lines()) in (tmp_path / "out" / CARD).read_text()
    with safe_open(str(exported["encoder"]), framework="pt") as file:
        metadata = file.metadata()
    assert metadata["architecture"] == "torchvision.models.resnet18"
    assert (metadata["preset"], metadata["aug"], metadata["seed"]) == ("smoke", "flip", "0")
    assert metadata["image_size"] == "8" and json.loads(metadata["mean"]) == list(CIFAR100_MEAN)


def test_the_card_of_an_unevaluated_checkpoint_states_its_training_and_not_evaluated(
    checkpoint, tmp_path
):
    exported = export_encoder(checkpoint, tmp_path)
    card = json.loads((tmp_path / CARD_JSON).read_text())
    assert card == json.loads(json.dumps(exported["facts"]))
    metrics = json.loads((checkpoint.parent / "metrics.json").read_text())
    training, inputs, hardware = card["training"], card["input"], card["hardware"]
    assert (training["preset"], training["aug"], training["seed"]) == ("smoke", "flip", 0)
    assert (training["epochs"], training["images"], training["stratified_subset"]) == (1, 32, True)
    assert inputs["image_size"] == 8 and inputs["value_range"] == [0.0, 1.0]
    assert inputs["mean"] == list(CIFAR100_MEAN) and inputs["std"] == list(CIFAR100_STD)
    assert hardware["device"] == metrics["device"] and metrics["precision"] in hardware["precision"]
    # the pretraining recorded its code's commit, and the card names it (None outside a checkout)
    assert card["commit"] == {"training": metrics["commit"], "exporter": source_commit()}
    assert metrics["commit"] == source_commit()
    assert card["evaluations"] == [] and card["stale_evaluations"] == []
    text = (tmp_path / CARD).read_text()
    for fact in (
        "smoke preset, flip views, seed 0",
        "| epochs | 1 |",
        "32 images (a class-stratified subset)",
        "8x8 px",
        "float32 in [0, 1]",
        "0.5071, 0.4865, 0.4409",
        "0.2673, 0.2564, 0.2762",
        metrics["device"],
        card["encoder"]["sha256"],
        "Not evaluated",
        'load_file("encoder.safetensors")',
    ):
        assert fact in text, fact
    assert (metrics["commit"] or "Training code: not recorded") in text


def test_the_card_lists_every_row_of_its_checkpoint_with_intervals_and_no_stale_one(
    evaluated, tmp_path
):
    card = export_encoder(evaluated, tmp_path)["facts"]
    rows = card["evaluations"]
    assert [row["evaluation"] for row in rows] == ["linear", "knn", "knn"]
    linear, knn = rows[0], {row["bn_stats"]: row for row in rows[1:]}
    result = json.loads((evaluated.parent / "linear-0.5" / RESULT).read_text())
    assert linear["fraction"] == 0.5 and linear["n_labels"] == result["n_labels"]
    for metric in ("top1", "top5"):
        value, se = result[metric], result[f"{metric}_se"]
        assert linear[metric] == round(value, 4) and linear[f"{metric}_se"] == se
        low, high = max(value - Z95 * se, 0), min(value + Z95 * se, 100)  # a percentage
        assert linear[f"{metric}_ci95"] == [round(low, 2), round(high, 2)]
    saved = json.loads((evaluated.parent / "probes" / KNN).read_text())
    assert sorted(knn) == sorted(row["bn_stats"] for row in saved) == ["ema", "precise"]
    for row in saved:  # the test set's binomial error: no standard error in a k-NN row
        mine, se = knn[row["bn_stats"]], accuracy_se(row["top1"], 100)
        assert (mine["k"], mine["top1"], mine["test_images"]) == (5, round(row["top1"], 4), 100)
        low, high = max(row["top1"] - Z95 * se, 0), min(row["top1"] + Z95 * se, 100)
        assert mine["top1_ci95"] == [round(low, 2), round(high, 2)]
    clusters = json.loads((evaluated.parent / "probes" / CLUSTERS).read_text())
    assert card["clusters"] == [{**row, "folder": "probes"} for row in clusters]
    # the earlier pretraining's row is left out, and said to be
    assert card["stale_evaluations"] == ["linear-0.3", "linear-1", "probes-seed3"]
    assert 99.0 not in [row["top1"] for row in rows]
    text = (tmp_path / CARD).read_text()
    low, high = linear["top1_ci95"]
    assert f"| linear | 50 % ({result['n_labels']:,}) |" in text
    assert f"{linear['top1']:.2f} [{low:.2f}, {high:.2f}]" in text
    assert (
        "| k-NN |" in text
        and "Left out: `linear-0.3`, `linear-1`, `probes-seed3`" in text
        and "| kmeans | fine | 10 | nmi |" in text
        and "Not evaluated" not in text
    )


def test_the_same_checkpoint_exports_again_and_another_needs_force(checkpoint, tmp_path):
    out = tmp_path / "out"
    export_encoder(checkpoint, out)
    written = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.iterdir()}
    time.sleep(0.01)
    export_encoder(checkpoint, out)  # nothing changed: nothing rewritten, not even the card's time
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == written
    # a card that says otherwise (an older card, before a new row) is rewritten
    older = json.loads((out / CARD_JSON).read_text())
    (out / CARD_JSON).write_text(json.dumps({**older, "evaluations": [{"top1": 1.0}]}))
    assert export_encoder(checkpoint, out)["facts"]["evaluations"] == []
    assert json.loads((out / CARD_JSON).read_text())["evaluations"] == []
    state = load_checkpoint(checkpoint)
    state["model"]["backbone.conv1.weight"] += 1.0
    state["run_id"] = "another-run"
    other = tmp_path / "other" / CHECKPOINT
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, other)
    before = (out / ENCODER).read_bytes()
    with pytest.raises(ExportFolderError) as error:
        export_encoder(other, out)
    message = str(error.value)
    assert "\n" not in message and str(out / ENCODER) in message and "--force" in message
    assert str(checkpoint) in message and (out / ENCODER).read_bytes() == before
    card = export_encoder(other, out, force=True)["facts"]
    assert card["source"]["checkpoint"] == str(other)
    torch.testing.assert_close(
        swavnb.load_encoder(out).conv1.weight, state["model"]["backbone.conv1.weight"]
    )


def _error_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.run(export.main, argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_bad_checkpoint_or_folder_is_one_line_naming_the_file_and_the_fix(
    checkpoint, tmp_path, capsys
):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:100_000])
    line = _error_line([str(truncated), str(tmp_path / "a")], capsys)
    assert str(truncated) in line and "truncated or damaged" in line and "copy it again" in line
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    line = _error_line([str(text), str(tmp_path / "b")], capsys)
    assert str(text) in line and "not a swavnb pretraining checkpoint" in line
    line = _error_line([str(tmp_path / "missing.pt"), str(tmp_path / "c")], capsys)
    assert "missing.pt" in line and "does not exist" in line
    exported = export_encoder(checkpoint, tmp_path / "out")["encoder"]
    line = _error_line([str(exported), str(tmp_path / "d")], capsys)
    assert str(exported) in line and "swavnb.load_encoder" in line
    state = load_checkpoint(checkpoint)
    state["finished"], state["epoch"] = False, 0
    unfinished = tmp_path / "unfinished" / CHECKPOINT
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, unfinished)
    line = _error_line([str(unfinished), str(tmp_path / "e")], capsys)
    assert "unfinished" in line and "rerun its pretrain command" in line
    # an export folder that holds something else, or is a file, is never written into
    line = _error_line([str(checkpoint), str(tmp_path)], capsys)
    assert f"'{tmp_path}' holds " in line and "new or empty folder" in line
    line = _error_line([str(checkpoint), str(text)], capsys)
    assert str(text) in line and "is a file" in line
    (tmp_path / "out" / ENCODER).write_bytes(exported.read_bytes()[:1000])  # cut short
    line = _error_line([str(checkpoint), str(tmp_path / "out")], capsys)
    assert str(tmp_path / "out" / ENCODER) in line and "--force" in line
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_the_command_exits_2_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "swavnb.export", "missing.pt", "out"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.pt" in lines[0] and "does not exist" in lines[0]

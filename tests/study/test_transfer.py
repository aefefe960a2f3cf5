"""--export / --import: few small files off a machine, and back as finished checkpoints."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch

from swavnb.base.checkpoint import load_checkpoint, save_checkpoint
from swavnb.base.errors import DamagedExportError, RunFolderError
from swavnb.base.files import write_json
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import pretrain
from swavnb.study import transfer


@pytest.fixture(scope="session")  # built once per worker, however its tests interleave
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke" / "flip" / "seed-0"
    config = pretrain_config(
        "smoke", aug="flip", train_images=32, batch_size=16, epochs=1, n_prototypes=12, feat_dim=8
    )
    pretrain(config, out, progress=False)
    return out


def test_a_model_travels_as_bf16_parts_and_comes_back_a_finished_checkpoint(
    trained, tmp_path, monkeypatch
):
    monkeypatch.setattr(transfer, "PART_BYTES", 2**20)  # several parts from a small model
    parts = transfer.export_model(trained / "checkpoint.pt", tmp_path / "out", "flip")
    assert len(parts) > 1 and all(p.stat().st_size <= 2**20 for p in parts)
    assert parts[-1].name == f"flip.model.{len(parts)}-of-{len(parts)}"
    # an atomic write that a cut-off machine left behind is not a part
    (tmp_path / "out" / f".flip.model.1-of-{len(parts)}.x1y2.tmp").write_bytes(b"half")
    transfer.export_results(trained.parents[2], "smoke", tmp_path / "out")
    imported = transfer.import_study(tmp_path / "out", tmp_path / "fresh", "smoke")
    target = tmp_path / "fresh" / "smoke" / "flip" / "seed-0" / "checkpoint.pt"
    assert imported["checkpoints"] == [target]
    original, back = (
        load_checkpoint(trained / "checkpoint.pt"),
        load_checkpoint(imported["checkpoints"][0]),
    )
    assert back["finished"] and back["optimizer"] is None and back["config"] == original["config"]
    assert back["run_id"] == original["run_id"]  # its evaluations stay tied to the same run
    for name, weight in original["model"].items():
        expected = weight.bfloat16().float() if weight.is_floating_point() else weight
        assert torch.equal(back["model"][name], expected), name
    parts[0].unlink()
    with pytest.raises(ValueError, match=f"has {len(parts) - 1} of its {len(parts)} parts"):
        transfer.import_study(tmp_path / "out", tmp_path / "again", "smoke")


def test_the_results_archive_holds_every_json_and_the_end_of_each_step_log(tmp_path):
    run_dir = tmp_path / "runs" / "smoke"
    write_json(run_dir / "flip" / "finetune-0.1" / "result.json", {"top1": 1.0})
    write_json(run_dir / "bench.json", {"ours_img_per_s": 2.0})
    log = run_dir / "notebooks" / "pretrain-flip.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"start\n" + b"x" * transfer.LOG_TAIL_BYTES + b"\nthe error\n")
    archive = transfer.export_results(tmp_path / "runs", "smoke", tmp_path / "out")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [
            "bench.json",
            "flip/finetune-0.1/result.json",
            "notebooks/pretrain-flip.log",
        ]
        tail = tar.extractfile("notebooks/pretrain-flip.log").read()
    assert len(tail) == transfer.LOG_TAIL_BYTES and tail.endswith(b"the error\n")
    assert b"start" not in tail


def _export(trained: Path, out: Path) -> list[Path]:
    parts = transfer.export_model(trained / "checkpoint.pt", out, "flip-seed0")
    transfer.export_results(trained.parents[2], "smoke", out)
    return parts


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_damaged_export_is_one_line_and_writes_nothing(trained, tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    parts = _export(trained, out)
    transfer.import_study(out, runs, "smoke")
    before = _files(runs)
    archive = out / "results-smoke.tar.gz"
    good = archive.read_bytes()
    archive.write_bytes(b"this is no archive")
    with pytest.raises(DamagedExportError, match="not a readable results archive.*copy"):
        transfer.import_study(out, runs, "smoke")
    archive.write_bytes(good[: len(good) // 2])  # cut off in transit
    with pytest.raises(DamagedExportError, match="not a readable results archive"):
        transfer.import_study(out, runs, "smoke")
    archive.write_bytes(good)
    parts[-1].write_bytes(parts[-1].read_bytes()[:100])  # a truncated model part
    with pytest.raises(DamagedExportError, match="'flip-seed0' .* truncated or damaged"):
        transfer.import_study(out, tmp_path / "fresh", "smoke")
    assert _files(runs) == before and not (tmp_path / "fresh").exists()


def test_import_never_replaces_another_pretraining(trained, tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    _export(trained, out)
    first = transfer.import_study(out, runs, "smoke")
    again = transfer.import_study(out, runs, "smoke")  # the same export: nothing to replace
    assert len(first["checkpoints"]) == 1 and again["checkpoints"] == []
    target = first["checkpoints"][0]
    state = load_checkpoint(target)
    save_checkpoint(
        {**{k: v for k, v in state.items() if k != "format"}, "run_id": "other"}, target
    )
    before = _files(runs)
    with pytest.raises(RunFolderError, match="holds another pretraining .*run other"):
        transfer.import_study(out, runs, "smoke")
    assert _files(runs) == before

"""--export / --import: few small files off a machine, and back as finished checkpoints."""

from __future__ import annotations

import io
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


def _archive(out: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> None:
    """A results archive of crafted members: (name, bytes) files, or bare TarInfo (links,
    devices)."""
    with tarfile.open(out / "results-smoke.tar.gz", "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))


def _link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (("flip/seed-0/checkpoint.pt", b"16 bytes of junk"), "a checkpoint or cached features"),
        (("flip/seed-0/checkpoint.pt/x.json", b"{}"), "a checkpoint or cached features"),
        (("flip/seed-0/features-abc.pt", b"junk"), "a checkpoint or cached features"),
        (("../../outside.json", b"{}"), "a path that leaves its folder"),
        (("/tmp/absolute.json", b"{}"), "an absolute path"),
        (("flip/seed-0/.lock", b"{}"), "a path that leaves its folder or names a hidden file"),
        (("flip/notes.txt", b"mine"), "not a result (JSON) file or a step's log"),
        (("flip/seed-0/metrics.json", b'{"cut off'), "JSON that does not parse"),
        (_link("flip/seed-0/result.json", tarfile.SYMTYPE, "/etc/passwd"), "a link, folder"),
        (_link("flip/seed-0/knn.json", tarfile.LNKTYPE, "bench.json"), "a link, folder"),
        (_link("flip/seed-0/dev.json", tarfile.CHRTYPE), "a link, folder or device"),
        (_link("flip/seed-0/run.json", tarfile.DIRTYPE), "a link, folder or device"),
    ],
)
def test_import_accepts_only_the_files_an_export_writes(trained, tmp_path, member, why):
    out, runs = tmp_path / "out", tmp_path / "runs"
    _export(trained, out)
    transfer.import_study(out, runs, "smoke")
    before, around = _files(runs), set(tmp_path.iterdir())
    _archive(out, [("flip/seed-0/metrics.json", b"{}"), member])
    with pytest.raises(DamagedExportError) as refused:
        transfer.import_study(out, runs, "smoke")
    message = str(refused.value)
    name = member[0] if isinstance(member, tuple) else member.name
    assert "\n" not in message and f"holds {name!r}, {why}" in message, message
    assert "an export holds only its runs' JSON files and step logs" in message
    assert _files(runs) == before  # nothing written, the checkpoint least of all
    assert set(tmp_path.iterdir()) == around  # nor beside the runs folder


@pytest.mark.parametrize(
    "name", ["flip-seed0.model.abc-of-2", "flip-seed0.model.3-of-2", "flip-seed0.model.0-of-1"]
)
def test_a_file_named_like_a_model_part_that_is_none_is_one_line(trained, tmp_path, name):
    out = tmp_path / "out"
    _export(trained, out)
    (out / name).write_bytes(b"junk")
    with pytest.raises(DamagedExportError) as refused:
        transfer.import_study(out, tmp_path / "runs", "smoke")
    message = str(refused.value)
    assert "\n" not in message and "invalid literal" not in message
    assert f"'{out / name}' is not a model part" in message and "<name>.model.<i>-of-<n>" in message
    assert not (tmp_path / "runs").exists()


def test_a_model_export_never_names_a_folder_outside_the_runs(trained, tmp_path):
    out = tmp_path / "out"
    _export(trained, out)
    state = load_checkpoint(trained / "checkpoint.pt")
    crafted = {
        "format": transfer.FORMAT,
        "config": {**state["config"], "aug": "../../../elsewhere"},
        "model_hparams": state["model_hparams"],
        "metrics": {},
        "epoch": 1,
        "model": {},
    }
    buffer = io.BytesIO()
    torch.save(crafted, buffer)
    (out / "evil.model.1-of-1").write_bytes(buffer.getvalue())
    with pytest.raises(DamagedExportError, match="names aug '../../../elsewhere' and seed 0"):
        transfer.import_study(out, tmp_path / "runs", "smoke")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()

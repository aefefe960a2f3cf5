"""Evaluation folders: derived from the run, refused to other runs, redone after re-pretraining."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swavnb.base.errors import RunFolderBusy, RunFolderError
from swavnb.base.layout import CHECKPOINT, RESULT, run_folder
from swavnb.evaluation import features
from swavnb.evaluation import finetuning as finetune_module
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.finetuning import finetune
from swavnb.evaluation.folders import is_done, open_evaluation
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.train import pretrain

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(train_images=200, test_images=100, epochs=1, min_steps=2, batch_size=50)
TINY_PRETRAIN = dict(train_images=32, batch_size=16, epochs=1, n_prototypes=10, feat_dim=8)


def _pretrain(runs, aug="flip", seed=0):
    config = pretrain_config("smoke", aug=aug, seed=seed, **TINY_PRETRAIN)
    pretrain(config, run_folder("smoke", aug, seed, runs), progress=False)
    return str(run_folder("smoke", aug, seed, runs) / CHECKPOINT)


def test_folders_are_derived_from_the_run_and_refuse_another_encoder(tmp_path):
    runs = tmp_path / "runs"
    flip = _pretrain(runs)
    config = finetune_config("smoke", linear_epochs=2, **TINY)
    row = finetune(flip, 0.5, "linear", None, config, runs_dir=runs)
    derived = run_folder("smoke", "flip", 0, runs) / "linear-0.5"
    assert json.loads((derived / RESULT).read_text()) == row and row["seed"] == 0
    scratch = finetune("none", 0.5, "linear", None, config, runs_dir=runs)
    assert scratch["out_dir"].endswith("smoke/scratch/seed-0/linear-0.5")
    # an evaluation seed that is not the encoder's own gets a folder of its own
    other_seed = finetune(flip, 0.5, "linear", None, finetune_config("smoke", seed=3, **TINY))
    assert other_seed["out_dir"].endswith("flip/seed-0/linear-0.5-seed3")
    before = (derived / RESULT).read_bytes()
    with pytest.raises(RunFolderError, match=r"holds linear of flip \(seed 0\).* not linear of "):
        finetune("none", 0.5, "linear", derived, config)  # another encoder into flip's folder
    with pytest.raises(RunFolderError, match="linear_epochs: 2 -> 3"):
        finetune(flip, 0.5, "linear", None, finetune_config("smoke", linear_epochs=3, **TINY))
    assert (derived / RESULT).read_bytes() == before


def test_a_redone_pretraining_makes_its_encoders_results_and_features_stale(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    flip = _pretrain(runs)
    config = finetune_config("smoke", linear_epochs=2, **TINY)
    finetune(flip, 0.5, "linear", None, config, runs_dir=runs)
    assert is_done(flip, "linear", config, runs, 0.5)
    first = features.read_encoder(flip, 0)
    # as an error message advises: delete the checkpoint and pretrain again
    (run_folder("smoke", "flip", 0, runs) / CHECKPOINT).unlink()
    _pretrain(runs)
    second = features.read_encoder(flip, 0)
    assert second.run_id != first.run_id and second.tag != first.tag
    assert not is_done(flip, "linear", config, runs, 0.5)  # the study redoes it
    extracted = []
    real = features.extract_features
    monkeypatch.setattr(
        features, "extract_features", lambda *a, **k: extracted.append(1) or real(*a, **k)
    )
    row = finetune(flip, 0.5, "linear", None, config, runs_dir=runs)
    assert row["run_id"] == second.run_id and len(extracted) == 2  # pool and test, extracted anew
    assert is_done(flip, "linear", config, runs, 0.5)


def test_a_study_folder_holding_another_encoders_run_is_not_done_but_refused(tmp_path):
    runs = tmp_path / "runs"
    flip = _pretrain(runs)
    config = finetune_config("smoke", **TINY)
    swav_folder = run_folder("smoke", "swav", 0, runs) / "probes"
    open_evaluation(flip, "probes", config, swav_folder)  # flip's probes where swav's belong
    for name in ("knn.json", "clusters.json"):
        (swav_folder / name).write_text("[]")
    swav = str(run_folder("smoke", "swav", 0, runs) / CHECKPOINT)
    _pretrain(runs, "swav")
    with pytest.raises(RunFolderError, match=r"holds probes of flip \(seed 0\)"):
        is_done(swav, "probes", config, runs)


def test_two_checkpoints_of_one_aug_and_seed_never_share_an_explicit_folder(tmp_path):
    first, second = _pretrain(tmp_path / "a"), _pretrain(tmp_path / "b")  # both flip, seed 0
    config = finetune_config("smoke", linear_epochs=2, **TINY)
    mine = tmp_path / "mine"
    finetune(first, 0.5, "linear", mine, config)
    before = (mine / RESULT).read_bytes()
    with pytest.raises(RunFolderError, match=r"of '.*a/smoke/flip/seed-0/checkpoint.pt', not of"):
        finetune(second, 0.5, "linear", mine, config)
    assert (mine / RESULT).read_bytes() == before  # the first checkpoint's row is kept


def test_a_notebook_holds_its_probes_folder_until_its_kernel_ends_and_never_a_refused_one(
    tmp_path, lock_holder
):
    out = tmp_path / "probes"
    code = (
        "import sys, time\n"
        "from swavnb.evaluation.folders import open_evaluation\n"
        "from swavnb.evaluation.config import finetune_config\n"
        f"config = finetune_config('smoke', **{TINY!r})\n"
        "open_evaluation('none', 'probes', config, sys.argv[1], hold=True)\n"
        "print('held', flush=True); time.sleep(120)\n"
    )
    kernel = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert kernel.stdout.readline().strip() == "held"
        config = finetune_config("smoke", **TINY)
        # the claim is over, the results are cells away: a second process is still kept out
        with pytest.raises(RunFolderBusy, match=f"process {kernel.pid}"):
            open_evaluation("none", "probes", config, out)
    finally:
        kernel.kill()
        kernel.wait()
    open_evaluation("none", "probes", config, out)  # the kernel gone, the folder is free
    flip = tmp_path / "flip-probes"
    open_evaluation(_pretrain(tmp_path / "runs"), "probes", config, flip)
    for name in ("knn.json", "clusters.json"):  # flip's results: never taken over
        (flip / name).write_text("[]")
    with pytest.raises(RunFolderError):
        open_evaluation("none", "probes", config, flip, hold=True)  # flip's folder: refused ...
    lock_holder(flip)  # ... and not left locked by this process


def test_a_run_that_stopped_before_its_result_does_not_block_the_corrected_command(
    tmp_path, monkeypatch, capsys, lock_holder
):
    runs = tmp_path / "runs"
    config = finetune_config("smoke", **TINY, image_size=8)
    wrong = finetune_config("smoke", **TINY, image_size=8, lr_head=0.05)
    folder = run_folder("smoke", "scratch", 0, runs) / "finetune-0.5"

    def killed(*args, **kwargs):  # the first command dies after its claim: a crash, Ctrl-C, kill
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_module, "evaluation_data", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune("none", 0.5, "finetune", None, wrong, runs_dir=runs)
    monkeypatch.undo()
    assert (folder / "run.json").is_file() and not (folder / RESULT).exists()
    assert not is_done("none", "finetune", config, runs, 0.5)  # the study: to do, not refused
    holder = lock_holder(folder)  # a live run's folder is never taken
    with pytest.raises(RunFolderBusy, match=f"process {holder.pid}"):
        finetune("none", 0.5, "finetune", None, config, runs_dir=runs)
    holder.kill()
    holder.wait()
    row = finetune("none", 0.5, "finetune", None, config, runs_dir=runs)
    said = capsys.readouterr().out
    assert "held finetune of scratch (seed 0) at 50% of the labels, preset smoke" in said
    assert "before writing result.json: this run takes the folder over" in said
    assert is_done("none", "finetune", config, runs, 0.5) and row["top1"] >= 0
    # a finished run is never taken over; the advice holds for a folder derived from the run
    before = (folder / RESULT).read_bytes()
    with pytest.raises(RunFolderError, match=r"lr_head: 0\.1 -> 0\.05") as refused:
        finetune("none", 0.5, "finetune", None, wrong, runs_dir=runs)
    with pytest.raises(RunFolderError) as asked:  # the headless linear batch asks it so
        is_done("none", "finetune", wrong, runs, 0.5)
    for error in (refused, asked):
        assert "leave it unset" not in str(error.value)
        assert str(error.value).endswith(
            "choose another folder with --out, or move that folder away"
        )
    assert (folder / RESULT).read_bytes() == before


def test_an_encoder_is_evaluated_only_with_its_own_presets_settings(tmp_path):
    runs = tmp_path / "runs"
    flip = _pretrain(runs)
    before = sorted(run_folder("smoke", "flip", 0, runs).iterdir())
    # quick evaluates at 16 px as smoke does: the row would land in the smoke tables
    with pytest.raises(ValueError, match="with preset smoke, but this evaluation's is") as e:
        finetune(flip, 0.5, "linear", None, finetune_config("quick", **TINY), runs_dir=runs)
    assert "\n" not in str(e.value) and str(e.value).endswith("set --preset smoke")
    assert sorted(run_folder("smoke", "flip", 0, runs).iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut off
        lambda text: text.replace('"top1": ', '"top1": -5, "was": ', 1),  # impossible
        lambda text: text.replace('"top5": ', '"top5": NaN, "was": ', 1),
    ],
)
def test_a_damaged_result_is_not_done_and_the_same_evaluation_redoes_it(tmp_path, damage):
    runs = tmp_path / "runs"
    config = finetune_config("smoke", linear_epochs=2, **TINY)
    row = finetune("none", 0.5, "linear", None, config, runs_dir=runs)
    assert is_done("none", "linear", config, runs, 0.5)
    path = run_folder("smoke", "scratch", 0, runs) / "linear-0.5" / RESULT
    path.write_text(damage(path.read_text()))
    assert not is_done("none", "linear", config, runs, 0.5)  # the study's step runs it again
    again = finetune("none", 0.5, "linear", None, config, runs_dir=runs)
    assert is_done("none", "linear", config, runs, 0.5)
    assert again["top1"] == row["top1"] and json.loads(path.read_text())["top1"] == row["top1"]

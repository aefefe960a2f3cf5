"""The study: its plan, its command line, and one real smoke-sized study."""

from __future__ import annotations

import ast
import subprocess

import nbformat
import pandas as pd
import pytest
import torch
from papermill.translators import PythonTranslator

from swavnb.base import device
from swavnb.base.errors import RunFolderError
from swavnb.base.layout import notebooks_folder
from swavnb.evaluation import finetuning as finetune_module
from swavnb.study import __main__ as command
from swavnb.study import plan as study
from swavnb.study.__main__ import main
from swavnb.study.plan import finetune_cost, plan
from swavnb.study.scheduler import forced

NOTEBOOKS = notebooks_folder()


def _parameters(notebook: str) -> dict[str, tuple[str, str]]:
    """{name: (type, help)} of a notebook's parameters cell, as papermill reads it."""
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    cells = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"{notebook}: exactly one cell must be tagged 'parameters'"
    assigned = [
        node.target.id
        for node in ast.parse(cells[0].source).body
        if isinstance(node, ast.AnnAssign)
    ]
    found = {p.name: (p.inferred_type_name, p.help) for p in PythonTranslator.inspect(cells[0])}
    assert list(found) == assigned, (
        f"{notebook}: papermill misses parameters (an '=' in a help comment?)"
    )
    return found


@pytest.mark.parametrize("notebook", ["pretrain", "finetune", "probes", "results"])
def test_notebooks_declare_typed_parameters_with_help_and_no_functions(notebook):
    parameters = _parameters(notebook)
    assert all(kind != "None" and help_text for kind, help_text in parameters.values())
    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    # the project's kernel, which make setup installs; the study runs them with scheduler.KERNEL
    assert nb.metadata["kernelspec"]["name"] == "swavnb"
    for cell in nb.cells:
        if cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            assert not any(
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                for node in ast.walk(ast.parse(code))
            )


def test_the_plan_runs_pretraining_then_evaluations_then_probes_then_results(tmp_path):
    steps = plan("smoke", ["flip"], [0.1], runs_dir=tmp_path / "runs")
    assert [step.name for step in steps] == [
        "pretrain flip seed 0",
        "finetune flip seed 0 10% labels",
        "linear flip seed 0 at 10% labels",
        "finetune scratch seed 0 10% labels",
        "linear scratch seed 0 at 10% labels",
        "probes flip seed 0",
        "probes scratch seed 0",
        "results",
    ]
    # only what defines the run: the notebook derives its folders from it, as the study does
    assert steps[1].parameters == {
        "preset": "smoke",
        "aug": "flip",
        "seed": 0,
        "fraction": 0.1,
        "mode": "finetune",
        "data_root": "",
        "runs_dir": str(tmp_path / "runs"),
    }
    # an encoder's linear evaluations are one process (no notebook): seconds each, on its features
    assert steps[2].headless_only and steps[2].parameters["fractions"] == [0.1]
    assert steps[4].parameters["aug"] == "scratch"
    assert steps[-1].output == tmp_path / "runs" / "smoke" / "notebooks" / "results.ipynb"
    for step in steps:  # every parameter the study sets exists in its notebook
        if not step.headless_only:
            assert set(step.parameters) <= set(_parameters(step.notebook))


def test_the_full_plan_covers_every_encoder_fraction_mode_and_seed_with_default_folders():
    steps = plan("quick", seeds=range(2))
    # per seed: 3 pretrainings; per encoder 2 fine-tunings (100, 500 labels), its linear probes at
    # 5 fractions in one step, and its probes
    assert len(steps) == 2 * (3 + 4 * (2 + 1) + 4) + 1
    finetuned = {s.parameters["fraction"] for s in steps if s.notebook == "finetune"}
    assert finetuned == {0.02, 0.1}
    assert {tuple(s.parameters["fractions"]) for s in steps if s.notebook == "linear"} == {
        (0.02, 0.1, 0.3, 0.4, 1.0)
    }
    # --fractions asks for the same fractions in every mode
    asked = plan("quick", fractions=[0.4])
    assert {s.parameters.get("fraction") for s in asked if s.notebook == "finetune"} == {0.4}
    # seed by seed, so an interrupted study has whole seeds; the multi-crop pretraining (the
    # longest) first, so it does not end the study alone
    seeds_in_order = [s.parameters["seed"] for s in steps[:-1]]
    assert seeds_in_order == sorted(seeds_in_order)
    assert [s.name for s in steps if s.notebook == "pretrain"] == [
        f"pretrain {aug} seed {seed}" for seed in (0, 1) for aug in ("swav", "jitter", "flip")
    ]
    assert [s.notebook for s in steps[:3]] == ["pretrain"] * 3
    # the default folders are '' so that a published notebook holds no path of a particular run
    assert steps[1].parameters == {
        "preset": "quick",
        "aug": "jitter",
        "seed": 0,
        "data_root": "",
        "runs_dir": "",
        "figures_dir": "",
    }
    assert steps[-1].parameters == {
        "preset": "quick",
        "runs_dir": "",
        "results_dir": "",
        "figures_dir": "",
    }


def test_bad_command_line_values_are_rejected_before_anything_runs(capsys):
    for argv in (["--augs", "flip,colour"], ["--fractions", "0.1,2"], ["--preset", "huge"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "colour" in capsys.readouterr().err


def test_smoke_study_runs_every_notebook_skips_on_rerun_and_names_a_failing_cell(
    smoke_study, capsys, monkeypatch
):
    runs = smoke_study["runs"]
    folders = [
        "--runs_dir",
        str(runs),
        "--results_dir",
        str(smoke_study["results"]),
        "--figures_dir",
        str(smoke_study["figures"]),
    ]
    argv = smoke_study["argv"]

    # 6 notebooks; the two encoders' linear evaluations ran as one process each
    assert len(list((runs / "smoke" / "notebooks").glob("*.ipynb"))) == 6
    assert len(list((runs / "smoke" / "notebooks").glob("linear-*.log"))) == 2
    rows = pd.read_csv(smoke_study["results"] / "smoke" / "results.csv")
    assert sorted(zip(rows["aug"], rows["mode"], strict=True)) == [
        ("flip", "finetune"),
        ("flip", "linear"),
        ("scratch", "finetune"),
        ("scratch", "linear"),
    ]
    # probes reused linear evaluation's (precise-BN) features and added only the EMA ones for its
    # comparison
    assert len(list((runs / "smoke" / "flip" / "seed-0").glob("features-*.pt"))) == 4
    assert (smoke_study["figures"] / "smoke" / "accuracy-finetune.svg").is_file()

    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped, results exist") == 8

    # --force evaluations: a linear step deletes its rows (its batch skips finished ones) and the
    # encoder's features first; no forced step lists a checkpoint
    steps = plan("smoke", ["flip"], [0.1], runs_dir=runs, results_dir=smoke_study["results"])
    flip = runs / "smoke" / "flip" / "seed-0"
    linear = next(s for s in steps if s.name.startswith("linear flip"))
    assert set(linear.stale) == {flip / "linear-0.1" / "result.json", *flip.glob("features-*.pt")}
    assert len(linear.stale) == 5 and all(path.is_file() for path in linear.stale)
    redone = [s for s in steps if forced(s, "evaluations")]
    assert [s.notebook for s in steps if s not in redone] == ["pretrain"]
    assert not [p for s in redone for p in s.stale if p.name == "checkpoint.pt"]
    with pytest.raises(SystemExit):
        main([*argv, "--force", "pretrainings"])
    assert "--force: invalid choice: 'pretrainings'" in capsys.readouterr().err

    # a new fraction with an unreadable data folder fails inside the finetune notebook's training
    # cell
    monkeypatch.setenv("SWAVNB_OFFLINE", "1")
    missing = str(smoke_study["root"] / "no")
    bad = [
        "--preset",
        "smoke",
        "--augs",
        "flip",
        "--fractions",
        "0.1,1",  # 0.3 would be the 100 labels of 0.1 on smoke's pool: the same run, done
        "--data_root",
        missing,
        *folders,
    ]
    assert main(bad) == 1
    err = capsys.readouterr().err
    assert "finetune flip seed 0 100% labels failed in notebooks/finetune.ipynb, cell [" in err
    assert "'row = nb.finetune(checkpoint" in err and "DatasetNotFoundError" in err
    assert "finetune-flip-seed0-finetune-1.ipynb" in err
    # finished results are kept
    assert (runs / "smoke" / "flip" / "seed-0" / "finetune-0.1" / "result.json").is_file()


@pytest.mark.parametrize(
    ("flags", "scope"),
    [([], False), (["--force"], "all"), (["--force", "evaluations"], "evaluations")],
)
def test_force_reaches_the_scheduler_as_its_scope(tmp_path, monkeypatch, flags, scope):
    scopes = []
    monkeypatch.setattr(command, "run", lambda steps, force, **kwargs: scopes.append(force))
    assert main(["--preset", "smoke", "--runs_dir", str(tmp_path), *flags]) == 0
    assert scopes == [scope]


def test_a_failed_benchmark_is_reported_the_study_goes_on_and_the_exit_says_so(
    tmp_path, monkeypatch, capsys
):
    def broken_benchmark(runs_dir, preset, timeout=300):
        raise subprocess.TimeoutExpired(["python", "-m", "swavnb.bench"], timeout)

    calls = []
    monkeypatch.setattr(command, "benchmark", broken_benchmark)
    monkeypatch.setattr(command, "run", lambda steps, *args, **kwargs: calls.append(kwargs) or 0)
    argv = ["--preset", "smoke", "--bench", "--keep_going", "--runs_dir", str(tmp_path)]
    assert command.main(argv) == 1
    assert len(calls) == 1 and calls[0]["keep_going"] is True  # the steps ran, as asked
    err = capsys.readouterr().err
    assert "the benchmark failed" in err and "the study goes on" in err
    with pytest.raises(SystemExit):  # the probes notebook it would publish is not run
        command.main(["--preset", "smoke", "--skip_probes", "--publish"])
    assert "drop --skip_probes" in capsys.readouterr().err


def test_probes_can_be_left_out_and_results_then_wait_for_the_rest(tmp_path, monkeypatch):
    planned = []
    monkeypatch.setattr(command, "run", lambda steps, *args, **kwargs: planned.extend(steps) or 0)
    argv = ["--preset", "smoke", "--augs", "flip", "--fractions", "0.1", "--modes", "finetune"]
    assert main([*argv, "--skip_probes", "--runs_dir", str(tmp_path)]) == 0
    steps = plan("smoke", ["flip"], [0.1], modes=["finetune"], probes=False)
    assert [s.name for s in planned] == [s.name for s in steps]
    assert [s.name for s in steps] == [
        "pretrain flip seed 0",
        "finetune flip seed 0 10% labels",
        "finetune scratch seed 0 10% labels",
        "results",
    ]
    assert steps[-1].after == [s.name for s in steps[:-1]]


def test_modes_can_leave_out_the_linear_evaluations():
    steps = plan("smoke", ["flip"], [0.1, 1.0], modes=["finetune"])
    assert [s.name for s in steps if s.notebook == "finetune"] == [
        "finetune flip seed 0 10% labels",
        "finetune flip seed 0 100% labels",
        "finetune scratch seed 0 10% labels",
        "finetune scratch seed 0 100% labels",
    ]
    assert all(
        s.after == ["pretrain flip seed 0"]
        for s in steps
        if "flip" in s.name and s.notebook != "pretrain"
    )


def test_a_study_never_counts_another_configs_run_as_its_own(tmp_path, capsys):
    from swavnb.base.layout import run_folder
    from swavnb.pretraining.config import pretrain_config
    from swavnb.pretraining.train import pretrain

    # a user's flip run (e.g. a notebook pointed at the wrong folder) where the study's swav belongs
    swav = run_folder("smoke", "swav", 0, tmp_path)
    tiny = dict(train_images=32, batch_size=16, epochs=1, n_prototypes=10, feat_dim=8)
    pretrain(pretrain_config("smoke", aug="flip", **tiny), swav, progress=False)
    before = {p: p.read_bytes() for p in swav.rglob("*") if p.is_file() and p.name != ".lock"}
    argv = ["--preset", "smoke", "--augs", "swav", "--fractions", "0.1", "--modes", "linear"]
    assert main([*argv, "--headless", "--runs_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"'{swav}' holds flip pretraining (seed 0)" in err
    assert "not swav pretraining" in err and "aug: 'flip' -> 'swav'" in err
    assert {p: p.read_bytes() for p in before} == before


def test_a_second_study_on_the_same_runs_folder_is_refused_naming_the_first(
    tmp_path, capsys, lock_holder
):
    holder = lock_holder(tmp_path / "smoke")
    argv = ["--preset", "smoke", "--augs", "flip", "--headless", "--runs_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"runs folder '{tmp_path / 'smoke'}' is in use by process" in err
    assert str(holder.pid) in err and not (tmp_path / "smoke" / "flip").exists()


def test_compile_reaches_every_pretraining_only_when_given(tmp_path, monkeypatch, capsys):
    planned = []
    monkeypatch.setattr(command, "run", lambda steps, *args, **kwargs: planned.append(steps) or 0)
    argv = ["--preset", "smoke", "--augs", "flip,swav", "--fractions", "0.1", "--skip_probes"]
    assert main([*argv, "--runs_dir", str(tmp_path)]) == 0
    assert main([*argv, "--runs_dir", str(tmp_path), "--compile", "Auto"]) == 0
    default, given = planned
    # absent: each pretraining compiles as its preset says (the notebook's '' parameter)
    assert not any("compile" in step.parameters for step in default)
    compiles = {s.name: s.parameters["compile"] for s in given if "compile" in s.parameters}
    assert compiles == {"pretrain flip seed 0": "auto", "pretrain swav seed 0": "auto"}  # only
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--compile", "sometimes"])
    assert exit_info.value.code == 2
    assert "unknown compile 'sometimes'; choose one of auto, true, false" in capsys.readouterr().err


def test_the_fine_tuning_cost_counts_only_the_runs_still_to_go(tmp_path):
    steps = plan("quick", ["flip"], runs_dir=tmp_path / "runs")  # flip and random init, 2 counts
    finetunes = [s for s in steps if s.notebook == "finetune"]
    assert len(finetunes) == 4
    line = finetune_cost(steps, "quick", measure_above=10**6)
    assert line == "fine-tuning: 4 runs to go, 1,200 steps (100 labels: 200, 500 labels: 400 each)"
    for step in finetunes[:3]:
        step.done = lambda: True
    line = finetune_cost(steps, "quick", measure_above=10**6)
    assert line == "fine-tuning: 1 run to go; 3 done, 400 steps (500 labels: 400 each)"
    assert finetune_cost(steps, "quick", measure_above=10**6, force=True).startswith(
        "fine-tuning: 4 runs to go, 1,200 steps"
    )
    finetunes[3].done = lambda: True
    assert finetune_cost(steps, "quick") == "fine-tuning: all 4 runs done"


def test_the_fine_tuning_cost_is_timed_on_the_threads_a_job_gets(tmp_path, monkeypatch):
    steps = plan("quick", ["flip"], runs_dir=tmp_path / "runs")  # 4 runs, 1,200 steps
    timed_on = []
    per_step = {"seconds": 1.5}
    timer = lambda config, threads=0: timed_on.append(threads) or per_step["seconds"]  # noqa: E731
    monkeypatch.setattr(finetune_module, "seconds_per_step", timer)
    monkeypatch.setattr(study, "pick_device", lambda name: torch.device("cpu"))
    cores = {"n": 4}
    monkeypatch.setattr(device, "available_cores", lambda: cores["n"])  # threads_per_job's
    monkeypatch.setattr(study, "available_cores", lambda: cores["n"])  # the plan's overlap
    held = torch.get_num_threads()
    torch.set_num_threads(3)  # not a job's share of any core count below
    try:
        line = finetune_cost(steps, "quick", measure_above=0, jobs=2)
        assert timed_on == [2]  # a job's share of 4 cores, not the study process's 3 threads
        assert line.endswith(
            ", about 30 min of runs one after another, 15 min with 2 side by side"
            " (1.50 s per step on 2 threads, timed alone)"
        )
        line = finetune_cost(steps, "quick", measure_above=0, jobs=1)
        assert timed_on[1] == 3  # one job keeps the process's threads
        assert line.endswith(
            "about 30 min of runs one after another (1.50 s per step on 3 threads, timed alone)"
        )
        cores["n"] = 2  # 4 jobs on 2 cores: one thread each, and only 2 runs overlap
        line = finetune_cost(steps, "quick", measure_above=0, jobs=4)
        assert line.endswith(
            "15 min with 2 side by side (1.50 s per step on 1 thread, timed alone)"
        )
        cores["n"] = 4  # 4 jobs, 4 cores, but only 2 runs left: 2 overlap
        steps_left = [
            s for s in steps if s.notebook != "finetune" or s.parameters["fraction"] > 0.05
        ]
        line = finetune_cost(steps_left, "quick", measure_above=0, jobs=4)  # 2 runs of 400 steps
        assert line.endswith(
            "about 20 min of runs one after another, 10 min with 2 side by side"
            " (1.50 s per step on 1 thread, timed alone)"
        )
        monkeypatch.setattr(study, "pick_device", lambda name: torch.device("cuda"))
        per_step["seconds"] = 0.25  # one GPU is time-shared: no overlap, no threads; 5 minutes
        line = finetune_cost(steps, "quick", measure_above=0, jobs=2)
        assert line.endswith(
            "about 5.0 min of runs one after another (0.25 s per step, timed alone)"
        )
    finally:
        torch.set_num_threads(held)


def test_a_corrupt_checkpoint_in_the_study_is_one_line_naming_it(tmp_path, capsys):
    checkpoint = tmp_path / "runs" / "smoke" / "flip" / "seed-0" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    argv = ["--preset", "smoke", "--augs", "flip", "--modes", "linear", "--headless"]
    argv += ["--runs_dir", str(tmp_path / "runs"), "--results_dir", str(tmp_path / "results")]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(checkpoint) in lines[0]
    assert "corrupt" in lines[0] and "start that run over" in lines[0]


def test_a_pretraining_that_stopped_before_its_first_save_is_to_do_not_refused(tmp_path):
    from swavnb.base import run_guard
    from swavnb.base.layout import run_folder
    from swavnb.pretraining.config import pretrain_config
    from swavnb.pretraining.folder import pretraining_identity

    # e.g. the notebook run with -p lr 1e30 into the study's folder, stopped by its NaN loss
    folder = run_folder("smoke", "flip", 0, tmp_path)
    stopped = pretraining_identity(pretrain_config("smoke", aug="flip", lr=1e30))
    run_guard.claim(folder, stopped, "stopped-run")
    step = plan("smoke", ["flip"], [0.1], runs_dir=tmp_path)[0]
    assert step.name == "pretrain flip seed 0" and step.done() is False
    (folder / "metrics.json").write_text("{}")  # a run that wrote results is never taken over
    with pytest.raises(RunFolderError, match=r"holds flip pretraining .*lr: 1e\+30 -> 0\.001"):
        step.done()


def test_fractions_that_take_the_same_labels_are_planned_once_and_said_in_one_line(
    tmp_path, monkeypatch, capsys
):
    # smoke's 200-image pool has 2 images per class: 1, 10, 30 and 40 % all take 1 a class, the
    # same 100 labelled images, which the results would refuse as four rows of one cell
    steps = plan("smoke", ["flip"], runs_dir=tmp_path)
    assert [s.parameters["fraction"] for s in steps if s.notebook == "finetune"] == [0.01, 1.0] * 2
    assert {tuple(s.parameters["fractions"]) for s in steps if s.notebook == "linear"} == {
        (0.01, 1.0)
    }
    planned = []
    monkeypatch.setattr(command, "run", lambda steps, *args, **kwargs: planned.append(steps) or 0)
    assert main(["--preset", "smoke", "--augs", "flip", "--runs_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "fractions: 0.1, 0.3, 0.4 give the same 100 labels as 0.01 (preset smoke's pool: 200 "
        in (out)
    )
    assert [s.name for s in planned[0]] == [s.name for s in steps]
    # asked twice, or in another order: each count once, as its smallest fraction
    argv = ["--preset", "smoke", "--augs", "flip", "--fractions", "0.4,1,0.3,1"]
    assert main([*argv, "--modes", "finetune", "--runs_dir", str(tmp_path)]) == 0
    assert "1 asked more than once; 0.4 gives the same 100 labels as 0.3" in capsys.readouterr().out
    assert [s.parameters["fraction"] for s in planned[1] if s.notebook == "finetune"] == [
        0.3,
        1.0,
    ] * 2
    # quick's 50 images per class keep every default fraction apart: nothing said
    assert study.same_labels("quick", ["finetune", "linear"]) == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        # '' silently meant the preset's fractions
        (["--fractions", ""], "--fractions: no fraction in '': give one or more, e.g. 0.1,1"),
        (["--fractions", " , "], "no fraction in ' , '"),
        (["--jobs", "0"], "--jobs must be >= 1"),
    ],
)
def test_empty_fractions_and_no_jobs_are_refused_in_one_line(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.setattr(command, "available_cores", lambda: 2)
    monkeypatch.setattr(command, "run", lambda *args, **kwargs: pytest.fail("a step ran"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "smoke", "--runs_dir", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse's usage, then the error
    assert last.startswith("python -m swavnb.study: error: ") and message in last
    assert not (tmp_path / "smoke").exists()


def test_an_aug_asked_twice_is_pretrained_once_and_said(tmp_path, monkeypatch, capsys):
    planned = []
    monkeypatch.setattr(command, "run", lambda steps, *args, **kwargs: planned.append(steps) or 0)
    argv = ["--preset", "smoke", "--augs", "flip,swav,flip", "--fractions", "0.1"]
    assert main([*argv, "--skip_probes", "--runs_dir", str(tmp_path)]) == 0
    assert "augs: flip asked more than once; each is pretrained once" in capsys.readouterr().out
    names = [s.name for s in planned[0]]
    assert len(names) == len(set(names))  # no step twice, side by side and refused "in use"
    assert [n for n in names if n.startswith("pretrain")] == [
        "pretrain swav seed 0",
        "pretrain flip seed 0",
    ]


def test_more_jobs_than_cores_run_as_many_as_there_are_cores_said_in_one_line(
    tmp_path, monkeypatch, capsys
):
    # --jobs 1000 started a notebook per step side by side, each with CIFAR in memory
    monkeypatch.setattr(command, "available_cores", lambda: 2)
    jobs = []
    monkeypatch.setattr(command, "run", lambda steps, *args, **kwargs: jobs.append(kwargs["jobs"]))
    argv = ["--preset", "smoke", "--augs", "flip", "--fractions", "0.1", "--jobs", "1000"]
    assert main([*argv, "--runs_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "--jobs 1000 is more than the 2 cores this process may use: 2 steps at a time" in out
    assert "(headless, 2 at a time)" in out or "(notebooks, 2 at a time)" in out
    assert jobs == [2]


@pytest.mark.parametrize("flag", ["runs_dir", "results_dir", "figures_dir"])
def test_a_read_only_folder_stops_the_study_before_any_step_in_one_line(
    tmp_path, read_only, capsys, flag
):
    folders = {name: tmp_path / name for name in ("runs_dir", "results_dir", "figures_dir")}
    read_only(folders[flag])
    argv = ["--preset", "smoke", "--augs", "flip", "--modes", "linear", "--headless"]
    argv += [part for name, folder in folders.items() for part in (f"--{name}", str(folder))]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and err.startswith(f"error: cannot write in '{folders[flag]}'"), err
    assert "(read-only file system): make it writable, or choose another" in err
    assert f"--{flag}" in err or flag == "runs_dir"
    assert "pretrain flip seed 0 ->" not in captured.out  # no step started

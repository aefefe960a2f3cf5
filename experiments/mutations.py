"""Do the tests fail when the code they guard breaks? Issue #25's mutations, each in its own copy.

Each mutation replaces one exact snippet of the package (it must occur exactly once, so a mutation
that no longer matches the code stops the script instead of passing vacuously) in a fresh copy of
the tracked files, then runs the tests named for it there. A mutation is caught when those tests
fail; the unmutated copy runs every named test first and must pass, or nothing is concluded.

    python experiments/mutations.py --json docs/data/mutations-<cpu>-<date>.json [--only weights]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from swavnb.base.device import hardware

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "swavnb/pretraining/train.py"
QUEUE = "swavnb/pretraining/queue.py"
FEATURES = "swavnb/evaluation/features.py"
TEST_TRAIN = "tests/pretraining/test_train.py"
TEST_FINETUNE = "tests/evaluation/test_finetune.py"


@dataclass(frozen=True)
class Mutation:
    name: str  # short key for --only
    breaks: str  # the behaviour it removes, as issue #25 words it
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "weights",
        "evaluation never loads the pretrained weights (item 1)",
        FEATURES,
        '    model.load_state_dict(state["model"])\n    return model.backbone',
        "    return model.backbone",
        (f"{TEST_FINETUNE}::test_row_for_a_pretrained_backbone_evaluates_its_weights",),
    ),
    Mutation(
        "lr_backbone",
        "a pretrained backbone fine-tunes at the head's rate, not lr_backbone (item 1)",
        "swavnb/evaluation/finetuning.py",
        "backbone_lr = config.lr_backbone if pretrained else config.lr_head",
        "backbone_lr = config.lr_head",
        (
            f"{TEST_FINETUNE}::"
            "test_finetuning_moves_the_backbone_at_lr_backbone_and_a_random_one_at_lr_head",
        ),
    ),
    Mutation(
        "start_step",
        "a mid-epoch resume replays the epoch from its first batch (item 2)",
        TRAIN,
        "            start_step=self.start_step,\n",
        "            start_step=0,\n",
        (f"{TEST_TRAIN}::test_resume_mid_epoch_matches_uninterrupted_run",),
    ),
    Mutation(
        "tally",
        "a mid-epoch resume drops the epoch's tally so far (item 2)",
        "swavnb/pretraining/checkpointing.py",
        'if state["step"] and state["tally"] is not None:',
        "if False:",
        (f"{TEST_TRAIN}::test_resume_mid_epoch_matches_uninterrupted_run",),
    ),
    Mutation(
        "whole_batch",
        "each rank trains on the whole global batch (item 3)",
        TRAIN,
        "index[runtime.rank :: runtime.world_size]",
        "index",
        ("tests/pretraining/test_distributed.py",),
    ),
    Mutation(
        "cache",
        "cached features are never read (item 4)",
        FEATURES,
        "if all(path is not None and path.exists() for path in paths):",
        "if False:",
        (f"{TEST_FINETUNE}::test_linear_extracts_features_once_for_every_fraction",),
    ),
    Mutation(
        "freezing",
        "the prototypes train during their freeze steps (item 5)",
        TRAIN,
        "            self.model.prototypes.weight.grad = None\n",
        "            pass\n",
        (f"{TEST_TRAIN}::test_prototypes_stay_frozen_for_the_freeze_steps_while_the_rest_trains",),
    ),
    Mutation(
        "queue_shift",
        "the queue overwrites its newest entries instead of shifting (item 5)",
        QUEUE,
        "            self.embeddings[:, batch:] = self.embeddings[:, :-batch].clone()\n",
        "",
        (f"{TEST_TRAIN}::test_queue_joins_sinkhorn_once_full_and_keeps_the_latest_batches",),
    ),
    Mutation(
        "queue_full",
        "the queue joins Sinkhorn before it is full (item 5)",
        QUEUE,
        "        if self.pushes * batch < self.embeddings.shape[1]:\n            return None\n",
        "",
        (f"{TEST_TRAIN}::test_queue_joins_sinkhorn_once_full_and_keeps_the_latest_batches",),
    ),
    Mutation(
        "queue_start",
        "the queue joins before queue_start_epoch (item 5)",
        TRAIN,
        "if self.queue is not None and self.epoch >= config.queue_start_epoch:",
        "if self.queue is not None:",
        (f"{TEST_TRAIN}::test_queue_waits_for_its_start_epoch",),
    ),
    Mutation(
        "stale_features",
        "the feature cache is keyed by aug and seed, not by the pretraining run (item 6)",
        FEATURES,
        'return self.run_id or f"{SCRATCH}-seed{self.seed}"',
        'return f"{self.aug}-seed{self.seed}"',
        (
            "tests/evaluation/test_folders.py::"
            "test_a_redone_pretraining_makes_its_encoders_results_and_features_stale",
        ),
    ),
    Mutation(
        "stale_results",
        "an evaluation of a redone pretraining counts as done (item 6)",
        "swavnb/evaluation/folders.py",
        'return done and held is not None and held.get("version") == encoder.run_id',
        "return done and held is not None",
        (
            "tests/evaluation/test_folders.py::"
            "test_a_redone_pretraining_makes_its_encoders_results_and_features_stale",
        ),
    ),
    Mutation(
        "import_replaces",
        "--import replaces a checkpoint of another pretraining (item 6)",
        "swavnb/study/transfer.py",
        '    if held and held == payload.get("run_id"):\n        return True\n',
        "    return True\n",
        ("tests/study/test_transfer.py::test_import_never_replaces_another_pretraining",),
    ),
)


def copy_tree(target: Path) -> None:
    """The tracked files of the checkout (with their uncommitted edits), nothing it built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, copied = ROOT / name, target / name
        if source.is_file():
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copied)


def mutated(tree: Path, mutation: Mutation) -> str:
    """The mutated text of its file in ``tree``; stops unless the snippet occurs exactly once."""
    text = (tree / mutation.path).read_text()
    if text.count(mutation.old) != 1:
        raise SystemExit(
            f"mutation {mutation.name!r}: its snippet occurs {text.count(mutation.old)} times in "
            f"{mutation.path} (expected once): update the mutation to today's code"
        )
    return text.replace(mutation.old, mutation.new)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, float, str, str]:
    """pytest on ``tests`` in ``tree``, its package imported from there (subprocesses too).

    Returns:
        pytest's exit status, seconds, its summary line and the first failure: the test's line that
        failed and pytest's first line on it.
    """
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("SWAVNB_ROOT", None)  # the copy is its own project root
    env.setdefault("SWAVNB_DATA", str(ROOT.parent / "shared" / "data"))
    imported = subprocess.run(
        [sys.executable, "-c", "import swavnb; print(swavnb.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(imported).is_relative_to(tree):  # an installed swavnb would test the unmutated code
        raise SystemExit(f"the copy imports swavnb from {imported}, not from {tree}")
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--tb=short"]
    tic = time.perf_counter()
    done = subprocess.run([*command, *tests], cwd=tree, env=env, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("E ")), None)
    source = [line.strip() for line in lines[:at] if line.strip().strip("^")]  # no caret lines
    failure = "" if at is None else f"{source[-1] if source else ''}  ->  {lines[at][1:].strip()}"
    return done.returncode, time.perf_counter() - tic, lines[-1] if lines else "", failure


def _lscpu() -> str:
    shown = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    keep = ("Model name:", "CPU family:", "Model:")
    return "; ".join(" ".join(line.split()) for line in shown if line.startswith(keep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the outcome of every mutation here")
    parser.add_argument("--only", default="", help="comma-separated mutation names")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    unknown = wanted - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(
            f"unknown mutation(s) {sorted(unknown)}; choose from the names in MUTATIONS"
        )
    chosen = [m for m in MUTATIONS if not wanted or m.name in wanted]
    every_test = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    rows = []
    with tempfile.TemporaryDirectory(prefix="swavnb-mutation-") as scratch:
        for mutation in chosen:  # every snippet matches before anything runs
            mutated(ROOT, mutation)
        clean = Path(scratch) / "clean"
        copy_tree(clean)
        rc, seconds, last, _ = run_tests(clean, every_test)
        print(f"unmutated: rc {rc} in {seconds:.0f} s: {last}", flush=True)
        if rc != 0:
            raise SystemExit("the named tests fail on the unmutated code: nothing to conclude")
        for mutation in chosen:
            tree = Path(scratch) / mutation.name
            copy_tree(tree)
            (tree / mutation.path).write_text(mutated(tree, mutation))
            rc, seconds, last, failure = run_tests(tree, mutation.tests)
            caught = rc == 1  # 1: tests ran and failed (2-5: usage or collection errors)
            rows.append(
                {
                    "mutation": mutation.name,
                    "breaks": mutation.breaks,
                    "file": mutation.path,
                    "tests": list(mutation.tests),
                    "pytest_rc": rc,
                    "caught": caught,
                    "seconds": round(seconds, 1),
                    "pytest_summary": last,
                    "first_failure": failure,
                }
            )
            verdict = "caught" if caught else "NOT CAUGHT"
            print(
                f"{mutation.name}: {verdict} (rc {rc}, {seconds:.0f} s): {failure[:90]}", flush=True
            )
            shutil.rmtree(tree)
    missed = [r["mutation"] for r in rows if not r["caught"]]
    print(
        f"{len(rows) - len(missed)} of {len(rows)} mutations caught"
        + (f"; missed: {missed}" if missed else "")
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": "python experiments/mutations.py " + " ".join(sys.argv[1:]),
                    "date": time.strftime("%Y-%m-%d"),
                    "commit": subprocess.run(
                        ["git", "rev-parse", "--short", "HEAD"],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                    ).stdout.strip(),
                    "machine": hardware("cpu"),
                    "lscpu": _lscpu(),
                    "mutations": rows,
                },
                indent=1,
            )
            + "\n"
        )
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()

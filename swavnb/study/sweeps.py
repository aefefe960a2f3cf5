"""Hyperparameter sweeps: one pretraining per value of one field, evaluated alike, gathered into
rows, a figure and a verdict on the reference report's own choice
(``python -m swavnb.study --sweep F=v1,v2``).

Each value is pretrained with every other field from the preset, then evaluated by a fixed, cheap
subset of the study's evaluations (:data:`EVALUATION`): the linear probe at one label fraction and
weighted k-NN (k = 20, precise BN statistics), both on cached frozen features. Fine-tuning is left
out: it costs minutes per run where these cost seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import pandas as pd

from swavnb.base.config import parse_value
from swavnb.base.files import write_text
from swavnb.base.layout import CHECKPOINT, KNN, METRICS, RESULT, resolve, run_folder, sweep_folder
from swavnb.evaluation.intervals import Estimate, accuracy_se, mean_interval, paired_difference
from swavnb.evaluation.records import read_metrics, read_result, read_rows
from swavnb.pretraining.config import PretrainConfig, pretrain_config
from swavnb.study.claims import verdict_from_bounds

# fields that change where or how a run goes, not what it learns, and the run's own identity
NOT_SWEPT = frozenset(
    {"preset", "seed", "data_root", "device", "amp", "compile", "deterministic", "channels_last"}
    | {"checkpoint_every_steps", "log_every_steps"}
)
# the pretraining budget: its own command (--budget), evaluations and rows (swavnb.study.budget),
# in sweep-epochs/, never gathered as a sweep
BUDGET_FIELD = "epochs"
LINEAR_FRACTION = 0.1  # the sweep's linear probe: quick's 500 labels, the report's 1 % count
KNN_K = 20
EVALUATION = (
    f"linear probe at {100 * LINEAR_FRACTION:g}% of the labels, k-NN (k = {KNN_K}, precise BN)"
)
# the reference report's choices (its sec. 4.1, "a good balance"), which a sweep puts to the test
REPORT_CHOICES: dict[str, tuple[Any, str]] = {
    "n_prototypes": (3000, "3,000 prototypes is a good balance"),
    "feat_dim": (128, "a 128-d embedding is a good balance"),
    "batch_size": (256, "batch 256 is a good balance"),
}
COLUMNS = (
    "field", "value", "aug", "seed", "final_loss", "linear_top1", "linear_top1_se",
    "knn_top1", "knn_top1_se", "n_labels", "test_images",
)  # fmt: skip


@dataclass(frozen=True)
class Sweep:
    """One field and the values it takes, each a valid pretraining config of the preset."""

    field: str
    values: tuple[Any, ...]

    def run_aug(self, aug: str, value: Any) -> str:
        """The view strategy of ``value``'s run: ``aug``, or the value itself in a sweep of aug."""
        return value if self.field == "aug" else aug

    def config(self, preset: str, aug: str, seed: int, value: Any) -> PretrainConfig:
        """``value``'s run: the preset's config for its strategy, with the field set."""
        return pretrain_config(preset, **{"aug": aug, "seed": seed, self.field: value})

    def configs(self, preset: str, aug: str, seed: int) -> list[PretrainConfig]:
        return [self.config(preset, aug, seed, v) for v in self.values]


def parse_sweep(text: str, preset: str, aug: str) -> Sweep:
    """``FIELD=v1,v2,...`` as a :class:`Sweep`; every value is checked as a whole config of
    ``preset`` before anything trains.

    Raises:
        ValueError: one line naming the field, the value and the rule it breaks.
    """
    field, sep, listed = text.partition("=")
    field = field.strip()
    hints = get_type_hints(PretrainConfig)
    if not sep or not listed.strip():
        raise ValueError(
            f"--sweep takes FIELD=v1,v2,... (e.g. n_prototypes=30,300,3000), got {text!r}"
        )
    if field == BUDGET_FIELD:
        raise ValueError(
            f"--sweep {field}: the pretraining budget has its own command, evaluated as the study "
            f"evaluates: --budget {listed.strip() or '1,2,4,8,16'}"
        )
    if field not in hints or field in NOT_SWEPT:
        swept = sorted(set(hints) - NOT_SWEPT - {BUDGET_FIELD})
        raise ValueError(f"cannot sweep {field!r}; sweepable fields: {', '.join(swept)}")
    values = tuple(
        dict.fromkeys(parse_value(v.strip(), hints[field], field) for v in listed.split(","))
    )
    if len(values) < 2:
        raise ValueError(f"--sweep {field} needs at least two different values, got {values}")
    sweep = Sweep(field, values)
    for value in values:
        try:
            sweep.config(preset, aug, 0, value)
        except ValueError as error:
            raise ValueError(f"--sweep {field}={value}: {error}") from error
    return sweep


def sweep_fields(runs_dir: str | os.PathLike, preset: str) -> list[str]:
    """The fields swept under ``runs_dir/<preset>``, in name order; the budget's (``sweep-epochs``)
    is not one of them: its rows are ``budget.csv`` (:mod:`swavnb.study.budget`)."""
    root = resolve(runs_dir or "runs") / preset
    fields = {p.name.removeprefix("sweep-") for p in root.glob("sweep-*") if p.is_dir()}
    return sorted(fields - {BUDGET_FIELD})


def _value(text: str, field: str) -> Any:
    return parse_value(text, get_type_hints(PretrainConfig)[field], field)


def knn_row(path: Path, bn_stats: str | None = None) -> dict[str, Any] | None:
    """The k-NN row at :data:`KNN_K` (under ``bn_stats`` when given) of a ``knn.json``, or None
    where the file, the row or its test-image count is missing."""
    rows = read_rows(path) if path.is_file() else []
    chosen = [r for r in rows if r["k"] == KNN_K and bn_stats in (None, r["bn_stats"])]
    return chosen[0] if chosen and chosen[0].get("test_images") else None


def collect_sweep(runs_dir: str | os.PathLike, preset: str, field: str) -> pd.DataFrame:
    """One row per (value, aug, seed) of a sweep: final pretraining loss, linear and k-NN top-1 with
    their test-set errors; missing evaluations are left empty."""
    root = resolve(runs_dir or "runs") / preset / f"sweep-{field}"
    rows = []
    for metrics_path in sorted(root.glob(f"*/*/seed-*/{METRICS}")):
        encoder = metrics_path.parent
        metrics = read_metrics(metrics_path)
        row: dict[str, Any] = {
            "field": field,
            "value": _value(encoder.parents[1].name, field),
            "aug": encoder.parent.name,
            "seed": int(encoder.name.removeprefix("seed-")),
            "final_loss": metrics["epochs"][-1]["loss"],
        }
        linear = encoder / f"linear-{LINEAR_FRACTION:g}" / RESULT
        if linear.is_file():
            result = read_result(linear)
            row.update(
                linear_top1=result["top1"],
                linear_top1_se=accuracy_se(result["top1"], result["test_images"]),
                n_labels=result["n_labels"],
                test_images=result["test_images"],
            )
        if knn := knn_row(encoder / "knn" / KNN):
            row.update(
                knn_top1=knn["top1"], knn_top1_se=accuracy_se(knn["top1"], knn["test_images"])
            )
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(["value", "aug", "seed"], kind="stable").reset_index(drop=True)


def summarise(rows: pd.DataFrame, metric: str) -> dict[Any, Estimate]:
    """{value: mean of ``metric`` over seeds with its 95 % interval} (the loss: seeds only), of one
    encoder's rows."""
    out = {}
    for value, runs in rows.dropna(subset=[metric]).groupby("value"):
        ses = list(runs[f"{metric}_se"]) if f"{metric}_se" in runs else [0.0] * len(runs)
        out[value] = mean_interval(list(runs[metric]), ses)
    return out


def verdict(rows: pd.DataFrame, field: str, metric: str = "linear_top1") -> tuple[str, str, str]:
    """(statement, verdict, effects) on the reference report's choice for ``field``, from one
    encoder's rows.

    The choice *holds* when it beats every other swept value beyond the interval of the paired
    difference, *does not hold* when some value beats it so, and otherwise *cannot tell*.
    """
    if field not in REPORT_CHOICES:
        return f"the reference report makes no claim about {field}", "–", "–"
    choice, statement = REPORT_CHOICES[field]
    if field != "aug" and rows["aug"].nunique() > 1:  # pairing by seed would mix the encoders
        raise ValueError(
            f"the {field} verdict takes one encoder's rows, got {', '.join(rows['aug'].unique())}"
        )
    rows = rows.dropna(subset=[metric])
    by_value = {
        v: {
            int(r.seed): (getattr(r, metric), getattr(r, f"{metric}_se")) for r in runs.itertuples()
        }
        for v, runs in rows.groupby("value")
    }
    if choice not in by_value or len(by_value) < 2:
        return statement, f"cannot tell: {field}={choice} not swept against another value", "–"
    effects = {
        other: paired_difference(by_value[choice], runs)
        for other, runs in by_value.items()
        if other != choice
    }
    effects = {v: e for v, e in effects.items() if e is not None}
    if not effects:
        return statement, "cannot tell: no seed in common", "–"
    text = "; ".join(
        f"vs {v}: {e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}]" for v, e in effects.items()
    )
    bounds = effects.values()
    return statement, verdict_from_bounds((e.low for e in bounds), (e.high for e in bounds)), text


def sweep_claims(runs_dir: str | os.PathLike, preset: str) -> list[str]:
    """Markdown lines for claims.md: one verdict per sweep of this preset."""
    fields = sweep_fields(runs_dir, preset)
    if not fields:
        return []
    lines = [
        "",
        "## Sweeps",
        "",
        f"Each swept value pretrained with the preset's other fields; evaluated by the "
        f"{EVALUATION}. The verdict compares the reference report's value with every other one "
        "on linear top-1, paired by seed.",
        "",
        "| sweep | claim | verdict | ref. report's value minus each other value (top-1 points) |",
        "|:--|:--|:--|:--|",
    ]
    for field in fields:
        rows = collect_sweep(runs_dir, preset, field)
        # each encoder's sweep is its own comparison (in a sweep of aug the values are the augs)
        groups = [(None, rows)] if field == "aug" else list(rows.groupby("aug", sort=False))
        for aug, mine in groups:
            statement, outcome, effects = verdict(mine, field)
            named = field if aug is None or len(groups) == 1 else f"{field} ({aug})"
            lines.append(f"| {named} | {statement} | **{outcome}** | {effects} |")
    return lines


def write_sweep(
    runs_dir: str | os.PathLike, preset: str, field: str, results_dir: str | os.PathLike = "results"
) -> Path:
    """``results_dir/<preset>/sweep-<field>.csv`` from the sweep's runs; returns it."""
    rows = collect_sweep(runs_dir, preset, field)
    if rows.empty:
        raise FileNotFoundError(
            f"no finished run of the {field} sweep under '{resolve(runs_dir or 'runs') / preset}'; "
            f"run `python -m swavnb.study --preset {preset} --sweep {field}=v1,v2,...`"
        )
    out = _sweep_csv(preset, field, results_dir)
    write_text(out, rows.round(4).to_csv(index=False))
    return out


def _sweep_csv(preset: str, field: str, results_dir: str | os.PathLike) -> Path:
    return resolve(results_dir or "results") / preset / f"sweep-{field}.csv"


def sweep_current(
    runs_dir: str | os.PathLike, preset: str, field: str, results_dir: str | os.PathLike = "results"
) -> bool:
    """Whether ``sweep-<field>.csv`` holds exactly what :func:`write_sweep` would write now: the
    sweep step's "done", which an empty, cut-off or stale file never passes."""
    try:
        rows = collect_sweep(runs_dir, preset, field)
        return not rows.empty and (
            _sweep_csv(preset, field, results_dir).read_bytes()
            == rows.round(4).to_csv(index=False).encode()
        )
    except (ValueError, OSError):
        return False


def sweep_checkpoints(
    preset: str, sweep: Sweep, aug: str, seeds: Sequence[int], runs_dir: str | os.PathLike = "runs"
) -> list[tuple[Any, int, Path]]:
    """(value, seed, checkpoint) of every run of a sweep.

    The preset's own value is the study's run of that encoder and seed: its sweep folder is a link
    to the study's folder (made here, once), so it is trained once and evaluated alike. In a sweep
    of ``aug`` every value is the study's run of that strategy.
    """
    runs = []
    for seed in seeds:
        for value in sweep.values:
            run_aug = sweep.run_aug(aug, value)
            folder = sweep_folder(preset, sweep.field, value, run_aug, seed, runs_dir)
            default = getattr(pretrain_config(preset, aug=run_aug), sweep.field)
            if value == default and not folder.is_symlink() and not folder.exists():
                study_run = run_folder(preset, run_aug, seed, runs_dir)
                study_run.mkdir(parents=True, exist_ok=True)  # a sweep run before the study's
                folder.parent.mkdir(parents=True, exist_ok=True)
                target = os.path.relpath(study_run, folder.parent)
                folder.symlink_to(target, target_is_directory=True)  # relative: the runs may move
            runs.append((value, seed, folder / CHECKPOINT))
    return runs

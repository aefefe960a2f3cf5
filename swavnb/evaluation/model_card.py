"""An exported encoder's model card: what it was trained on and how, with which code, and every
evaluation row its run folder holds for that checkpoint (each top-1 / top-5 with its 95 % interval),
as JSON facts (``model_card.json``) and as the Markdown beside the weights (``README.md``).

An evaluation belongs to the checkpoint when its folder's manifest names the checkpoint's run id
(:mod:`swavnb.base.run_guard`): the rows of an earlier, redone pretraining are left out and counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import swavnb
from swavnb.base.commit import source_commit
from swavnb.base.errors import RunFolderError
from swavnb.base.layout import CARD_JSON, CLUSTERS, ENCODER, KNN, RESULT, shown
from swavnb.base.run_guard import read_manifest
from swavnb.data.cifar import FOLDER
from swavnb.evaluation.intervals import Z95, accuracy_se
from swavnb.method.augment import CIFAR100_MEAN, CIFAR100_STD
from swavnb.method.encoder_file import ARCHITECTURE, STEM
from swavnb.method.model import BACKBONE_DIM

CARD_FORMAT = "swavnb-model-card-v1"
CIFAR100_TRAIN = 50_000
_ORDER = ("finetune", "linear", "knn")  # how the card lists evaluations
_NAMES = {"finetune": "fine-tune", "linear": "linear", "knn": "k-NN"}
_BATCHNORM = {"batch": "each batch", None: "not recorded"}  # metrics.json's words, in a sentence


def _interval(value: float, se: float | None) -> list[float] | None:
    """``value`` ± 1.96 ``se``, inside [0, 100] (an accuracy in percent)."""
    if se is None:
        return None
    return [round(max(value - Z95 * se, 0.0), 2), round(min(value + Z95 * se, 100.0), 2)]


def _with_intervals(row: dict[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with top-1 / top-5, their standard errors (the row's own, else the test set's
    binomial error) and 95 % intervals."""
    n_test = source.get("test_images")
    for metric in ("top1", "top5"):
        value = float(source[metric])
        se = source.get(f"{metric}_se")
        if se is None and n_test:
            se = round(accuracy_se(value, n_test), 4)
        row[metric], row[f"{metric}_se"] = round(value, 4), se
        row[f"{metric}_ci95"] = _interval(value, se)
    return row


def _result_row(folder: Path, result: Mapping[str, Any], preset: str) -> dict[str, Any]:
    row = {
        "evaluation": result["mode"],
        "preset": preset,
        "fraction": result["fraction"],
        "n_labels": result.get("n_labels"),
        "k": None,
        "bn_stats": result.get("bn_stats"),
        "seed": result.get("seed", 0),
        "test_images": result.get("test_images"),
        "precision": result.get("precision"),
        "device": result.get("device"),
        "folder": folder.name,
    }
    return _with_intervals(row, result)


def _knn_row(folder: Path, knn: Mapping[str, Any], preset: str) -> dict[str, Any]:
    row = {
        "evaluation": "knn",
        "preset": preset,
        "fraction": None,
        "n_labels": None,
        "k": knn["k"],
        "bn_stats": knn.get("bn_stats"),
        "seed": knn.get("seed", 0),
        "test_images": knn.get("test_images"),
        "precision": None,
        "device": None,
        "folder": folder.name,
    }
    return _with_intervals(row, knn)


def _sort_key(row: Mapping[str, Any]) -> tuple:
    return (
        _ORDER.index(row["evaluation"]) if row["evaluation"] in _ORDER else len(_ORDER),
        row["seed"],
        row["fraction"] or 0.0,
        row["bn_stats"] or "",
        row["k"] or 0,
    )


def _folder_rows(child: Path, identity: Mapping[str, Any], run_id: str) -> tuple[list, list] | None:
    """One evaluation folder's accuracy and cluster rows, or None when they are not this run's
    (a result row names another run id) or cannot be read."""
    kind, preset = identity.get("kind"), identity.get("preset")
    accuracy, clusters = [], []
    try:
        if kind == "evaluation" and (child / RESULT).is_file():
            result = json.loads((child / RESULT).read_text())
            if result.get("run_id", run_id) != run_id:
                return None
            accuracy.append(_result_row(child, result, preset))
        if (child / KNN).is_file():
            knn = json.loads((child / KNN).read_text())
            accuracy += [_knn_row(child, row, preset) for row in knn]
        if (child / CLUSTERS).is_file():
            scores = json.loads((child / CLUSTERS).read_text())
            clusters += [{**row, "folder": child.name} for row in scores]
    except (OSError, ValueError, KeyError, TypeError):  # edited by hand, or not ours
        return None
    return accuracy, clusters


def encoder_rows(folder: Path, run_id: str) -> dict[str, list]:
    """Every evaluation row under an encoder's run ``folder`` that belongs to pretraining
    ``run_id``.

    Args:
        folder: the checkpoint's folder; its evaluation folders (``<mode>-<fraction>``, ``probes``,
            ``knn``, ``-seed<s>`` variants) each carry a manifest naming the run they evaluated.
        run_id: the checkpoint's run id (:attr:`swavnb.evaluation.features.Encoder.run_id`).

    Returns:
        ``{"accuracy": [...], "clusters": [...], "stale": [...]}``: fine-tune / linear / k-NN rows
        with intervals, cluster-quality rows, and the folders left out (another pretraining's rows,
        or files that cannot be read).
    """
    accuracy, clusters, stale = [], [], []
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            manifest = read_manifest(child)
        except RunFolderError:
            stale.append(child.name)
            continue
        identity = (manifest or {}).get("identity") or {}
        kind = identity.get("kind")
        if kind not in ("evaluation", "probes", "knn"):
            continue  # not an evaluation (a feature cache, an export folder)
        has_rows = any((child / name).is_file() for name in (RESULT, KNN, CLUSTERS))
        rows = _folder_rows(child, identity, run_id) if manifest.get("version") == run_id else None
        if rows is None:
            stale += [child.name] if has_rows else []
            continue
        accuracy += rows[0]
        clusters += rows[1]
    return {"accuracy": sorted(accuracy, key=_sort_key), "clusters": clusters, "stale": stale}


def _precision(metrics: Mapping[str, Any]) -> str:
    """The precision the epochs trained in: ``float32 (every epoch)``, or each one's epochs."""
    epochs = [e.get("precision", metrics.get("precision")) for e in metrics.get("epochs", [])]
    counts = {name: epochs.count(name) for name in dict.fromkeys(epochs)}
    if len(counts) == 1:
        return f"{epochs[0]} (every epoch)"
    return ", ".join(f"{name} ({n} epochs)" for name, n in counts.items()) or "not recorded"


def model_card(
    state: Mapping[str, Any],
    checkpoint: Path,
    run_id: str,
    digest: str,
    parameters: int,
) -> dict[str, Any]:
    """The card's facts, as ``model_card.json`` holds them.

    Args:
        state: the finished pretraining checkpoint (:func:`swavnb.base.checkpoint.load_checkpoint`).
        checkpoint: its path; its folder is searched for evaluations (:func:`encoder_rows`).
        run_id: its run id; digest: the exported tensors' SHA-256; parameters: their count.
    """
    config, metrics = state["config"], state.get("metrics") or {}
    epochs = metrics.get("epochs") or []
    train_images = config.get("train_images") or CIFAR100_TRAIN
    image_size = config.get("image_size", 32)
    rows = encoder_rows(checkpoint.parent, run_id)
    return {
        "format": CARD_FORMAT,
        "encoder": {
            "file": ENCODER,
            "architecture": ARCHITECTURE,
            "stem": STEM,
            "output": [BACKBONE_DIM],
            "parameters": parameters,
            "dtype": "float32",
            "sha256": digest,
        },
        "input": {
            "image_size": image_size,
            "channels": "RGB",
            "value_range": [0.0, 1.0],  # uint8 pixels / 255, then normalised
            "mean": list(CIFAR100_MEAN),
            "std": list(CIFAR100_STD),
            # other sizes are CIFAR's 32 px images averaged over (32 / size)^2 blocks
            "resize": "none"
            if image_size == 32
            else f"{32 // image_size}x{32 // image_size} block mean",
        },
        "training": {
            "method": "SwAV",
            "data": f"CIFAR-100 train ({FOLDER}), no labels",
            "images": train_images,
            "stratified_subset": train_images < CIFAR100_TRAIN,
            "preset": config.get("preset"),
            "aug": config.get("aug"),
            "seed": config.get("seed"),
            "epochs": state.get("epoch", len(epochs)),
            "final_loss": epochs[-1]["loss"] if epochs else None,
            "seconds": round(sum(e.get("seconds", 0.0) for e in epochs), 1),
            "config": {k: v for k, v in config.items() if k != "data_root"},  # a local path
        },
        "hardware": {
            "device": metrics.get("device"),
            "precision": _precision(metrics),
            "processes": metrics.get("world_size", 1),
            "batchnorm": metrics.get("batchnorm"),
            "compiled": metrics.get("compiled"),
        },
        "commit": {"training": metrics.get("commit"), "exporter": source_commit()},
        "source": {
            "checkpoint": shown(checkpoint),
            "run_id": run_id,
            # the study's --export carried it off its machine in bf16 (swavnb.study.transfer)
            "imported_from": state.get("imported_from"),
        },
        "evaluations": rows["accuracy"],
        "clusters": rows["clusters"],
        "stale_evaluations": rows["stale"],
        "exported": {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "swavnb": swavnb.__version__,
            "torch": torch.__version__,
        },
    }


def plain_torchvision_lines(file: str = ENCODER) -> list[str]:
    """The five lines of plain torchvision and safetensors that load the export (no swavnb)."""
    return [
        "import torch, torchvision",
        "from safetensors.torch import load_file",
        "net = torchvision.models.resnet18()",
        f"net.conv1, net.maxpool, net.fc = {STEM['conv1']}, {STEM['maxpool']}, {STEM['fc']}",
        f'net.load_state_dict(load_file("{file}")); net.eval()',
    ]


def _cell(value: float | None, interval: Sequence[float] | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" + ("" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]")


def _evaluation_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| evaluation | labels | k | BN statistics | seed | top-1 % [95 % CI] | "
        "top-5 % [95 % CI] | test images | folder |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        labels = "–" if row["fraction"] is None else f"{100 * row['fraction']:g} %"
        if row["n_labels"]:
            labels += f" ({row['n_labels']:,})"
        lines.append(
            f"| {_NAMES.get(row['evaluation'], row['evaluation'])} | {labels} "
            f"| {row['k'] or '–'} | {row['bn_stats'] or '–'} | {row['seed']} "
            f"| {_cell(row['top1'], row['top1_ci95'])} | {_cell(row['top5'], row['top5_ci95'])} "
            f"| {row['test_images'] or '–'} | `{row['folder']}` |"
        )
    return lines


def _clusters_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| method | target | clusters | score | value | folder |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['target']} | {row['clusters']} | {row['score']} "
            f"| {row['value']:.4f} | `{row['folder']}` |"
        )
    return lines


def _commit_lines(commit: Mapping[str, str | None]) -> list[str]:
    exporter = commit["exporter"] or "unknown (not a git checkout)"
    if commit["training"]:
        return [
            f"- Training code: commit `{commit['training']}` (recorded by the run at its last "
            "start; `+dirty`: with uncommitted changes).",
            f"- Exported by swavnb at commit `{exporter}`.",
        ]
    return [
        "- Training code: not recorded (the run predates swavnb recording its commit in "
        "`metrics.json`).",
        f"- Exported by swavnb at commit `{exporter}`: the exporter's commit, not necessarily the "
        "code that trained it.",
    ]


def _head_lines(card: Mapping[str, Any]) -> list[str]:
    """The card's title, the file, its architecture and how to load it."""
    training, encoder = card["training"], card["encoder"]
    title = (
        f"# SwAV ResNet-18 (CIFAR stem): {training['preset']} preset, {training['aug']} views, "
        f"seed {training['seed']}"
    )
    return [
        title,
        "",
        f"`{encoder['file']}` is the backbone of a swavnb SwAV pretraining on CIFAR-100, as a "
        "torchvision `resnet18` state dict in safetensors "
        f"(float32, {encoder['parameters']:,} parameters, no `fc`). SHA-256 of its tensors: "
        f"`{encoder['sha256']}`.",
        "",
        "## Architecture",
        "",
        f"`{ARCHITECTURE}(weights=None)` with the CIFAR stem:",
        "",
        *(f"- `{layer} = {code}`" for layer, code in encoder["stem"].items()),
        "",
        f"so `forward` gives ({', '.join(['N', *map(str, encoder['output'])])}) globally "
        "average-pooled features.",
        "",
        "## Loading",
        "",
        "With swavnb: `swavnb.load_encoder(DIR)` (checks the file's SHA-256, strict keys, eval "
        "mode). With plain torchvision:",
        "",
        "```python",
        *plain_torchvision_lines(encoder["file"]),
        "```",
        "",
    ]


def _input_lines(inputs: Mapping[str, Any]) -> list[str]:
    """What images the encoder takes."""
    size = inputs["image_size"]
    mean = ", ".join(f"{v:.4f}" for v in inputs["mean"])
    std = ", ".join(f"{v:.4f}" for v in inputs["std"])
    return [
        "## Input",
        "",
        f"- Images of {size}x{size} px, RGB, as float32 in [0, 1] (uint8 pixels / 255), then "
        f"normalised per channel with mean ({mean}) and std ({std}) (CIFAR-100's).",
        (
            "- 32 px: CIFAR's own resolution."
            if size == 32
            else f"- {size} px: each pixel the mean of a {inputs['resize'].split()[0]} block of "
            "CIFAR's 32 px image (`swavnb.data.cifar.downsample`). Features do not transfer across "
            "scales: "
            f"feed it {size} px images."
        ),
        "",
    ]


def _training_lines(card: Mapping[str, Any]) -> list[str]:
    """How the encoder was trained, and by which code."""
    training, hardware = card["training"], card["hardware"]
    batchnorm = hardware["batchnorm"]
    subset = " (a class-stratified subset)" if training["stratified_subset"] else ""
    lines = [
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| data | {training['data']}: {training['images']:,} images{subset} |",
        f"| preset | `{training['preset']}` |",
        f"| views (aug) | `{training['aug']}` |",
        f"| seed | {training['seed']} |",
        f"| epochs | {training['epochs']} |",
        f"| final loss | {_cell(training['final_loss'], None)} |",
        f"| hardware | {hardware['device'] or 'not recorded'} |",
        f"| precision | {hardware['precision']} |",
        f"| processes | {hardware['processes']} |",
        f"| BatchNorm batch statistics | {_BATCHNORM.get(batchnorm, batchnorm)} |",
        f"| torch.compile | {hardware['compiled']} |",
        f"| training time | {training['seconds'] / 60:.1f} min |",
        "",
        "The full configuration is in `" + CARD_JSON + "` (`training.config`). BatchNorm's running "
        "statistics are pretraining's averages over augmented views; the project's frozen-feature "
        "rows with BN statistics `precise` recompute them on the clean labelled pool first "
        "(`swavnb.evaluation.probes.precise_batchnorm`).",
        "",
        *_commit_lines(card["commit"]),
    ]
    if card["source"]["imported_from"]:
        lines.append(
            "- The checkpoint was carried off its training machine by `study --export`, its "
            "weights rounded to bf16 on the way: these float32 weights are those bf16 values."
        )
    return lines


def _evaluation_lines(card: Mapping[str, Any]) -> list[str]:
    """The rows of the encoder's evaluations and clusters found in its run folder."""
    folder = Path(card["source"]["checkpoint"]).parent
    lines = ["", "## Evaluations", ""]
    if card["evaluations"]:
        lines += [
            f"Every row in the run folder `{folder}` for this "
            "checkpoint (evaluations written elsewhere with `--out` are not found). The interval "
            "is each row's test-set binomial error (± 1.96 SE, within [0, 100]): it leaves out "
            "seed-to-seed variation.",
            "",
            *_evaluation_table(card["evaluations"]),
        ]
    else:
        lines.append(
            f"Not evaluated: the run folder `{folder}` holds no "
            "fine-tune, linear or k-NN row for this checkpoint."
        )
    if card["clusters"]:
        lines += ["", "Cluster quality of its test-set features:", ""]
        lines += _clusters_table(card["clusters"])
    if card["stale_evaluations"]:
        stale = ", ".join(f"`{name}`" for name in card["stale_evaluations"])
        lines += [
            "",
            f"Left out: {stale}, the evaluations of an earlier pretraining in the same folder (or "
            "files that cannot be read).",
        ]
    return lines


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card as the Markdown ``README.md`` beside the weights."""
    source, exported = card["source"], card["exported"]
    provenance = [
        "",
        "## Provenance",
        "",
        f"- Checkpoint: `{source['checkpoint']}`, run id `{source['run_id']}`.",
        f"- Exported {exported['at']} by swavnb {exported['swavnb']}, torch {exported['torch']}.",
        "",
    ]
    lines = [
        *_head_lines(card),
        *_input_lines(card["input"]),
        *_training_lines(card),
        *_evaluation_lines(card),
        *provenance,
    ]
    return "\n".join(lines)

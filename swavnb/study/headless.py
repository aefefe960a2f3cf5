"""The study's steps run through the package's functions, without Jupyter (``study --headless``).

Each function takes the parameters the study would inject into the step's notebook and writes
what that notebook writes (checkpoint and metrics, result.json, knn.json and clusters.json,
results/): the same run folders and rows, for an offline GPU node or a cluster job where
papermill and Jupyter are not installed. Figures are left to the notebooks, which a machine
with Jupyter runs afterwards on the imported results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from swavnb.base import cli, folder_lock
from swavnb.base.device import pick_device
from swavnb.base.layout import (
    SCRATCH,
    encoder_checkpoint,
    figures_folder,
    run_folder,
)
from swavnb.base.stopping import PARENT_ENV, stop_with_parent
from swavnb.evaluation.clusters import cluster_assignments, prototype_scores, score_rows
from swavnb.evaluation.config import FinetuneConfig, finetune_config
from swavnb.evaluation.features import evaluation_data, frozen_features, knn_by_bn_stats
from swavnb.evaluation.finetuning import finetune
from swavnb.evaluation.folders import is_done, open_evaluation
from swavnb.method.model import SwAVModel
from swavnb.pretraining.config import preset_changes, pretrain_config
from swavnb.pretraining.train import pretrain
from swavnb.study.results import NoRunsError, save_clusters, save_knn, write_results
from swavnb.study.sweeps import KNN_K, collect_sweep, write_sweep


def _runs_dir(p: Mapping[str, Any]) -> str:
    return p.get("runs_dir") or "runs"


def _checkpoint(p: Mapping[str, Any]) -> str:
    """The encoder a step evaluates: its ``checkpoint`` parameter, else the one its preset, aug and
    seed name, as the notebooks derive it."""
    return p.get("checkpoint") or encoder_checkpoint(
        p["preset"], p["aug"], p.get("seed", 0), _runs_dir(p)
    )


def run_pretrain(p: Mapping[str, Any]) -> None:
    """What ``pretrain.ipynb`` trains with these parameters (its other parameters at their
    defaults)."""
    config = pretrain_config(
        p["preset"],
        aug=p.get("aug") or None,
        seed=p.get("seed", 0),
        data_root=p.get("data_root", ""),
        device=p.get("device", "auto"),
        amp=p.get("amp", "auto"),
        compile=p.get("compile") or None,  # '' or absent: the preset's
        **p.get("overrides", {}),  # a sweep's value
    )
    out = p.get("out_dir") or run_folder(
        config.preset, config.aug, config.seed, _runs_dir(p), preset_changes(config)
    )
    pretrain(config, out, progress=False)


def _evaluation_config(p: Mapping[str, Any]) -> FinetuneConfig:
    return finetune_config(
        p["preset"],
        seed=p.get("seed", 0),
        data_root=p.get("data_root", ""),
        device=p.get("device", "auto"),
        amp=p.get("amp", "auto"),
    )


def run_finetune(p: Mapping[str, Any]) -> None:
    """What ``finetune.ipynb`` evaluates with these parameters."""
    finetune(
        _checkpoint(p),
        p["fraction"],
        p["mode"],
        p.get("out_dir") or None,
        _evaluation_config(p),
        runs_dir=_runs_dir(p),
    )


def run_linear(p: Mapping[str, Any]) -> None:
    """Linear evaluations of one encoder at every fraction in ``p["fractions"]``, in this one
    process: the study's batch of what ``finetune.ipynb`` does with mode linear, whose start-up
    (kernel, imports, data) would otherwise cost more than each evaluation on cached features."""
    config, checkpoint = _evaluation_config(p), _checkpoint(p)
    for fraction in p["fractions"]:
        if is_done(checkpoint, "linear", config, _runs_dir(p), fraction):
            continue
        row = finetune(checkpoint, fraction, "linear", None, config, runs_dir=_runs_dir(p))
        print(
            f"linear {row['aug']} seed {row['seed']}, {row['n_labels']} labels: "
            f"top-1 {row['top1']:.2f} ({row['seconds']:.0f} s)",
            flush=True,
        )


def run_knn(p: Mapping[str, Any]) -> None:
    """A sweep's k-NN evaluation: weighted k-NN (k = sweeps.KNN_K) of the preset's frozen features,
    read from the cache the linear probe filled."""
    config = replace(_evaluation_config(p), knn_k=(KNN_K,))
    checkpoint, device = _checkpoint(p), pick_device(config.device)
    backbone, encoder, out_dir = open_evaluation(
        checkpoint, "knn", config, None, _runs_dir(p), hold=True
    )
    try:  # held from the claim to the rows
        pool, test = evaluation_data(config)
        cache, tag = encoder.folder, encoder.tag
        knn = knn_by_bn_stats(backbone, pool, test, device, config, cache, tag, (config.bn_stats,))
        save_knn(knn, config.preset, encoder.aug, out_dir, config.seed, len(test))
    finally:
        folder_lock.release(out_dir)


def run_sweep(p: Mapping[str, Any]) -> None:
    """A sweep's rows (results/<preset>/sweep-<field>.csv), its figure, and the claims table."""
    from swavnb.study import plots

    preset, field = p["preset"], p["field"]
    csv = write_sweep(_runs_dir(p), preset, field, p.get("results_dir") or "results")
    rows = collect_sweep(_runs_dir(p), preset, field)
    fig = plots.sweep_figure(rows, field)
    plots.save_figure(fig, figures_folder(preset, p.get("figures_dir") or ""), f"sweep-{field}")
    try:  # claims.md gets the sweep's line; a runs folder of sweeps alone has no study tables
        write_results(preset, _runs_dir(p), p.get("results_dir") or "results")
    except NoRunsError:
        pass
    print(f"sweep {field}: {len(rows)} runs, {csv}", flush=True)


def run_budget(p: Mapping[str, Any]) -> None:
    """The budget's rows (results/<preset>/budget.csv, with the study's tables and claims.md) and
    its two figures."""
    from swavnb.study import budget_plots, plots
    from swavnb.study.budget import FIGURES

    preset, figures = p["preset"], figures_folder(p["preset"], p.get("figures_dir") or "")
    results = write_results(preset, _runs_dir(p), p.get("results_dir") or "results")
    drawn = (budget_plots.budget_figure, budget_plots.budget_claims_figure)
    for plot, name in zip(drawn, FIGURES, strict=True):
        plots.draw(plot, results.budget, save=(figures, name))
    print(f"budget: {len(results.budget)} rows, {figures}", flush=True)


def run_probes(p: Mapping[str, Any]) -> None:
    """The numbers ``probes.ipynb`` saves: weighted k-NN under both BN settings and the cluster
    scores."""
    config = _evaluation_config(p)
    preset, checkpoint, seed = config.preset, _checkpoint(p), config.seed
    device = pick_device(config.device)
    backbone, encoder, out_dir = open_evaluation(
        checkpoint, "probes", config, p.get("out_dir"), _runs_dir(p), hold=True
    )
    try:  # held from the claim to the rows
        pool, test = evaluation_data(config)
        cache, tag, aug = encoder.folder, encoder.tag, encoder.aug
        _, test_features = frozen_features(backbone, pool, test, device, config, cache, tag)
        knn = knn_by_bn_stats(backbone, pool, test, device, config, cache, tag)
        save_knn(knn, preset, aug, out_dir, seed, len(test))
        scores = None
        if aug != SCRATCH:
            model = SwAVModel.from_checkpoint(checkpoint).to(device)
            scores = prototype_scores(model, test.images, device, amp=config.amp)  # (N, K)
        n_clusters = pretrain_config(preset).n_prototypes if scores is None else scores.shape[1]
        assignments = cluster_assignments(test_features, scores, n_clusters, seed)
        targets = {"fine": test.fine, "superclass": test.coarse}
        save_clusters(score_rows(assignments, targets, preset, aug, n_clusters), out_dir)
    finally:
        folder_lock.release(out_dir)


def run_results(p: Mapping[str, Any]) -> None:
    """The tables ``results.ipynb`` writes (its figures are drawn when the notebook runs)."""
    write_results(p["preset"], _runs_dir(p), p.get("results_dir") or "results")


STEPS = {
    "pretrain": run_pretrain,
    "finetune": run_finetune,
    "linear": run_linear,
    "knn": run_knn,
    "probes": run_probes,
    "sweep": run_sweep,
    "budget": run_budget,
    "results": run_results,
}


def run_step(notebook: str, parameters: Mapping[str, Any]) -> None:
    """Run the step whose notebook is ``notebook`` with ``parameters``, in this process."""
    STEPS[notebook](parameters)


def main(argv: list[str] | None = None) -> None:
    """``python -m swavnb.study.headless NOTEBOOK '{"preset": ...}'``: one step, as ``study
    --headless``
    starts it."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m swavnb.study.headless", description=main.__doc__
    )
    parser.add_argument("notebook", choices=sorted(STEPS))
    parser.add_argument("parameters", help="the step's notebook parameters as a JSON object")
    args = parser.parse_args(argv)
    if parent := os.environ.get(PARENT_ENV):  # started by a study: it stops when the study dies
        stop_with_parent(int(parent))
    run_step(args.notebook, json.loads(args.parameters))


if __name__ == "__main__":
    cli.run(main)

"""The SwAV pretraining loop: build, restore, train epoch by epoch, save; resumable, reproducible,
single- or multi-process."""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from swavnb.base import distributed
from swavnb.base.commit import source_commit
from swavnb.base.compiling import compile_failures_name_the_fix, compiled_network, decide_compile
from swavnb.base.config import as_dict
from swavnb.base.device import device_name, set_deterministic, shared_with_jobs
from swavnb.base.errors import in_notebook
from swavnb.base.files import readable_json, write_json
from swavnb.base.layout import CHECKPOINT, METRICS, resolve
from swavnb.base.precision import autocast, precision_name, use_bf16
from swavnb.data.cifar import batch_indices, steps_per_epoch
from swavnb.method.augment import view_seed
from swavnb.method.loss import swav_loss
from swavnb.method.usage import prototype_usage
from swavnb.pretraining.checkpointing import restore, save
from swavnb.pretraining.config import PretrainConfig, validate_pretrain
from swavnb.pretraining.folder import claimed
from swavnb.pretraining.monitoring import EpochMonitor, check_finite_losses
from swavnb.pretraining.queue import EmbeddingQueue
from swavnb.pretraining.recipe import (
    batchnorm_scope,
    learning_rate,
    make_augmentation,
    make_model,
    make_optimizer,
    set_learning_rate,
    training_images,
)
from swavnb.pretraining.tally import epoch_record, new_tally


def pretrain(
    config: PretrainConfig, out_dir: str | os.PathLike, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume, or skip if finished) SwAV pretraining into ``out_dir``.

    Writes ``checkpoint.pt`` atomically after every epoch (and every ``checkpoint_every_steps``)
    and ``metrics.json`` with per-epoch loss, lr, img/s, seconds, prototype-usage diagnostics, the
    online k-NN top-1 (:mod:`swavnb.pretraining.online_knn`) and the collapse alarms raised
    (:mod:`swavnb.pretraining.alarm`). Rerunning the same call after an interruption continues
    from the last checkpoint and ends with the same weights as an uninterrupted run (same seed,
    same device). A folder whose manifest names another run that stopped before its first save is
    taken over (:mod:`swavnb.base.run_guard`).

    Raises:
        RunFolderError: ``out_dir`` holds another run.
        RunFolderBusy: another process is writing ``out_dir``.

    Returns:
        The metrics dict (also in ``metrics.json``).
    """
    validate_pretrain(config)
    with claimed(resolve(out_dir), config) as (state, run_id):
        trainer = Pretrainer(config, out_dir, progress, state, run_id)
        return trainer.fit()


def progress_bar(**options: Any) -> tqdm:
    """One live bar: a widget in a Jupyter kernel (one output, not one per update), else one
    updating terminal line."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**options)
    return tqdm(**options)


class Pretrainer:
    """One SwAV pretraining run in ``out_dir``: the network, its optimiser, views and queue on the
    device, trained epoch by epoch.

    :func:`pretrain` runs it in its folder; the class is there for code that needs the live model
    (the multi-process test compares ranks' weights, the benchmark times :meth:`train_step`).

    Args:
        state: the checkpoint to resume (:func:`swavnb.pretraining.folder.saved_state`), or None
            for a run from its first step.
        run_id: which pretraining this is (evaluations of an earlier one are stale); default the
            checkpoint's, or a new one.
    """

    def __init__(
        self,
        config: PretrainConfig,
        out_dir: str | os.PathLike,
        progress: bool = True,
        state: dict[str, Any] | None = None,
        run_id: str = "",
    ) -> None:
        self.runtime = distributed.setup(config.device)
        validate_pretrain(config, self.runtime.world_size)
        self.config, self.out, self.progress = config, resolve(out_dir), progress
        self.device, self.bf16 = self.runtime.device, use_bf16(config.amp, self.runtime.device)
        # before anything runs on the device: cuBLAS reads its workspace setting once
        self.deterministic = set_deterministic() if config.deterministic else None
        self.run_id = run_id or (state or {}).get("run_id") or secrets.token_hex(8)
        self._build()
        self.epoch, self.start_step, self.tally = 0, 0, None
        self.metrics: dict[str, Any] = {"config": as_dict(config), "epochs": []}
        if state is not None:
            restore(self, state)
        # rank 0 measures (its weights are the ones saved); the other ranks wait at the save
        self.monitor = EpochMonitor(config, self.runtime.is_main and not self.finished)
        self.compiled, self.compile_fallback = _record_conditions(self)
        self.net = self._network()
        self.pending: list[tuple[int, torch.Tensor]] = []  # losses not checked yet
        self.postfix: dict[str, str] = {}  # what the progress line shows after the bar

    def _build(self) -> None:
        """The images on the device, the network, optimiser, views and queue of a new run."""
        config, runtime = self.config, self.runtime
        # the model's initialisation; a training step draws nothing from the global RNGs (tested),
        # so a checkpoint carries no RNG state
        torch.manual_seed(config.seed)
        # the whole split stays on the device: no loader, no per-step copies
        self.images = training_images(config).images.to(self.device)
        self.per_epoch = steps_per_epoch(len(self.images), config.batch_size)
        self.total_steps = self.per_epoch * config.epochs
        self.freeze_steps = int(config.freeze_prototypes_epochs * self.per_epoch)
        self.model = make_model(config, runtime)
        self.optimizer = make_optimizer(config, self.model)
        self.augment = make_augmentation(config)
        # reseeded before every step (train_step): the views are a function of (seed, step, rank)
        self.generator = torch.Generator(device=self.device)
        rows = config.queue_length // runtime.world_size
        self.queue = (
            EmbeddingQueue(self.augment.n_assign, rows, config.feat_dim, self.device)
            if rows
            else None
        )

    def _network(self) -> torch.nn.Module:
        """The model as a step calls it: under DDP across ranks, compiled where decided."""
        net: torch.nn.Module = self.model
        if self.runtime.distributed:
            index = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=index)
        return compiled_network(net) if self.compiled else net

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    @property
    def checkpoint(self) -> os.PathLike:
        return self.out / CHECKPOINT

    def fit(self) -> dict[str, Any]:
        """Train until ``config.epochs``, saving after every epoch; returns the metrics."""
        if self.finished:  # a damaged copy of the checkpoint's metrics is rewritten
            if self.runtime.is_main and not readable_json(self.out / METRICS):
                write_json(self.out / METRICS, self.metrics)
            return self.metrics
        bar = progress_bar(
            total=self.total_steps,
            initial=self.epoch * self.per_epoch + self.start_step,
            disable=not (self.progress and self.runtime.is_main),
            unit="step",
            dynamic_ncols=True,
            desc=f"pretrain {self.config.preset}/{self.config.aug}",
        )
        with bar:
            while not self.finished:
                self._run_epoch(bar)
                line = self.monitor.after_epoch(
                    self.metrics, self.model.backbone, self.device, self.bf16
                )
                _show(bar, self.metrics["epochs"][-1], self.postfix, line, self.runtime.is_main)
                save(self)
                if self.runtime.is_main:
                    write_json(self.out / METRICS, self.metrics)
        distributed.barrier()
        return self.metrics

    def _run_epoch(self, bar: tqdm) -> None:
        config, runtime = self.config, self.runtime
        self.model.train()
        tally = self.tally or new_tally(config.n_prototypes, self.device)
        tic, steps_since, lr = time.perf_counter(), 0, config.lr
        batches = batch_indices(
            len(self.images),
            config.batch_size,
            config.seed,
            self.epoch,
            self.device,
            start_step=self.start_step,
        )
        for step, index in enumerate(batches, self.start_step):
            loss, scores, lr = self.scheduled_step(
                self.epoch, step, index[runtime.rank :: runtime.world_size]
            )
            self.pending.append((step, loss))
            tally["loss"] += loss
            tally["usage"] += prototype_usage(scores)  # (K,)
            tally["steps"] += 1
            steps_since += 1
            bar.update(1)
            if (step + 1) % config.log_every_steps == 0:
                check_finite_losses(self.pending, self.epoch, lr, self.checkpoint)
                speed = steps_since * config.batch_size / (time.perf_counter() - tic)
                self.postfix.update(loss=f"{loss.item():.3f}", lr=f"{lr:.2g}", img_s=f"{speed:.0f}")
                bar.set_postfix(self.postfix)
            every = config.checkpoint_every_steps
            if every and (step + 1) % every == 0 and step + 1 < self.per_epoch:
                check_finite_losses(self.pending, self.epoch, lr, self.checkpoint)
                tally["seconds"] += time.perf_counter() - tic
                tic, steps_since = time.perf_counter(), 0
                self.start_step = step + 1
                save(self, tally)
        check_finite_losses(self.pending, self.epoch, lr, self.checkpoint)
        tally["seconds"] += time.perf_counter() - tic
        precision = precision_name(self.bf16)
        record = epoch_record(tally, runtime, self.epoch + 1, lr, config.batch_size, precision)
        self.metrics["epochs"].append(record)
        self.epoch, self.start_step, self.tally = self.epoch + 1, 0, None

    def scheduled_step(
        self, epoch: int, step: int, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """:meth:`train_step` at its place in the run: ``epoch`` (when the queue joins) and ``step``
        within it (learning rate, frozen prototypes). Returns loss, first-view scores and the lr
        used."""
        self.epoch = epoch
        global_step = epoch * self.per_epoch + step
        lr = learning_rate(self.config, global_step, self.total_steps)
        set_learning_rate(self.optimizer, lr)
        loss, scores = self.train_step(index, global_step)
        return loss, scores, lr

    def train_step(
        self,
        index: torch.Tensor,
        global_step: int,
        phase_done: Callable[[str], None] = lambda phase: None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SwAV step on the images ``index`` (this rank's shard); returns loss and first-view
        scores.

        ``phase_done`` is called after each phase (augment, forward, sinkhorn_loss,
        backward_update): the benchmark times the real step through it.
        """
        self.model.normalize_prototypes()
        self.generator.manual_seed(view_seed(self.config.seed, global_step, self.runtime.rank))
        views = self.make_views(index)
        phase_done("augment")
        with compile_failures_name_the_fix():
            embeddings, scores = self.forward(views)
            phase_done("forward")
            loss = self.loss(scores)
            phase_done("sinkhorn_loss")
            self.update(loss, embeddings, global_step)
        phase_done("backward_update")
        return loss.detach(), scores[0].detach()

    def make_views(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Augmented views of the images ``index``, made on the device."""
        views = self.augment(self.images[index], self.generator)
        if self.config.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    def forward(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Embeddings and prototype scores of each view, the backbone in the run's precision."""
        with autocast(self.device, self.bf16):
            return self.net(views)

    def loss(self, scores: list[torch.Tensor]) -> torch.Tensor:
        """Swapped prediction over the views, with the queue joining Sinkhorn from
        ``queue_start_epoch`` once it is full."""
        config, queue_scores = self.config, None
        if self.queue is not None and self.epoch >= config.queue_start_epoch:
            queue_scores = self.queue.scores(self.model.prototypes.weight, len(scores[0]))
        return swav_loss(
            scores,
            self.augment.n_assign,
            config.temperature,
            config.epsilon,
            config.sinkhorn_iters,
            queue_scores,
        )

    def update(self, loss: torch.Tensor, embeddings: list[torch.Tensor], global_step: int) -> None:
        """Backward, optimiser step (prototypes frozen early on), then push this batch into the
        queue."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if global_step < self.freeze_steps:
            self.model.prototypes.weight.grad = None
        self.optimizer.step()
        if self.queue is not None:
            self.queue.push(embeddings)


def _record_conditions(trainer: Pretrainer) -> tuple[bool, str]:
    """What this process runs on, into the run's metrics: a resumed run may have started elsewhere
    (each epoch records its own precision too). Returns whether the network compiles, and why
    ``auto`` runs eager ('' where it does not)."""
    metrics, runtime = trainer.metrics, trainer.runtime
    if trainer.finished:  # its metrics say where it trained; this process trains nothing
        return False, ""
    metrics.update(
        device=device_name(trainer.device),
        precision=precision_name(trainer.bf16),
        world_size=runtime.world_size,
        batchnorm=batchnorm_scope(runtime),
        commit=source_commit(),  # the code's git commit, for the exported model card
    )
    if trainer.monitor.online_knn is not None:
        metrics["online_knn"] = trainer.monitor.online_knn.describe()
    metrics.setdefault("alarms", [])
    compiled, fallback = decide_compile(
        trainer.config.compile, trainer.device, runtime.distributed, runtime.is_main
    )
    metrics.update(
        compiled=compiled,
        compile_fallback=fallback or None,  # why auto ran eager
        deterministic=trainer.deterministic,
        # steps of `study --jobs N` run side by side: img/s and seconds are then time-shared
        shared_with_jobs=shared_with_jobs(),
    )
    return compiled, fallback


def _show(
    bar: tqdm, record: dict[str, Any], postfix: dict[str, str], alarm: str | None, main: bool
) -> None:
    """The epoch's online k-NN on the progress line, and an alarm's line below it (rank 0)."""
    if "online_knn_top1" in record:
        postfix["knn"] = f"{record['online_knn_top1']:.1f}%"
        bar.set_postfix(postfix)
    if alarm is not None and main:
        bar.write(alarm, file=sys.stderr)

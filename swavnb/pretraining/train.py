"""The SwAV pretraining loop: resumable, reproducible, single- or multi-process."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from swavnb.base import distributed, run_guard
from swavnb.base.checkpoint import load_checkpoint, save_checkpoint
from swavnb.base.commit import source_commit
from swavnb.base.compiling import (
    compiler_failure,
    compiler_problem,
    one_line,
    resolve_compile,
)
from swavnb.base.device import device_name, set_deterministic, shared_with_jobs
from swavnb.base.errors import (
    CompileError,
    NonFiniteLossError,
    another_folder,
    in_notebook,
    setting,
)
from swavnb.base.files import readable_json, write_json
from swavnb.base.layout import CHECKPOINT, METRICS, resolve, shown
from swavnb.base.precision import autocast, precision_name, use_bf16
from swavnb.base.unfinished import take_over
from swavnb.data.cifar import (
    CifarSplit,
    batch_indices,
    label_subset,
    load_cifar100,
    steps_per_epoch,
)
from swavnb.method.augment import Augmentation, MultiCrop, view_seed
from swavnb.method.loss import swav_loss
from swavnb.method.model import SwAVModel
from swavnb.method.usage import prototype_usage, usage_summary
from swavnb.pretraining.alarm import alarm_line, collapse_alarms
from swavnb.pretraining.config import (
    RESUMABLE_CHANGES,
    PretrainConfig,
    as_dict,
    validate_pretrain,
    validate_world,
)
from swavnb.pretraining.online_knn import OnlineKnn

# what a pretraining leaves from its first save on: a folder without either holds nothing to lose
PRETRAINING_RESULTS = (CHECKPOINT, METRICS)


def pretrain_identity(config: PretrainConfig) -> dict[str, Any]:
    """What a pretraining run folder holds (:mod:`swavnb.base.run_guard`): the fields that change
    the
    training, not those a run may resume with changed."""
    return {
        "kind": "pretrain",
        "preset": config.preset,
        "aug": config.aug,
        "seed": config.seed,
        "config": {k: v for k, v in as_dict(config).items() if k not in RESUMABLE_CHANGES},
    }


def progress_bar(**options: Any) -> tqdm:
    """One live bar: a widget in a Jupyter kernel (one output, not one per update), else one
    updating terminal line."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**options)
    return tqdm(**options)


@contextlib.contextmanager
def _compile_failure_names_the_fix() -> Iterator[None]:
    # the forward graph compiles at the first forward, the backward graph at the first backward, and
    # Triton may build a launcher at a kernel's first launch
    # (swavnb.base.compiling.compiler_failure)
    try:
        yield
    except Exception as error:
        cause = compiler_failure(error)
        if cause is None:
            raise
        raise CompileError(
            _compile_fix(f"could not build or launch the network ({one_line(cause)})")
        ) from error


def _compile_fix(what: str) -> str:
    return (
        f"torch.compile {what}; rerun with {setting('compile')} false: the same training, eager, "
        "without the compile speed-up"
    )


def make_augmentation(config: PretrainConfig) -> Augmentation:
    crop = MultiCrop(
        global_size=config.image_size,
        n_local=config.n_local_crops,
        local_size=config.local_size,
        global_scale=(config.global_scale_min, 1.0),
        local_scale=(config.local_scale_min, config.local_scale_max),
    )
    return Augmentation(config.aug, multicrop=crop)


def learning_rate(config: PretrainConfig, step: int, total_steps: int) -> float:
    """Linear warm-up, then constant or cosine decay, as a function of the global step."""
    per_epoch = max(1, total_steps // config.epochs)
    warmup = int(config.warmup_epochs * per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    final = config.lr * config.final_lr_ratio
    return final + 0.5 * (config.lr - final) * (1 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group at ``lr`` (the schedule's value for the step about to run)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(
    config: PretrainConfig, model: torch.nn.Module, fused: bool = True
) -> torch.optim.Optimizer:
    """The run's optimiser. ``fused`` Adam updates all parameters in one kernel (same maths, fewer
    memory passes); fused SGD is not used: it fails once frozen prototypes join without a momentum
    buffer."""
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
    )


def _new_tally(n_prototypes: int, device: torch.device) -> dict[str, Any]:
    """What an epoch accumulates; saved with mid-epoch checkpoints so a resumed epoch reports the
    same."""
    return {
        "loss": torch.zeros((), device=device, dtype=torch.float64),
        "steps": 0,
        "seconds": 0.0,
        "usage": torch.zeros(n_prototypes, dtype=torch.int64, device=device),
    }


def training_images(config: PretrainConfig) -> CifarSplit:
    """The training split a run learns from (all of it, or the preset's stratified subset), at its
    resolution."""
    train = load_cifar100("train", config.data_root or None)
    if config.train_images:
        train = train.subset(
            label_subset(train.fine, config.train_images / len(train), config.seed)
        )
    return train.resized(config.image_size)


class Pretrainer:
    """One SwAV pretraining run in ``out_dir``: builds everything, resumes, trains, saves.

    Use :func:`pretrain` for the common case; the class is there for code that needs
    the live model afterwards (the multi-process test compares ranks' weights).
    """

    def __init__(
        self, config: PretrainConfig, out_dir: str | os.PathLike, progress: bool = True
    ) -> None:
        validate_pretrain(config)
        self.config, self.out, self.progress = config, resolve(out_dir), progress
        self.ckpt_path = self.out / CHECKPOINT
        self.runtime = distributed.setup(config.device)
        validate_world(config, self.runtime.world_size)
        device = self.device = self.runtime.device
        self.bf16 = use_bf16(config.amp, device)
        # before anything runs on the device: cuBLAS reads its workspace setting once
        self.deterministic = set_deterministic() if config.deterministic else None
        self.state = load_checkpoint(self.ckpt_path) if self.ckpt_path.exists() else None
        # a field added after the checkpoint was written counts as its default (image_size: 32), as
        # it ran then
        saved = {**as_dict(PretrainConfig()), **(self.state or {}).get("config", {})}
        changed = (
            []
            if self.state is None
            else sorted(
                k
                for k, v in as_dict(config).items()
                if k not in RESUMABLE_CHANGES and saved[k] != v
            )
        )
        if changed:
            raise ValueError(
                f"'{self.ckpt_path}' was written with a different config (fields {changed}); "
                f"choose another folder with {setting('out')}, or delete it to start over"
            )
        # which pretraining this is: evaluations and feature caches of an earlier one are stale
        self.run_id = (self.state or {}).get("run_id") or secrets.token_hex(8)

        # the model's initialisation; a training step draws nothing from the global RNGs (tested),
        # so a checkpoint carries no RNG state
        torch.manual_seed(config.seed)
        # the whole split stays on the device: no loader, no per-step copies
        self.images = training_images(config).images.to(device)
        self.per_epoch = steps_per_epoch(len(self.images), config.batch_size)
        if self.per_epoch == 0:
            raise ValueError(
                f"batch_size {config.batch_size} is larger than the "
                f"{len(self.images)} training images"
            )
        self.total_steps = self.per_epoch * config.epochs
        self.freeze_steps = int(config.freeze_prototypes_epochs * self.per_epoch)

        self.model = SwAVModel(
            config.feat_dim, config.n_prototypes, config.head, config.hidden_dim
        ).to(device)
        self.batchnorm = _batchnorm_scope(self.runtime.distributed, device)
        if self.batchnorm == BN_SYNCED:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif self.batchnorm == BN_PER_RANK and self.runtime.is_main:
            print(
                "BatchNorm normalises each rank's shard alone (torch's SyncBatchNorm runs on GPUs "
                "only), so this multi-process CPU run is not the one-process run",
                file=sys.stderr,
                flush=True,
            )
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(config, self.model)
        self.augment = make_augmentation(config)
        # reseeded before every step (train_step): the views are a function of (seed, step, rank)
        self.generator = torch.Generator(device=device)
        local_batch = config.batch_size // self.runtime.world_size
        local_queue = config.queue_length // self.runtime.world_size
        if local_queue and local_queue < local_batch:
            raise ValueError(
                f"queue_length {config.queue_length} must hold at least one batch "
                f"({config.batch_size})"
            )
        self.queue = (
            torch.zeros(self.augment.n_assign, local_queue, config.feat_dim, device=device)
            if local_queue
            else None
        )
        self.queue_pushes = 0
        self.epoch, self.start_step = 0, 0
        self.metrics: dict[str, Any] = {"config": as_dict(config), "epochs": []}
        if self.state is not None:
            self._restore(self.state)
        # rank 0 measures (its weights and BN averages are the ones the checkpoint saves); the other
        # ranks wait for it at the end-of-epoch save
        self.online_knn = (
            OnlineKnn.for_run(config) if self.runtime.is_main and not self.finished else None
        )
        self.postfix: dict[str, str] = {}  # what the progress line shows after the bar
        # what runs now (a resumed run may have started elsewhere; each epoch records its own
        # precision too)
        self.metrics.update(
            device=device_name(device),
            precision=precision_name(self.bf16),
            world_size=self.runtime.world_size,
            batchnorm=self.batchnorm,
            commit=source_commit(),  # the code's git commit, for the exported model card
        )
        if self.online_knn is not None:
            self.metrics["online_knn"] = self.online_knn.describe()
        self.metrics.setdefault("alarms", [])  # a checkpoint from before the alarm has none
        self.compiled, self.compile_fallback = False, ""
        if not self.finished:  # a finished run trains nothing: no compiler to probe
            self._resolve_compile()
        self.net: torch.nn.Module = self.model
        if self.runtime.distributed:
            self.net = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if self.compiled:
            # static shapes: a run's batch and crop sizes never change (drop_last), and torch's
            # automatic dynamic shapes would otherwise compile a second run in the same process (a
            # notebook, the benchmark's next case) for a symbolic batch size: another program than
            # the one a fresh run gets
            self.net = torch.compile(self.net, dynamic=False)
        self.pending: list[
            tuple[int, torch.Tensor]
        ] = []  # losses not yet checked: no GPU sync every step

    def _resolve_compile(self) -> None:
        """Decide whether the network compiles (``auto`` probes), say so in one line where ``auto``
        runs eager, and record it with the run's other conditions."""
        runtime = self.runtime
        self.compiled, self.compile_fallback = resolve_compile(
            self.config.compile, self.device, runtime.distributed
        )
        if self.config.compile == "true":  # normalised by PretrainConfig
            # `true` asks auto's probe too: a missing toolchain stops the run in seconds, before
            # the network's own compile fails on it (the first step still names a failure that
            # only the network's compile meets)
            problem = compiler_problem(str(self.device))
            if problem:
                raise CompileError(_compile_fix(f"cannot build kernels here ({problem})"))
        if self.compile_fallback and runtime.is_main:
            print(
                f"torch.compile is off ({self.compile_fallback}); the run trains eager: the same "
                f"training without the compile speed-up ({setting('compile')} false skips this "
                "check)",
                file=sys.stderr,
                flush=True,
            )
        self.metrics.update(
            compiled=self.compiled,
            compile_fallback=self.compile_fallback or None,  # why auto ran eager
            deterministic=self.deterministic,
            # steps of `study --jobs N` run side by side: img/s and seconds are then time-shared
            shared_with_jobs=shared_with_jobs(),
        )

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if (
            state["optimizer"] is None
        ):  # an imported model (swavnb.study.transfer): finished, nothing to resume
            if not state["finished"]:
                raise ValueError(
                    f"'{self.ckpt_path}' holds no optimiser state and is unfinished: "
                    "it cannot resume"
                )
            self.metrics, self.epoch = state["metrics"], state["epoch"]
            return
        # each rank's shard, views and queue rows depend on the number of processes; checkpoints
        # from before it was saved cannot tell and resume as they did
        saved_world, world = (
            state.get("world_size", self.runtime.world_size),
            self.runtime.world_size,
        )
        if saved_world != world:
            raise ValueError(
                f"'{self.ckpt_path}' was written by {saved_world} process(es), and this run has "
                f"{world}: resume it with as many (torchrun --nproc_per_node {saved_world}, or one "
                "process for 1), or choose another folder to start over"
            )
        # an "rng" entry (checkpoints before per-step view seeds) is ignored: nothing needs it,
        # and a CUDA generator's state would not load into a CPU one
        self.optimizer.load_state_dict(state["optimizer"])
        if self.queue is not None and state["queue"] is not None:
            self.queue.copy_(self._rank_queue(state["queue"]))
        self.metrics = state["metrics"]
        self.epoch, self.start_step, self.queue_pushes = (
            state["epoch"],
            state["step"],
            state["queue_pushes"],
        )

    def _save(self, tally: dict[str, Any] | None = None) -> None:
        self._check_finite_weights()
        # every rank takes part (the queue and tally are per rank), rank 0 writes
        queue = None if self.queue is None else self._global_queue()
        tally = None if tally is None else self._global_tally(tally)
        if not self.runtime.is_main:
            return
        save_checkpoint(
            {
                "run_id": self.run_id,
                "config": as_dict(self.config),
                "model_hparams": self.model.hparams,
                "model": self.model.state_dict(),
                # a finished run resumes nothing (another epochs is another run folder): its
                # optimiser state, twice the weights' size with Adam, is not kept
                "optimizer": None if self.finished else self.optimizer.state_dict(),
                "queue": queue,
                "queue_pushes": self.queue_pushes,
                "epoch": self.epoch,
                "step": self.start_step,
                "metrics": self.metrics,
                "finished": self.finished,
                "tally": tally,
                "world_size": self.runtime.world_size,
            },
            self.ckpt_path,
        )

    def _global_queue(self) -> torch.Tensor:
        """Every rank's queue side by side on the CPU: (n_assign, queue_length, D)."""
        if not self.runtime.distributed:
            return self.queue.cpu()
        parts = [torch.empty_like(self.queue) for _ in range(self.runtime.world_size)]
        torch.distributed.all_gather(parts, self.queue)
        return torch.cat(parts, dim=1).cpu()

    def _rank_queue(self, saved: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a queue saved by :meth:`_global_queue`."""
        local, world = self.queue.shape[1], self.runtime.world_size
        if saved.shape[1] != local * world:
            raise ValueError(
                f"'{self.ckpt_path}' holds a queue of {saved.shape[1]} rows, which {world} "
                f"processes cannot share as {local} each; resume with as many processes as it ran"
            )
        return saved[:, self.runtime.rank * local : (self.runtime.rank + 1) * local]

    def _global_tally(self, tally: dict[str, Any]) -> dict[str, Any]:
        """The epoch's tally so far with loss and usage summed over the ranks, on the CPU (rank 0
        resumes with the sums, the other ranks from zero)."""
        summed = dict(tally)
        if self.runtime.distributed:
            for key in ("loss", "usage"):
                summed[key] = tally[key].clone()
                torch.distributed.all_reduce(summed[key])
        return {k: v.cpu() if torch.is_tensor(v) else v for k, v in summed.items()}

    def _last_save(self) -> str:
        """What a stopped run leaves to resume from, as its error says it: a checkpoint only where
        one was saved."""
        if self.ckpt_path.is_file():
            saved = shown(self.ckpt_path)
            return f"The last checkpoint '{saved}' is intact: rerunning resumes from it."
        return "No checkpoint was saved yet: a rerun starts from the beginning."

    def _check_finite(self, lr: float) -> None:
        """Raise on the first NaN/inf loss since the last check, before anything is saved."""
        if not self.pending:
            return
        losses = torch.stack([loss for _, loss in self.pending])
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step, value = self.pending[int(bad[0])][0], losses[int(bad[0])].item()
            raise NonFiniteLossError(
                f"loss is {value} at epoch {self.epoch} step {step} (lr {lr:.3g}); lower "
                f"{setting('lr')}, add warm-up (--warmup_epochs), or try {setting('amp')} false. "
                f"{self._last_save()}"
            )
        self.pending.clear()

    def _check_finite_weights(self) -> None:
        """Raise before a save on a NaN/inf weight: an overflowing gradient breaks the weights
        under a finite loss, and the checkpoint the save would replace is the last good one."""
        weights = {n: t for n, t in self.model.state_dict().items() if t.is_floating_point()}
        # one flag per tensor, reduced on the device: one host sync per save, not one per tensor
        finite = torch.stack([torch.isfinite(t).all() for t in weights.values()])
        if not bool(finite.all()):
            name = list(weights)[int((~finite).nonzero()[0])]
            raise NonFiniteLossError(
                f"weight '{name}' is NaN or inf after {self.epoch} epochs and "
                f"{self.start_step} steps though the loss was finite (an overflowing "
                f"gradient); lower {setting('lr')}, add warm-up (--warmup_epochs), or try "
                f"{setting('amp')} false. {self._last_save()}"
            )

    def make_views(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Augmented views of the images ``index``, made on the device."""
        views = self.augment(self.images[index], self.generator)
        if self.config.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    def forward(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with autocast(self.device, self.bf16):
            return self.net(views)

    def loss(self, scores: list[torch.Tensor]) -> torch.Tensor:
        """Swapped prediction over the views, with queued embeddings joining Sinkhorn once the queue
        is full."""
        config, n_assign, queue_scores = self.config, self.augment.n_assign, None
        use_queue = self.queue is not None and self.epoch >= config.queue_start_epoch
        if use_queue and self.queue_pushes * len(scores[0]) >= self.queue.shape[1]:
            with torch.no_grad():
                queue_scores = [
                    F.linear(self.queue[i], self.model.prototypes.weight) for i in range(n_assign)
                ]
        return swav_loss(
            scores,
            n_assign,
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
            with torch.no_grad():
                batch = len(embeddings[0])
                self.queue[:, batch:] = self.queue[:, :-batch].clone()
                self.queue[:, :batch] = torch.stack(
                    [e.detach() for e in embeddings[: self.augment.n_assign]]
                )
            self.queue_pushes += 1

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
        with _compile_failure_names_the_fix():
            embeddings, scores = self.forward(views)
            phase_done("forward")
            loss = self.loss(scores)
            phase_done("sinkhorn_loss")
            self.update(loss, embeddings, global_step)
        phase_done("backward_update")
        return loss.detach(), scores[0].detach()

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

    def _run_epoch(self, bar: tqdm) -> None:
        config, runtime, device = self.config, self.runtime, self.device
        self.model.train()
        resumed = self.state is not None and self.start_step and self.state["tally"] is not None
        tally = self.state["tally"] if resumed else _new_tally(config.n_prototypes, device)
        tally = {k: v.to(device) if torch.is_tensor(v) else v for k, v in tally.items()}
        if resumed and not runtime.is_main:  # rank 0 carries the saved sums over the ranks
            tally["loss"].zero_()
            tally["usage"].zero_()
        tic, steps_since, lr = time.perf_counter(), 0, config.lr
        batches = batch_indices(
            len(self.images),
            config.batch_size,
            config.seed,
            self.epoch,
            device,
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
                self._check_finite(lr)
                speed = steps_since * config.batch_size / (time.perf_counter() - tic)
                self.postfix.update(loss=f"{loss.item():.3f}", lr=f"{lr:.2g}", img_s=f"{speed:.0f}")
                bar.set_postfix(self.postfix)
            every = config.checkpoint_every_steps
            if every and (step + 1) % every == 0 and step + 1 < self.per_epoch:
                self._check_finite(lr)
                tally["seconds"] += time.perf_counter() - tic
                tic, steps_since = time.perf_counter(), 0
                self.start_step = step + 1
                self._save(tally)
        self._check_finite(lr)
        tally["seconds"] += time.perf_counter() - tic
        if runtime.distributed:
            torch.distributed.all_reduce(tally["loss"])
            torch.distributed.all_reduce(tally["usage"])
            tally["loss"] /= runtime.world_size
        self.metrics["epochs"].append(
            {
                "epoch": self.epoch + 1,
                "loss": tally["loss"].item() / tally["steps"],
                "lr": lr,
                "img_per_s": tally["steps"] * config.batch_size / tally["seconds"],
                "seconds": tally["seconds"],
                "precision": precision_name(self.bf16),
                **usage_summary(tally["usage"]),
            }
        )
        self.epoch, self.start_step, self.state = self.epoch + 1, 0, None

    def _monitor(self, bar: tqdm) -> None:
        """After an epoch: the online k-NN (not part of the epoch's seconds) and the collapse
        alarm, into the epoch's record, the progress line and, for an alarm, one line."""
        record = self.metrics["epochs"][-1]
        if self.online_knn is not None:
            with torch.no_grad():
                record.update(
                    self.online_knn.measure(
                        self.model.backbone, self.device, self.bf16, self.config.channels_last
                    )
                )
            self.postfix["knn"] = f"{record['online_knn_top1']:.1f}%"
            bar.set_postfix(self.postfix)
        raised = [alarm["kind"] for alarm in self.metrics["alarms"]]
        alarms = collapse_alarms(record, self.config.n_prototypes, raised)
        if alarms:
            line = alarm_line(alarms, self.config)
            self.metrics["alarms"].extend({**alarm, "message": line} for alarm in alarms)
            if self.runtime.is_main:
                bar.write(line, file=sys.stderr)

    def fit(self) -> dict[str, Any]:
        """Train until ``config.epochs``, saving after every epoch; returns the metrics."""
        if self.finished:
            if self.runtime.is_main and not readable_json(self.out / METRICS):
                with self._owned():  # a damaged copy of the checkpoint's metrics is rewritten
                    write_json(self.out / METRICS, self.metrics)
            return self.metrics
        with self._owned():
            return self._fit()

    @contextlib.contextmanager
    def _owned(self) -> Iterator[None]:
        """The run folder's lock and manifest, held by the rank that writes (rank 0)."""
        if not self.runtime.is_main:
            yield
            return
        with run_guard.locked(self.out, "pretraining run folder"):
            run_guard.claim(self.out, pretrain_identity(self.config), self.run_id, (METRICS,))
            yield

    def _fit(self) -> dict[str, Any]:
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
                self._monitor(bar)
                self._save()
                if self.runtime.is_main:
                    write_json(self.out / METRICS, self.metrics)
        distributed.barrier()
        return self.metrics


# which images BatchNorm's batch statistics cover, as metrics.json records it
BN_BATCH, BN_SYNCED, BN_PER_RANK = "batch", "global batch (SyncBatchNorm)", "each rank's shard"


def _batchnorm_scope(distributed: bool, device: torch.device) -> str:
    """:data:`BN_SYNCED` under torchrun on CUDA, :data:`BN_PER_RANK` elsewhere under torchrun
    (torch's SyncBatchNorm refuses CPU tensors), :data:`BN_BATCH` in one process."""
    if not distributed:
        return BN_BATCH
    return BN_SYNCED if device.type == "cuda" else BN_PER_RANK


def pretrain(
    config: PretrainConfig, out_dir: str | os.PathLike, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume, or skip if finished) SwAV pretraining into ``out_dir``.

    Writes ``checkpoint.pt`` atomically after every epoch (and every
    ``checkpoint_every_steps``) and ``metrics.json`` with per-epoch loss, lr, img/s,
    seconds, prototype-usage diagnostics and the online k-NN top-1
    (:mod:`swavnb.pretraining.online_knn`), and the collapse alarms raised
    (:mod:`swavnb.pretraining.alarm`). Rerunning the same call after an
    interruption continues from the last checkpoint and ends with the same weights
    as an uninterrupted run (same seed, same device).

    A folder whose manifest names another run that stopped before its first save is taken over
    (:mod:`swavnb.base.unfinished`).

    Raises:
        RunFolderError: ``out_dir`` holds another run (:mod:`swavnb.base.run_guard`).
        RunFolderBusy: another process is writing ``out_dir``.

    Returns:
        The metrics dict (also in ``metrics.json``).
    """
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 holds the folder for all
        return Pretrainer(config, out_dir, progress).fit()
    out = resolve(out_dir)
    # claimed before anything loads, so a second process is refused at once, not after the data
    with run_guard.locked(out, "pretraining run folder"):
        identity = pretrain_identity(config)
        take_over(out, identity, PRETRAINING_RESULTS)  # a run that stopped before its first save
        run_guard.check_identity(out, identity, another_folder())
        return Pretrainer(config, out, progress).fit()

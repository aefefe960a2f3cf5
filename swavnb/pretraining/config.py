"""The pretraining config and the study's named presets of it.

A preset is a set of field values; any field can be overridden on the command line
(``--field value``) or from a notebook's parameters cell. The evaluations' config is
:mod:`swavnb.evaluation.config`.
"""

from __future__ import annotations

from typing import Any

from swavnb.base.compiling import check_compile
from swavnb.base.config import as_dict, build, changes_run, run_config, run_fields, runtime
from swavnb.base.field_checks import TEST_POOL, TRAIN_POOL, at_least, finite, image_count, refuse
from swavnb.base.precision import check_amp
from swavnb.data.cifar import check_image_size

PRESETS = ("paper", "swav", "quick", "smoke")


@run_config
class PretrainConfig:
    """Everything that defines a SwAV pretraining run (saved inside its checkpoint)."""

    preset: str = changes_run("paper")
    aug: str = changes_run(
        "jitter"
    )  # view strategy: the reference report's `jitter` / `flip`, or `swav`
    seed: int = changes_run(0)  # fixes init, batch order and augmentation draws
    data_root: str = runtime("")  # '' = $SWAVNB_DATA, else ./data
    # 0 = all 50,000; a stratified subset (>= 1 per class) keeps CPU presets short
    train_images: int = changes_run(0)
    # CIFAR's 32 px; 16 (2x2 block means) makes ResNet-18 cheaper, for CPU presets
    image_size: int = changes_run(32)
    # network (the reference report's sec. 3.2-3.3)
    head: str = changes_run("linear")  # the reference report's linear projection; SwAV's is `mlp`
    feat_dim: int = changes_run(128)  # size of the normalised embedding
    hidden_dim: int = changes_run(2048)  # MLP head width
    n_prototypes: int = changes_run(3000)  # K; the reference report and SwAV's CIFAR runs use 3000
    # clustering and loss (the reference report's eq. 3-4, 12)
    temperature: float = changes_run(0.1)
    epsilon: float = changes_run(0.05)  # Sinkhorn sharpness; lower it only with care (peaky codes)
    sinkhorn_iters: int = changes_run(3)
    # SwAV keeps prototypes fixed early so they are not dragged to one cluster
    freeze_prototypes_epochs: float = changes_run(0.0)
    # embeddings kept from past batches make equipartition meaningful for small batches
    queue_length: int = changes_run(0)
    queue_start_epoch: int = changes_run(0)  # the queue only helps once features settle
    # multi-crop (`swav` augmentation only)
    n_local_crops: int = changes_run(4)
    local_size: int = changes_run(16)  # local crops' side in px (about half of image_size)
    global_scale_min: float = changes_run(0.14)
    local_scale_min: float = changes_run(0.05)
    local_scale_max: float = changes_run(0.14)
    # optimisation
    epochs: int = changes_run(100)
    batch_size: int = changes_run(256)  # global batch: split across ranks under torchrun
    optimizer: str = changes_run("adam")  # the reference report's; or sgd (momentum 0.9)
    lr: float = changes_run(1e-3)
    weight_decay: float = changes_run(0.0)
    warmup_epochs: float = changes_run(0.0)  # protects the randomly initialised prototypes
    schedule: str = changes_run("constant")  # constant (the reference report) or cosine
    final_lr_ratio: float = changes_run(0.001)  # cosine ends at lr * this
    # runtime
    device: str = runtime("auto")  # auto = the GPU when there is one
    # bf16 autocast for the backbone (Sinkhorn and the loss stay float32) only where the hardware
    # runs bf16 natively: emulated bf16 is far slower than float32 (docs/precision.md)
    amp: str = runtime("auto")
    # faster convolutions on GPUs and oneDNN CPUs; another summation order, so part of the run
    channels_last: bool = changes_run(True)
    # auto = where a probe finds the compiler working, in single-process runs: it does not pay for
    # the short CPU presets (docs/performance.md)
    compile: str = runtime("auto")
    # deterministic cuDNN/torch algorithms (process-wide): a CUDA run repeatable at some speed
    deterministic: bool = runtime(False)
    checkpoint_every_steps: int = runtime(0)  # extra mid-epoch checkpoints (0 = once per epoch)
    log_every_steps: int = runtime(10)
    # the online k-NN after every epoch (swavnb.pretraining.online_knn), on its own generator so
    # the training is the same without it: labelled pool images (0 = off) and test images, within
    # 5 % of an epoch (docs/performance.md)
    online_knn_pool: int = runtime(1000)
    online_knn_test: int = runtime(500)

    def __post_init__(self) -> None:
        # a bool from a notebook reads as true / false
        self.amp = check_amp(self.amp)
        self.compile = check_compile(self.compile)


# one preset a few lines, each line one concern: a table to read across, kept as written
# fmt: off
_PRETRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # the reference report's setup, for a GPU
    "paper": {},
    # a recipe meant to beat the reference report: SwAV's own choices as lightly / solo-learn run
    # them on CIFAR
    "swav": dict(
        aug="swav", head="mlp", epochs=200,
        optimizer="sgd", lr=0.12, weight_decay=5e-4, warmup_epochs=10, schedule="cosine",
        freeze_prototypes_epochs=1, queue_length=3840, queue_start_epoch=30,
    ),
    # the whole study in < 30 min on a 2-core CPU: 16 px images (ResNet-18 ~3x cheaper) and a recipe
    # that leaves SwAV's log K plateau within ~600 steps of batch 64 (docs/presets.md): SGD +
    # warm-up + cosine, MLP head, 300 prototypes (3000 need far larger batches or a queue) and a
    # sharper Sinkhorn (epsilon 0.02: at 0.05 the codes of near-identical early embeddings are
    # almost uniform, so the loss sits at log K and nothing is learned)
    "quick": dict(
        image_size=16, local_size=8, n_local_crops=2, train_images=9000, epochs=4, batch_size=64,
        head="mlp", n_prototypes=300, epsilon=0.02,
        optimizer="sgd", lr=0.1, weight_decay=1e-5, warmup_epochs=1, schedule="cosine",
        freeze_prototypes_epochs=0.5, log_every_steps=5, compile="false",
    ),
    # seconds, for tests: 16 px (4x cheaper than 32) keeps the suite within minutes on a
    # float32-only CPU
    "smoke": dict(
        train_images=200, image_size=16, local_size=8, n_prototypes=30, feat_dim=16, hidden_dim=32,
        epochs=2, batch_size=32, n_local_crops=2, log_every_steps=1, compile="false",
        # one image per class each: the online k-NN at the least it costs, as the tests need
        online_knn_pool=100, online_knn_test=100,
    ),
}
# fmt: on


def pretrain_config(preset: str = "quick", **overrides: Any) -> PretrainConfig:
    """The preset's pretraining config with ``overrides`` applied (strings are parsed)."""
    config = build(PretrainConfig, _PRETRAIN_PRESETS, preset, overrides)
    validate_pretrain(config)
    return config


def preset_changes(config: PretrainConfig) -> dict[str, Any]:
    """The fields that change the run in which ``config`` differs from the study's run of its
    preset, aug and seed; a run with any has a folder of its own."""
    study = run_fields(pretrain_config(config.preset, aug=config.aug, seed=config.seed))
    return {k: v for k, v in run_fields(config).items() if study[k] != v}


def validate_pretrain(config: PretrainConfig, world_size: int = 1) -> None:
    """Fail before any work is done, naming every bad field and its valid values.

    Args:
        world_size: the processes the run trains on: the global batch and queue split evenly over
            them, or samples would weigh unequally (DDP averages each rank's mean).
    """
    from swavnb.method.augment import AUGMENTATIONS
    from swavnb.method.model import HEADS

    choices = {
        "aug": AUGMENTATIONS,
        "head": HEADS,
        "optimizer": ("adam", "sgd"),
        "schedule": ("constant", "cosine"),
    }
    for name, valid in choices.items():
        if getattr(config, name) not in valid:
            raise ValueError(
                f"unknown {name} {getattr(config, name)!r}; choose one of {', '.join(valid)}"
            )
    check_image_size(config.image_size)
    if not 1 <= config.local_size <= config.image_size:
        raise ValueError(
            f"local_size must be in [1, image_size={config.image_size}], got {config.local_size}"
        )
    refuse(_problems(config))
    images = config.train_images or TRAIN_POOL
    if config.batch_size > images:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the {images:,} training images; "
            "choose a smaller batch_size or more train_images"
        )
    for name in ("batch_size", "queue_length"):
        if (value := getattr(config, name)) % world_size:
            raise ValueError(
                f"{name} {value} does not split evenly over {world_size} processes; choose a "
                f"multiple of {world_size} (--{name}) or launch a number of processes that "
                "divides it"
            )


def _problems(config: PretrainConfig) -> list[str]:
    """What is wrong with the numeric fields, each in a few words."""
    positive = ("epochs", "batch_size", "n_prototypes", "feat_dim", "hidden_dim", "sinkhorn_iters")
    problems = at_least(config, 1, (*positive, "log_every_steps"))
    problems += at_least(
        config, 0, ("queue_start_epoch", "n_local_crops", "checkpoint_every_steps")
    )
    problems += finite(config, ("lr", "epsilon", "temperature"))
    problems += finite(
        config,
        ("weight_decay", "warmup_epochs", "freeze_prototypes_epochs", "final_lr_ratio"),
        positive=False,
    )
    problems += image_count(config, "train_images", TRAIN_POOL)
    if config.queue_length < 0:
        problems.append(
            f"queue_length must be 0 (no queue) or at least batch_size ({config.batch_size}), "
            f"got {config.queue_length}"
        )
    elif config.queue_length and config.queue_length < config.batch_size:
        problems.append(
            f"queue_length {config.queue_length} must hold at least one batch "
            f"({config.batch_size}); use 0 for no queue"
        )
    for name, pool in (("online_knn_pool", TRAIN_POOL), ("online_knn_test", TEST_POOL)):
        if not 0 <= getattr(config, name) <= pool:
            problems.append(
                f"{name} must be in [0, {pool:,}] (CIFAR-100's images), got "
                f"{getattr(config, name)}; online_knn_pool 0 switches the online k-NN off"
            )
    if config.online_knn_pool and not config.online_knn_test:
        problems.append(
            "online_knn_test is 0 while online_knn_pool is not: the online k-NN needs test "
            "images; set online_knn_pool 0 to switch it off"
        )
    return problems


__all__ = ["PRESETS", "PretrainConfig", "pretrain_config", "validate_pretrain", "as_dict"]

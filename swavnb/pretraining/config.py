"""Typed run configurations and the named presets of the study.

A preset is a set of field values; any field can be overridden on the command line
(``--field value``) or from a notebook's parameters cell.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from swavnb.base.compiling import check_compile
from swavnb.base.precision import check_amp
from swavnb.data.cifar import check_image_size

PRESETS = ("paper", "swav", "quick", "smoke")
MODES = ("finetune", "linear")
FRACTIONS = (0.01, 0.1, 0.3, 0.4, 1.0)
# BN statistics behind frozen features: recomputed on the labelled pool, or pretraining's averages
BN_STATS = ("precise", "ema")


def check_bn_stats(bn_stats: str) -> str:
    """``bn_stats`` itself if it is one of :data:`BN_STATS`; otherwise a ValueError naming the
    choices."""
    if bn_stats not in BN_STATS:
        raise ValueError(f"unknown bn_stats {bn_stats!r}; choose one of {', '.join(BN_STATS)}")
    return bn_stats


# where the data lives, the device, its precision (bf16 or float32: the same training within bf16
# noise), compiling, the choice of deterministic kernels, how often a run logs or saves and what it
# measures on the side (the online k-NN) do not change what it trains: a run may resume with other
# values (another machine), and they name no run folder
RESUMABLE_CHANGES = frozenset(
    {
        "data_root",
        "device",
        "compile",
        "deterministic",
        "amp",
        "log_every_steps",
        "checkpoint_every_steps",
        "online_knn_pool",
        "online_knn_test",
    }
)


@dataclass
class PretrainConfig:
    """Everything that defines a SwAV pretraining run (saved inside its checkpoint)."""

    preset: str = "paper"
    aug: str = "jitter"  # view strategy: the reference report's `jitter` / `flip`, or `swav`
    seed: int = 0  # fixes init, batch order and augmentation draws: the run is reproducible
    data_root: str = ""  # '' = $SWAVNB_DATA, else ./data
    train_images: int = (
        0  # 0 = all 50,000; a stratified subset (>= 1 per class) keeps CPU presets short
    )
    image_size: int = (
        32  # CIFAR's 32 px; 16 (2x2 block means) costs ResNet-18 ~3x less, for CPU presets
    )
    # network (seed sec. 3.2-3.3)
    head: str = "linear"  # the reference report's linear projection; SwAV's is `mlp`
    feat_dim: int = 128  # size of the normalised embedding
    hidden_dim: int = 2048  # MLP head width
    n_prototypes: int = 3000  # K; the reference report and SwAV's CIFAR runs use 3000
    # clustering and loss (seed eq. 3-4, 12)
    temperature: float = 0.1
    epsilon: float = 0.05  # Sinkhorn sharpness; lower it only with care (codes get peaky)
    sinkhorn_iters: int = 3
    freeze_prototypes_epochs: float = (
        0.0  # SwAV keeps prototypes fixed early so they are not dragged to one cluster
    )
    queue_length: int = (
        0  # embeddings kept from past batches to make equipartition meaningful for small batches
    )
    queue_start_epoch: int = 0  # the queue only helps once the features stop changing fast
    # multi-crop (`swav` augmentation only)
    n_local_crops: int = 4
    local_size: int = 16  # local crops' side in px (about half of image_size)
    global_scale_min: float = 0.14
    local_scale_min: float = 0.05
    local_scale_max: float = 0.14
    # optimisation
    epochs: int = 100
    batch_size: int = 256  # global batch: split across ranks under torchrun
    optimizer: str = "adam"  # the reference report's; or sgd (momentum 0.9, as SwAV CIFAR recipes)
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up protects the randomly initialised prototypes
    schedule: str = "constant"  # constant (the reference report) or cosine
    final_lr_ratio: float = 0.001  # cosine ends at lr * this
    # runtime
    device: str = "auto"  # auto = the GPU when there is one
    # bf16 autocast for the backbone (Sinkhorn and the loss stay float32): auto = only where the
    # hardware runs bf16 natively (a bf16 GPU, an AVX512_BF16 / AMX CPU), since emulated bf16 is
    # 5-90x slower than float32
    amp: str = "auto"
    channels_last: bool = True  # faster convolutions on GPUs and oneDNN CPUs
    # torch.compile the network: it pays at batch 256 and not for the short CPU presets, which would
    # also wait for the compile (docs/performance.md); auto = where a probe finds the compiler
    # working, in single-process runs (swavnb.base.compiling)
    compile: str = "auto"
    # cuDNN's and torch's deterministic algorithms, Inductor without autotuning: makes a CUDA run
    # repeatable at some speed (the CPU's kernels are deterministic anyway); process-wide flags
    deterministic: bool = False
    checkpoint_every_steps: int = 0  # extra mid-epoch checkpoints (0 = once per epoch)
    log_every_steps: int = 10
    # weighted k-NN top-1 after every epoch (swavnb.pretraining.online_knn): a stratified pool of
    # about this many labelled training images (0 = no online k-NN) ...
    online_knn_pool: int = 1000
    # ... and of test images; both drawn from the seed by their own generator, so the training is
    # the same with or without it (1,000 + 500 cost 3 % of a quick epoch, 1,000 + 1,000 4 %: too
    # close to the 5 % budget; docs/monitoring.md)
    online_knn_test: int = 500

    def __post_init__(self) -> None:
        # a bool from a notebook or an older checkpoint reads as true / false
        self.amp = check_amp(self.amp)
        self.compile = check_compile(self.compile)


@dataclass
class FinetuneConfig:
    """Supervised evaluation of a pretrained (or random) backbone on a label fraction."""

    preset: str = "paper"
    seed: int = 0  # fixes the label subset, the classifier init and the batch order
    data_root: str = ""
    train_images: int = 0  # size of the labelled pool the fractions are taken from (0 = 50,000)
    test_images: int = 0  # 0 = the full 10,000-image test set; CPU presets use a stratified subset
    image_size: int = 32  # must be the resolution the checkpoint was pretrained at
    epochs: int = 30  # passes over the labelled subset ...
    min_steps: int = 200  # ... but at least this many steps, so 1 % of the labels still trains
    batch_size: int = 256
    lr_head: float = 0.1  # SwAV's semi-supervised runs: a fast head ...
    lr_backbone: float = 0.01  # ... on a slowly moving pretrained backbone
    weight_decay: float = 5e-4
    linear_epochs: int = 100  # linear probe on cached features: cheap, so trained to convergence
    linear_lr: float = 1e-3
    n_evals: int = 5  # test-set evaluations spread over training (for the curves)
    knn_k: tuple[int, ...] = (20, 200)
    knn_temperature: float = 0.07
    tsne_images: int = 2000  # t-SNE is quadratic-ish: a stratified sample of the test set
    # BN statistics behind frozen features (linear, k-NN, t-SNE): "precise" recomputes them on the
    # clean labelled pool, the same way for every encoder; "ema" keeps pretraining's running
    # averages, taken over augmented views (with multi-crop, small local crops last) and for a
    # random-init backbone over nothing (mean 0, variance 1)
    bn_stats: str = "precise"
    device: str = "auto"
    amp: str = "auto"  # as PretrainConfig.amp: bf16 only where the hardware runs it natively
    channels_last: bool = True

    def __post_init__(self) -> None:
        self.amp = check_amp(self.amp)


_PRETRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # the reference report's setup, for a GPU
    "paper": {},
    # a recipe meant to beat the reference report: SwAV's own choices as lightly / solo-learn run
    # them on CIFAR
    "swav": dict(
        aug="swav",
        head="mlp",
        epochs=200,
        optimizer="sgd",
        lr=0.12,
        weight_decay=5e-4,
        warmup_epochs=10,
        schedule="cosine",
        freeze_prototypes_epochs=1,
        queue_length=3840,
        queue_start_epoch=30,
    ),
    # the whole study in < 30 min on a 2-core CPU: 16 px images (ResNet-18 ~3x cheaper) and a recipe
    # that leaves SwAV's log K plateau within ~600 steps of batch 64 (docs/presets.md): SGD +
    # warm-up + cosine, MLP head, 300 prototypes (3000 need far larger batches or a queue) and a
    # sharper Sinkhorn (epsilon 0.02: at 0.05 the codes of near-identical early embeddings are
    # almost uniform, so the loss sits at log K and nothing is learned)
    "quick": dict(
        image_size=16,
        local_size=8,
        n_local_crops=2,
        train_images=9000,
        epochs=4,
        batch_size=64,
        head="mlp",
        n_prototypes=300,
        epsilon=0.02,
        optimizer="sgd",
        lr=0.1,
        weight_decay=1e-5,
        warmup_epochs=1,
        schedule="cosine",
        freeze_prototypes_epochs=0.5,
        log_every_steps=5,
        compile="false",
    ),
    # seconds, for tests: 16 px (4x cheaper than 32) keeps the suite within minutes on a
    # float32-only CPU
    "smoke": dict(
        train_images=200,
        image_size=16,
        local_size=8,
        n_prototypes=30,
        feat_dim=16,
        hidden_dim=32,
        epochs=2,
        batch_size=32,
        n_local_crops=2,
        log_every_steps=1,
        compile="false",
        # one image per class each: the online k-NN at the least it costs, as the tests need
        online_knn_pool=100,
        online_knn_test=100,
    ),
}
_FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "swav": {},
    # 16 px like its pretraining, a 5,000-image labelled pool (50 per class), a 2,000-image
    # stratified test subset; fine-tuning trained where the study fine-tunes until more steps stop
    # helping: 500 labels for 50 epochs (400 steps; 800 give random init +0.25 top-1 and swav -0.75,
    # docs/presets.md), 100 labels for 200 steps
    "quick": dict(
        image_size=16,
        train_images=5000,
        test_images=2000,
        epochs=50,
        min_steps=200,
        batch_size=64,
        linear_epochs=30,
        n_evals=2,
        tsne_images=1000,
    ),
    "smoke": dict(
        image_size=16,
        train_images=200,
        test_images=100,
        epochs=1,
        min_steps=3,
        batch_size=32,
        linear_epochs=5,
        n_evals=2,
        knn_k=(5, 20),
        tsne_images=100,
    ),
}


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def parse_value(value: Any, kind: Any, name: str) -> Any:
    """Turn a command-line / papermill value into the field's type."""
    if not isinstance(value, str):
        if kind is float and isinstance(value, int):
            return float(value)
        if kind == tuple[int, ...] and isinstance(value, (list, tuple)):
            return tuple(int(v) for v in value)
        return value
    try:
        if kind is bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if kind == tuple[int, ...]:
            return tuple(int(v) for v in value.replace(",", " ").split())
        return kind(value)
    except ValueError as error:
        raise ValueError(
            f"--{name}: cannot read {value!r} as {getattr(kind, '__name__', kind)}"
        ) from error


def _build(
    cls: type, presets: dict[str, dict[str, Any]], preset: str, overrides: dict[str, Any]
) -> Any:
    _check_preset(preset)
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} field(s) {unknown}; valid fields: {', '.join(sorted(names))}"
        )
    values = {**presets[preset], **{k: v for k, v in overrides.items() if v is not None}}
    parsed = {k: parse_value(v, hints[k], k) for k, v in values.items()}
    return cls(**{**parsed, "preset": preset})


def pretrain_config(preset: str = "quick", **overrides: Any) -> PretrainConfig:
    """The preset's pretraining config with ``overrides`` applied (strings are parsed)."""
    config = _build(PretrainConfig, _PRETRAIN_PRESETS, preset, overrides)
    validate_pretrain(config)
    return config


def preset_changes(config: PretrainConfig) -> dict[str, Any]:
    """The fields in which ``config`` trains otherwise than the study's run of its preset, aug and
    seed (those a run may resume with changed left out); a run with any has a folder of its own.
    """
    study = as_dict(pretrain_config(config.preset, aug=config.aug, seed=config.seed))
    return {
        k: v for k, v in as_dict(config).items() if k not in RESUMABLE_CHANGES and study[k] != v
    }


def finetune_config(preset: str = "quick", **overrides: Any) -> FinetuneConfig:
    """The preset's evaluation config with ``overrides`` applied (strings are parsed)."""
    config = _build(FinetuneConfig, _FINETUNE_PRESETS, preset, overrides)
    validate_finetune(config)
    return config


# the pools a run's image counts are taken from: CIFAR-100's training and test splits
TRAIN_POOL, TEST_POOL = 50_000, 10_000


def _at_least(config: Any, minimum: int, names: tuple[str, ...]) -> list[str]:
    return [
        f"{name} must be >= {minimum}, got {getattr(config, name)}"
        for name in names
        if getattr(config, name) < minimum
    ]


def _finite(config: Any, names: tuple[str, ...], positive: bool = True) -> list[str]:
    """Each of ``names`` a finite number, > 0 (``positive``) or >= 0: an inf or NaN rate trains on
    a NaN loss."""
    bound = "> 0" if positive else ">= 0"
    return [
        f"{name} must be a finite number {bound}, got {value}"
        for name in names
        if not math.isfinite(value := getattr(config, name))
        or (value <= 0 if positive else value < 0)
    ]


def _image_count(config: Any, name: str, pool: int) -> list[str]:
    """``name`` 0 (the whole pool) or a class-stratified subset of at most ``pool`` images."""
    count = getattr(config, name)
    if 0 <= count <= pool:
        return []
    return [
        f"{name} must be 0 (all {pool:,} images) or 1 to {pool:,} (a class-stratified subset, at "
        f"least one image per class), got {count}"
    ]


def _refuse(problems: list[str]) -> None:
    """One line naming every bad field."""
    if problems:
        raise ValueError("; ".join(problems))


def validate_pretrain(config: PretrainConfig) -> None:
    """Fail before any work is done, naming every bad field and its valid values."""
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
    problems = _at_least(
        config,
        1,
        (
            "epochs",
            "batch_size",
            "n_prototypes",
            "feat_dim",
            "hidden_dim",
            "sinkhorn_iters",
            "log_every_steps",
        ),
    )
    problems += _at_least(
        config, 0, ("queue_start_epoch", "n_local_crops", "checkpoint_every_steps")
    )
    problems += _finite(config, ("lr", "epsilon", "temperature"))
    problems += _finite(
        config,
        ("weight_decay", "warmup_epochs", "freeze_prototypes_epochs", "final_lr_ratio"),
        positive=False,
    )
    problems += _image_count(config, "train_images", TRAIN_POOL)
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
    _refuse(problems)
    images = config.train_images or TRAIN_POOL
    if config.batch_size > images:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the {images:,} training images; "
            "choose a smaller batch_size or more train_images"
        )


def validate_finetune(config: FinetuneConfig) -> None:
    """Fail before any folder is claimed or any data is read, naming every bad field and its valid
    values (as :func:`validate_pretrain`)."""
    check_image_size(config.image_size)
    check_bn_stats(config.bn_stats)
    problems = _at_least(config, 1, ("batch_size", "n_evals", "tsne_images"))
    problems += _at_least(config, 0, ("epochs", "min_steps", "linear_epochs"))
    # steps = max(min_steps, epochs * batches per epoch): both 0 would train nothing
    for epochs in ("epochs", "linear_epochs"):
        if getattr(config, epochs) == 0 and config.min_steps == 0:
            problems.append(f"{epochs} and min_steps are both 0: set either to 1 or more")
    problems += _finite(config, ("lr_head", "linear_lr", "knn_temperature"))
    # lr_backbone 0 fine-tunes the head on a frozen (pretrained) backbone
    problems += _finite(config, ("lr_backbone", "weight_decay"), positive=False)
    problems += _image_count(config, "train_images", TRAIN_POOL)
    problems += _image_count(config, "test_images", TEST_POOL)
    if not config.knn_k or min(config.knn_k) < 1:
        problems.append(f"knn_k must be one or more neighbour counts >= 1, got {config.knn_k}")
    _refuse(problems)


def validate_world(config: PretrainConfig, world_size: int) -> None:
    """Fail unless the global batch and queue split evenly over ``world_size`` processes: uneven
    shards would weight samples unequally (DDP averages each rank's mean) and overflow a rank's
    queue."""
    for name in ("batch_size", "queue_length"):
        value = getattr(config, name)
        if value % world_size:
            raise ValueError(
                f"{name} {value} does not split evenly over {world_size} processes; choose a "
                f"multiple of {world_size} (--{name}) or launch a number of processes that "
                "divides it"
            )


def as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


__all__ = [
    "PRESETS",
    "MODES",
    "FRACTIONS",
    "PretrainConfig",
    "FinetuneConfig",
    "pretrain_config",
    "finetune_config",
    "validate_pretrain",
    "validate_finetune",
    "as_dict",
]

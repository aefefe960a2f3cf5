"""The evaluations' config (fine-tuning, the linear probe, k-NN and the other probes) and its
presets, named as the pretraining's (:mod:`swavnb.pretraining.config`)."""

from __future__ import annotations

from typing import Any

from swavnb.base.config import build, changes_run, run_config, runtime
from swavnb.base.field_checks import TEST_POOL, TRAIN_POOL, at_least, finite, image_count, refuse
from swavnb.base.precision import check_amp
from swavnb.data.cifar import check_image_size

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


@run_config
class FinetuneConfig:
    """Supervised evaluation of a pretrained (or random) backbone on a label fraction."""

    preset: str = changes_run("paper")
    seed: int = changes_run(0)  # fixes the label subset, the classifier init and the batch order
    data_root: str = runtime("")
    # size of the labelled pool the fractions are taken from (0 = 50,000)
    train_images: int = changes_run(0)
    # 0 = the full 10,000-image test set; CPU presets use a stratified subset
    test_images: int = changes_run(0)
    image_size: int = changes_run(32)  # must be the resolution the checkpoint was pretrained at
    epochs: int = changes_run(30)  # passes over the labelled subset ...
    min_steps: int = changes_run(200)  # ... but at least this many steps, so 1 % still trains
    batch_size: int = changes_run(256)
    lr_head: float = changes_run(0.1)  # SwAV's semi-supervised runs: a fast head ...
    lr_backbone: float = changes_run(0.01)  # ... on a slowly moving pretrained backbone
    weight_decay: float = changes_run(5e-4)
    # linear probe on cached features: cheap, so trained to convergence
    linear_epochs: int = changes_run(100)
    linear_lr: float = changes_run(1e-3)
    n_evals: int = changes_run(5)  # test-set evaluations spread over training (for the curves)
    knn_k: tuple[int, ...] = changes_run((20, 200))
    knn_temperature: float = changes_run(0.07)
    tsne_images: int = changes_run(2000)  # t-SNE is quadratic-ish: a stratified test sample
    # BN statistics behind frozen features (linear, k-NN, t-SNE): "precise" recomputes them on the
    # clean labelled pool, the same way for every encoder; "ema" keeps pretraining's running
    # averages, taken over augmented views (and for a random-init backbone over nothing)
    bn_stats: str = changes_run("precise")
    device: str = runtime("auto")
    amp: str = runtime("auto")  # as PretrainConfig.amp: bf16 only where the hardware runs it
    channels_last: bool = runtime(True)

    def __post_init__(self) -> None:
        self.amp = check_amp(self.amp)


# one preset a few lines, as the pretraining's (swavnb.pretraining.config)
# fmt: off
_FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "swav": {},
    # 16 px like its pretraining, a 5,000-image labelled pool (50 per class), a 2,000-image
    # stratified test subset; fine-tuning as long as more steps help at 100 and 500 labels
    # (docs/presets.md)
    "quick": dict(
        image_size=16, train_images=5000, test_images=2000,
        epochs=50, min_steps=200, batch_size=64, linear_epochs=30,
        n_evals=2, tsne_images=1000,
    ),
    "smoke": dict(
        image_size=16, train_images=200, test_images=100,
        epochs=1, min_steps=3, batch_size=32, linear_epochs=5,
        n_evals=2, knn_k=(5, 20), tsne_images=100,
    ),
}
# fmt: on


def finetune_config(preset: str = "quick", **overrides: Any) -> FinetuneConfig:
    """The preset's evaluation config with ``overrides`` applied (strings are parsed)."""
    config = build(FinetuneConfig, _FINETUNE_PRESETS, preset, overrides)
    validate_finetune(config)
    return config


def validate_finetune(config: FinetuneConfig) -> None:
    """Fail before any folder is claimed or any data is read, naming every bad field and its valid
    values (as :func:`swavnb.pretraining.config.validate_pretrain`)."""
    check_image_size(config.image_size)
    check_bn_stats(config.bn_stats)
    problems = at_least(config, 1, ("batch_size", "n_evals", "tsne_images"))
    problems += at_least(config, 0, ("epochs", "min_steps", "linear_epochs"))
    # steps = max(min_steps, epochs * batches per epoch): both 0 would train nothing
    for epochs in ("epochs", "linear_epochs"):
        if getattr(config, epochs) == 0 and config.min_steps == 0:
            problems.append(f"{epochs} and min_steps are both 0: set either to 1 or more")
    problems += finite(config, ("lr_head", "linear_lr", "knn_temperature"))
    # lr_backbone 0 fine-tunes the head on a frozen (pretrained) backbone
    problems += finite(config, ("lr_backbone", "weight_decay"), positive=False)
    problems += image_count(config, "train_images", TRAIN_POOL)
    problems += image_count(config, "test_images", TEST_POOL)
    if not config.knn_k or min(config.knn_k) < 1:
        problems.append(f"knn_k must be one or more neighbour counts >= 1, got {config.knn_k}")
    refuse(problems)

"""The benchmark's reference pipeline: its views agree with ours in distribution, its trainer with
Pretrainer."""

from __future__ import annotations

import pytest
import torch

from swavnb.method.augment import Augmentation, MultiCrop, denormalize
from swavnb.method.model import SwAVModel
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.recipe import learning_rate
from swavnb.speed.reference import (
    MultiViewDataset,
    ReferenceTrainer,
    reference_loader,
    view_transforms,
)


def _statistics(views: torch.Tensor) -> dict[str, torch.Tensor]:
    pixels = denormalize(views)
    return {
        "mean": pixels.mean(dim=(0, 2, 3)),
        "std": pixels.std(dim=(0, 2, 3)),
        "spread_of_image_means": pixels.mean(dim=(2, 3)).std(dim=0),
        "gray_share": (pixels.std(dim=1).amax(dim=(1, 2)) < 1e-3).float().mean().view(1),
    }


def test_swav_views_match_torchvision_pipeline(real_images):
    """Same 512 images: our multi-crop views vs torchvision's
    RandomResizedCrop/ColorJitter/Grayscale per image."""
    crop = MultiCrop(n_local=2)
    ours = Augmentation("swav", crop)(real_images, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    dataset = MultiViewDataset(real_images, view_transforms("swav", crop))
    theirs = [
        torch.stack(views) for views in zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    ]
    assert [v.shape for v in ours] == [v.shape for v in theirs]
    for size_group in (slice(0, 2), slice(2, 4)):  # global, then local crops
        mine = _statistics(torch.cat(ours[size_group]))
        reference = _statistics(torch.cat(theirs[size_group]))
        for (
            key
        ) in mine:  # measured gaps: <= 0.009 for colour statistics, 0.025 for the grayscale share
            tolerance = 0.05 if key == "gray_share" else 0.02
            torch.testing.assert_close(mine[key], reference[key], atol=tolerance, rtol=0, msg=key)


def test_reference_loader_yields_view_batches(real_images):
    loader = reference_loader(real_images[:20], "flip", batch_size=8, workers=0)
    batches = list(loader)
    assert len(batches) == 2  # the last partial batch is dropped, as in pretraining
    assert [v.shape for v in batches[0]] == [(8, 3, 32, 32)] * 2
    assert len(view_transforms("swav", MultiCrop(n_local=3))) == 5


def test_reference_batches_are_pinned_for_a_gpu_as_swavs_loader_pins_them(real_images):
    # unpinned, a non_blocking copy to the GPU blocks, flattering ours in the benchmark's ratio
    for device, pinned in (("cuda", True), (torch.device("cuda", 0), True), ("cpu", False)):
        loader = reference_loader(real_images[:16], "flip", 8, workers=0, device=device)
        assert loader.pin_memory is pinned, device
    config = pretrain_config("smoke", aug="flip", batch_size=8)
    trainer = ReferenceTrainer(config, real_images[:16], workers=0, device=torch.device("cpu"))
    assert trainer.loader.pin_memory is False  # the trainer passes its own device


def test_reference_trainer_starts_from_given_weights_and_follows_the_schedule(real_images):
    config = pretrain_config(
        "smoke", aug="flip", batch_size=8, epochs=2, warmup_epochs=1, schedule="cosine"
    )
    init = SwAVModel(
        config.feat_dim, config.n_prototypes, config.head, config.hidden_dim
    ).state_dict()
    trainer = ReferenceTrainer(
        config, real_images[:32], workers=0, device=torch.device("cpu"), init_state=init
    )
    assert all(torch.equal(value, init[name]) for name, value in trainer.model.state_dict().items())
    losses = torch.stack(
        [trainer.train_step(step) for step in range(6)]
    )  # 4 steps per epoch: crosses into epoch 2
    assert torch.isfinite(losses).all()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
        learning_rate(config, 5, trainer.total_steps)
    )
    assert trainer.total_steps == 8
    assert not torch.equal(
        trainer.model.state_dict()["prototypes.weight"], init["prototypes.weight"]
    )


def test_reference_trainer_freezes_prototypes_like_pretrainer(real_images):
    config = pretrain_config(
        "smoke", aug="flip", batch_size=8, freeze_prototypes_epochs=0.5
    )  # 2 of 4 steps
    trainer = ReferenceTrainer(config, real_images[:32], workers=0, device=torch.device("cpu"))
    prototypes = trainer.model.prototypes.weight
    trainer.model.normalize_prototypes()
    start = prototypes.detach().clone()
    trainer.train_step(0), trainer.train_step(1)
    torch.testing.assert_close(
        prototypes.detach(), start, rtol=0, atol=1e-6
    )  # only renormalisation rounding
    trainer.train_step(2)
    assert (
        prototypes.detach() - start
    ).abs().max() > 1e-4  # Adam's first step moves each weight by ~lr


def test_reference_trainer_refuses_what_it_does_not_implement(real_images):
    config = pretrain_config("smoke", aug="flip", queue_length=64)
    with pytest.raises(ValueError, match="no queue"):
        ReferenceTrainer(config, real_images[:32], workers=0, device=torch.device("cpu"))

"""The benchmark's reference pipeline and our batched views agree in distribution."""
from __future__ import annotations

import torch

from swavnb.augment import Augmentation, MultiCrop, denormalize
from swavnb.reference import MultiViewDataset, reference_loader, view_transforms


def _statistics(views: torch.Tensor) -> dict[str, torch.Tensor]:
    pixels = denormalize(views)
    return {"mean": pixels.mean(dim=(0, 2, 3)), "std": pixels.std(dim=(0, 2, 3)),
            "spread_of_image_means": pixels.mean(dim=(2, 3)).std(dim=0),
            "gray_share": (pixels.std(dim=1).amax(dim=(1, 2)) < 1e-3).float().mean().view(1)}


def test_swav_views_match_torchvision_pipeline(real_images):
    """Same 512 images: our multi-crop views vs torchvision's RandomResizedCrop/ColorJitter/Grayscale per image."""
    crop = MultiCrop(n_local=2)
    ours = Augmentation("swav", crop)(real_images, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    dataset = MultiViewDataset(real_images, view_transforms("swav", crop))
    theirs = [torch.stack(views) for views in zip(*(dataset[i] for i in range(len(dataset))), strict=True)]
    assert [v.shape for v in ours] == [v.shape for v in theirs]
    for size_group in (slice(0, 2), slice(2, 4)):  # global, then local crops
        mine = _statistics(torch.cat(ours[size_group]))
        reference = _statistics(torch.cat(theirs[size_group]))
        for key in mine:  # measured gaps: <= 0.009 for colour statistics, 0.025 for the grayscale share
            tolerance = 0.05 if key == "gray_share" else 0.02
            torch.testing.assert_close(mine[key], reference[key], atol=tolerance, rtol=0, msg=key)


def test_reference_loader_yields_view_batches(real_images):
    loader = reference_loader(real_images[:20], "flip", batch_size=8, workers=0)
    batches = list(loader)
    assert len(batches) == 2  # the last partial batch is dropped, as in pretraining
    assert [v.shape for v in batches[0]] == [(8, 3, 32, 32)] * 2
    assert len(view_transforms("swav", MultiCrop(n_local=3))) == 5

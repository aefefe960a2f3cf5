"""Batched view generation: shapes, ranges, per-image randomness, torchvision agreement."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from matplotlib.colors import rgb_to_hsv
from torchvision.transforms import v2

from swavnb.data.cifar import downsample
from swavnb.method.augment import (
    AUGMENTATIONS,
    CIFAR100_MEAN,
    CIFAR100_STD,
    Augmentation,
    ColorJitter,
    MultiCrop,
    color_jitter,
    denormalize,
    eval_transform,
    finetune_transform,
    random_resized_crop_flip,
    to_unit_float,
)
from swavnb.pretraining.config import pretrain_config
from swavnb.pretraining.recipe import make_augmentation

MEAN = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """Like ``denormalize`` but without its clamp, so out-of-range values stay visible."""
    return x * STD + MEAN


def mirror_match(view: torch.Tensor, image: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
    """Per image: 0 if the view is the image, 1 if its mirror, -1 if neither."""
    same = (view - image).abs().amax(dim=(1, 2, 3)) <= atol
    mirrored = (view - image.flip(-1)).abs().amax(dim=(1, 2, 3)) <= atol
    return torch.where(same, 0, torch.where(mirrored, 1, -1))


@pytest.fixture(scope="module")
def images(real_images) -> torch.Tensor:
    return real_images[:64]


@pytest.mark.parametrize("name", ["flip", "jitter"])
def test_two_view_strategies_shapes_and_ranges(images, name):
    aug = Augmentation(name)
    views = aug(images, gen())
    assert aug.n_assign == 2 and aug.view_sizes == [32, 32]
    assert len(views) == 2
    for view in views:
        assert view.shape == (64, 3, 32, 32) and view.dtype == torch.float32
        pixels = unnormalize(view)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        # Normalised with CIFAR-100's statistics: roughly zero mean, unit spread.
        assert view.mean().abs() < 0.3 and 0.6 < view.std() < 1.4
        torch.testing.assert_close(denormalize(view), pixels.clamp(0, 1))


def test_swav_strategy_shapes_and_ranges(images):
    aug = Augmentation("swav")
    views = aug(images, gen())
    assert aug.n_assign == 2 and aug.view_sizes == [32, 32, 16, 16, 16, 16]
    assert [v.shape for v in views] == [(64, 3, s, s) for s in aug.view_sizes]
    for view in views:
        assert view.dtype == torch.float32
        pixels = unnormalize(view)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        assert view.mean().abs() < 0.5 and 0.3 < view.std() < 1.6


def test_swav_layout_follows_multicrop(images):
    crop = MultiCrop(n_global=3, global_size=24, n_local=2, local_size=8)
    aug = Augmentation("swav", multicrop=crop)
    views = aug(images[:8], gen())
    assert aug.n_assign == 3 and aug.view_sizes == [24, 24, 24, 8, 8]
    assert [tuple(v.shape) for v in views] == [(8, 3, s, s) for s in (24, 24, 24, 8, 8)]
    assert len(Augmentation("swav", MultiCrop(n_local=0))(images[:4], gen())) == 2


def test_flip_views_are_the_image_or_its_mirror(real_images):
    x = to_unit_float(real_images)
    view = unnormalize(Augmentation("flip", n_views=1)(real_images, gen())[0])
    match = mirror_match(view, x)
    assert (match >= 0).all(), "a flip view is neither the image nor its mirror"
    asymmetric = (x - x.flip(-1)).abs().amax(dim=(1, 2, 3)) > 1e-3
    flipped = match[asymmetric].float().mean().item()
    assert 0.4 < flipped < 0.6


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_randomness_is_per_image(real_images, name):
    same = real_images[5:6].expand(64, -1, -1, -1).contiguous()
    view = Augmentation(name)(same, gen())[0]
    distinct = len(torch.unique(view.flatten(1).round(decimals=4), dim=0))
    if name == "flip":
        assert distinct == 2  # the image and its mirror, both drawn
    else:
        assert distinct >= 60


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_views_are_reproducible_from_the_seed(images, name):
    aug = Augmentation(name)
    first, again, other = aug(images, gen(1)), aug(images, gen(1)), aug(images, gen(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # The two views of one call are not copies of each other.
    assert not torch.equal(first[0], first[1])


def test_unknown_augmentation_lists_valid_names():
    with pytest.raises(ValueError) as info:
        Augmentation("mixup")
    for name in AUGMENTATIONS:
        assert name in str(info.value)


def test_float_images_are_rejected(images):
    with pytest.raises(TypeError):
        Augmentation("flip")(images.float(), gen())
    with pytest.raises(TypeError):
        eval_transform(images.float() / 255)
    with pytest.raises(TypeError):
        finetune_transform(images.float(), gen())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"global_scale": (0.0, 1.0)},
        {"global_scale": (0.5, 0.2)},
        {"local_scale": (0.05, 1.5)},
        {"local_scale": (-0.1, 0.1)},
        {"n_global": 0},
        {"n_local": -1},
    ],
)
def test_multicrop_rejects_bad_layout(kwargs):
    with pytest.raises(ValueError):
        MultiCrop(**kwargs)


def channel_statistics(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel mean and std over all pixels, plus how much images differ in mean colour."""
    return {
        "mean": pixels.mean(dim=(0, 2, 3)),
        "std": pixels.std(dim=(0, 2, 3)),
        "spread_of_image_means": pixels.mean(dim=(2, 3)).std(dim=0),
    }


def test_jitter_statistics_match_torchvision(real_images):
    x = to_unit_float(real_images)
    ours = torch.cat([unnormalize(v) for v in Augmentation("jitter")(real_images, gen(0))])
    reference = v2.Compose([v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4, 0.1)])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torch.stack([reference(image) for image in x for _ in range(2)])
    ours_stats, theirs_stats, plain_stats = map(channel_statistics, (ours, theirs, x))
    tolerance = 0.01
    for key in ours_stats:
        torch.testing.assert_close(
            ours_stats[key], theirs_stats[key], atol=tolerance, rtol=0, msg=key
        )
    # The tolerance is tight enough to tell jittered images from untouched ones.
    assert any((plain_stats[k] - theirs_stats[k]).abs().max() > tolerance for k in plain_stats)


def test_zero_strength_jitter_is_identity(real_images):
    x = to_unit_float(real_images[:64])
    out = color_jitter(x, gen(), ColorJitter(0.0, 0.0, 0.0, 0.0))
    torch.testing.assert_close(
        out, x, atol=1e-5, rtol=0
    )  # the hue op's HSV round trip is all that is left
    out = color_jitter(x, gen(), ColorJitter(p=0.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    # ...while the default strengths do change the images.
    assert (color_jitter(x, gen(), ColorJitter()) - x).abs().amax() > 0.1


def test_full_crop_is_the_image_or_its_mirror(real_images):
    x = to_unit_float(real_images[:128])
    out = random_resized_crop_flip(x, gen(), size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    match = mirror_match(out, x)
    assert (match >= 0).all()
    assert 0 < match.sum() < 128  # both orientations drawn


def coordinate_image(n: int) -> torch.Tensor:
    """Channel 0 holds the pixel's x position in [0, 1], channel 1 its y position."""
    ramp = (torch.arange(32) + 0.5) / 32
    image = torch.zeros(n, 3, 32, 32)
    image[:, 0] = ramp.view(1, 32)
    image[:, 1] = ramp.view(32, 1)
    return image


@pytest.mark.parametrize(
    ("area", "ratio", "width", "height"),
    [(0.25, 1.0, 0.5, 0.5), (0.5, 2.0, 1.0, 0.5), (0.125, 0.5, 0.25, 0.5)],
)
def test_crop_covers_the_drawn_area_and_aspect(area, ratio, width, height):
    out = random_resized_crop_flip(
        coordinate_image(64), gen(3), size=16, scale=(area, area), ratio=(ratio, ratio)
    )
    span_x = out[:, 0].amax(dim=(1, 2)) - out[:, 0].amin(dim=(1, 2))
    span_y = out[:, 1].amax(dim=(1, 2)) - out[:, 1].amin(dim=(1, 2))
    # Sample points sit half an output pixel inside the crop: the spans are (1 - 1/16) of its sides.
    torch.testing.assert_close(span_x, torch.full((64,), width * 15 / 16), atol=0.02, rtol=0)
    torch.testing.assert_close(span_y, torch.full((64,), height * 15 / 16), atol=0.02, rtol=0)
    # Crops stay inside the image and land in different places.
    assert out[:, :2].min() >= 0 and out[:, :2].max() <= 1
    assert out[:, 0].mean(dim=(1, 2)).std() > 0.01 or width == 1.0


def test_finetune_transform_is_a_shift_of_the_image(real_images):
    images = real_images[:16]
    x = to_unit_float(images)
    out = finetune_transform(images, gen())
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    pixels = unnormalize(out)
    found = []
    for i in range(16):
        matches = []
        for flip in (False, True):
            source = x[i].flip(-1) if flip else x[i]
            padded = torch.nn.functional.pad(source, (4, 4, 4, 4))
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    shifted = padded[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx]
                    if (shifted - pixels[i]).abs().max() < 1e-5:
                        matches.append((flip, dy, dx))
        assert matches, f"image {i} is not a shifted (and maybe mirrored) copy with zero padding"
        found.append(matches[0])
    assert len(set(found)) > 4  # the shifts are drawn per image
    assert torch.equal(out, finetune_transform(images, gen()))


def test_eval_transform_is_plain_normalisation(images):
    out = eval_transform(images)
    torch.testing.assert_close(unnormalize(out), images.float() / 255, atol=1e-6, rtol=0)


def test_hue_shift_spans_the_requested_fraction_of_the_wheel(real_images):
    # Hue is measured with matplotlib's own HSV code, independent of the swavnb.method.colour ops
    # under
    # test.
    x = to_unit_float(real_images[:64])
    out = color_jitter(x, gen(5), ColorJitter(0.0, 0.0, 0.0, 0.1))
    hsv_in = rgb_to_hsv(x.permute(0, 2, 3, 1).numpy())
    hsv_out = rgb_to_hsv(out.permute(0, 2, 3, 1).clamp(0, 1).numpy())
    shift = (hsv_out[..., 0] - hsv_in[..., 0] + 0.5) % 1.0 - 0.5  # in turns, wrapped to [-0.5, 0.5)
    colourful = (hsv_in[..., 1] > 0.3) & (hsv_in[..., 2] > 0.3)
    per_image = np.array(
        [np.median(shift[i][colourful[i]]) for i in range(64) if colourful[i].sum() > 20]
    )
    assert len(per_image) > 30
    assert np.abs(per_image).max() <= 0.1 + 2e-3
    assert per_image.max() > 0.08 and per_image.min() < -0.08


@pytest.mark.parametrize("name", ["flip", "jitter", "swav"])
def test_low_resolution_runs_get_views_at_their_size(real_images, name):
    augment = make_augmentation(
        pretrain_config("quick", aug=name, image_size=16, local_size=8, n_local_crops=2)
    )
    views = augment(downsample(real_images[:8], 16), gen())
    assert [tuple(v.shape[-2:]) for v in views] == [(s, s) for s in augment.view_sizes]
    assert augment.view_sizes[:2] == [16, 16] and (
        name != "swav" or augment.view_sizes[2:] == [8, 8]
    )


def test_colour_op_order_is_drawn_on_the_host_on_a_gpu_and_from_the_generator_on_a_cpu(
    philox_like,
):
    from swavnb.method.augment import _op_order

    # the CPU: the generator's own randperm, as before (the CPU's random stream is unchanged)
    cpu, drawn = gen(4), gen(4)
    assert _op_order(4, cpu, torch.device("cpu")) == torch.randperm(4, generator=drawn).tolist()
    assert torch.equal(cpu.get_state(), drawn.get_state())
    # a GPU: a function of the generator's seed and offset, which it only reads
    cuda = torch.device("cuda", 0)

    def orders(seed: int) -> list[tuple[int, ...]]:
        generator, found = philox_like().manual_seed(seed), []
        state = generator.get_state()
        for offset in range(0, 4000, 4):  # Philox offsets advance in multiples of 4
            generator.offset = offset
            found.append(tuple(_op_order(4, generator, cuda)))
            assert found[-1] == tuple(_op_order(4, generator, cuda))  # reproducible
        assert torch.equal(generator.get_state(), state)  # nothing drawn from the stream itself
        return found

    first = orders(4)
    assert all(sorted(order) == [0, 1, 2, 3] for order in first)
    counts = Counter(first)
    assert len(counts) == 24 and min(counts.values()) > 15  # every order, about 1000 / 24 times
    assert orders(5) != first  # another seed, other orders

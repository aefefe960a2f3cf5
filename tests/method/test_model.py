"""SwAV network: CIFAR ResNet-18 stem, heads, prototypes and multi-crop grouping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swavnb.method.loss import swav_loss
from swavnb.method.model import BACKBONE_DIM, SwAVModel, cifar_resnet18

N_PROTOTYPES = 10


@pytest.fixture(scope="module")
def model() -> SwAVModel:
    torch.manual_seed(0)
    return SwAVModel(feat_dim=128, n_prototypes=N_PROTOTYPES)


def multicrop_batch(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Two 32 px and three 16 px views, every one with different content."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, s, s, generator=generator) for s in (32, 32, 16, 16, 16)]


def test_forward_shapes_and_norms(model):
    model.train()
    embeddings, scores = model(multicrop_batch())
    assert len(embeddings) == len(scores) == 5
    for z, s in zip(embeddings, scores, strict=True):
        assert z.shape == (2, 128) and s.shape == (2, N_PROTOTYPES)
        torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
        # Unit embeddings against unit prototypes: scores are cosine similarities.
        assert s.abs().max() <= 1 + 1e-5
        torch.testing.assert_close(s, z @ model.prototypes.weight.t())


def test_default_prototypes_are_unit_norm():
    model = SwAVModel()
    assert model.prototypes.weight.shape == (3000, 128)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(3000))


def test_normalize_prototypes_restores_unit_norm():
    model = SwAVModel(n_prototypes=N_PROTOTYPES)
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0).add_(torch.randn_like(model.prototypes.weight))
    perturbed = model.prototypes.weight.detach().clone()
    assert not torch.allclose(perturbed.norm(dim=1), torch.ones(N_PROTOTYPES), atol=1e-3)
    model.normalize_prototypes()
    weight = model.prototypes.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(N_PROTOTYPES))
    torch.testing.assert_close(
        weight, perturbed / perturbed.norm(dim=1, keepdim=True)
    )  # directions kept
    assert weight.requires_grad and weight.grad_fn is None  # still a trainable leaf


def test_backbone_gives_pooled_512_features(model):
    model.eval()
    with torch.no_grad():
        for size in (32, 16):
            assert model.backbone(torch.randn(3, 3, size, size)).shape == (3, BACKBONE_DIM)


def test_cifar_stem():
    net = cifar_resnet18()
    assert (
        net.conv1.kernel_size == (3, 3)
        and net.conv1.stride == (1, 1)
        and net.conv1.padding == (1, 1)
    )
    assert net.conv1.in_channels == 3 and net.conv1.out_channels == 64
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    # The stem keeps 32 px at 32x32 up to the first block.
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    assert stem(torch.randn(2, 3, 32, 32)).shape == (2, 64, 32, 32)


def test_grouped_forward_equals_separate_embedding(model):
    model.eval()
    crops = multicrop_batch(seed=1)
    with torch.no_grad():
        embeddings, scores = model(crops)
        for crop, z, s in zip(crops, embeddings, scores, strict=True):
            alone = model.embed(crop)
            torch.testing.assert_close(z, alone, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(s, model.prototypes(alone), atol=1e-5, rtol=1e-4)
    # Distinct crops give distinct embeddings, so a mixed-up order would be caught above.
    assert not torch.allclose(embeddings[0], embeddings[1], atol=1e-3)
    assert not torch.allclose(embeddings[2], embeddings[3], atol=1e-3)


def test_single_tensor_is_one_crop(model):
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        embeddings, scores = model(x)
        assert len(embeddings) == 1
        torch.testing.assert_close(embeddings[0], model.embed(x))


def test_mlp_head():
    model = SwAVModel(feat_dim=32, n_prototypes=N_PROTOTYPES, head="mlp", hidden_dim=64)
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.projection.modules())
    model.train()
    embeddings, scores = model(multicrop_batch(seed=2)[:3])
    assert [z.shape for z in embeddings] == [(2, 32)] * 3
    assert [s.shape for s in scores] == [(2, N_PROTOTYPES)] * 3
    torch.testing.assert_close(embeddings[2].norm(dim=1), torch.ones(2))


def test_loss_gradient_reaches_backbone_head_and_prototypes(model):
    model.train()
    model.zero_grad()
    _, scores = model(multicrop_batch(seed=3))
    swav_loss(scores, n_assign=2).backward()
    for name in (
        "backbone.conv1.weight",
        "backbone.layer4.1.conv2.weight",
        "projection.weight",
        "prototypes.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.zero_grad()


def test_unknown_head_raises():
    with pytest.raises(ValueError, match="head"):
        SwAVModel(n_prototypes=N_PROTOTYPES, head="transformer")


@pytest.mark.parametrize("kwargs", [{"feat_dim": 0}, {"n_prototypes": 0}])
def test_bad_sizes_raise(kwargs):
    with pytest.raises(ValueError):
        SwAVModel(**kwargs)


def test_crops_with_different_batch_sizes_raise(model):
    with pytest.raises(ValueError, match="same"):
        model([torch.randn(4, 3, 32, 32), torch.randn(3, 3, 32, 32)])


def test_tests_sharing_an_expensive_fixture_stay_on_one_worker(model, request):
    """make test's grouping (conftest.py) reaches pytest-xdist (fails where it is ignored)."""
    if not getattr(request.config.option, "loadgroup", False):  # set on a loadgroup worker only
        pytest.skip("checks make test's pytest -n N --dist loadgroup run")
    assert request.node.nodeid.endswith("@tests/method/test_model.py::model")


def test_only_building_a_network_imports_torchvision():
    # torchvision brings torch._dynamo (~2 s a process): the study's driver and a results step
    # build no network and must start without it
    import subprocess
    import sys

    check = (
        "import sys, swavnb.study.plan, swavnb.study.headless, swavnb.pretrain, swavnb.finetune\n"
        "print('torchvision' in sys.modules)\n"
        "from swavnb.method.model import cifar_resnet18\n"
        "cifar_resnet18()\n"
        "print('torchvision' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]

"""SmallMapConv2d: torch's convolution, with the weight gradient as one product where it pays."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from swavnb.base.small_map_conv import SmallMapConv2d, standard_weight_grad, use_small_map_convs
from swavnb.method.model import cifar_resnet18

BATCH_PATH = "_BatchWeightGradConvBackward"


def _pair(c_in: int, c_out: int, **kwargs) -> tuple[nn.Conv2d, SmallMapConv2d]:
    """A torch convolution and ours with the same weights."""
    theirs = nn.Conv2d(c_in, c_out, bias=False, **kwargs)
    ours = use_small_map_convs(nn.Sequential(nn.Conv2d(c_in, c_out, bias=False, **kwargs)))[0]
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Equal to float32 summation noise, relative to the tensor's largest entry."""
    return bool((ours - theirs).abs().max() <= 1e-5 * theirs.abs().max())


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "channels_last"),
    [(2, 3, 1, True), (1, 3, 1, True), (4, 3, 2, True), (2, 1, 2, True), (2, 3, 1, False)],
)
def test_tiny_maps_take_the_batch_product_and_match_torchs_gradients(
    size, kernel, stride, channels_last
):
    torch.manual_seed(0)
    theirs, ours = _pair(32, 48, kernel_size=kernel, stride=stride, padding=kernel // 2)
    x = torch.randn(6, 32, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        theirs, ours = (m.to(memory_format=torch.channels_last) for m in (theirs, ours))
    inputs = {name: x.clone().requires_grad_() for name in ("theirs", "ours")}
    outputs = {"theirs": theirs(inputs["theirs"]), "ours": ours(inputs["ours"])}
    assert outputs["ours"].grad_fn.name() == BATCH_PATH
    assert outputs["theirs"].grad_fn.name() != BATCH_PATH
    assert torch.equal(outputs["ours"], outputs["theirs"])  # the forward is torch's own
    grad = torch.randn_like(outputs["theirs"])
    for name in outputs:
        outputs[name].backward(grad)
    assert _close(ours.weight.grad, theirs.weight.grad)
    assert _close(inputs["ours"].grad, inputs["theirs"].grad)
    # the gradients keep the layouts of the tensors they belong to
    assert ours.weight.grad.stride() == ours.weight.stride()
    assert inputs["ours"].grad.stride() == inputs["theirs"].grad.stride()


def test_the_batch_product_is_taken_only_where_it_pays():
    torch.manual_seed(0)
    _, conv = _pair(8, 8, kernel_size=3, padding=1)
    tiny, larger = torch.randn(4, 8, 2, 2), torch.randn(4, 8, 4, 4)
    assert conv(tiny).grad_fn.name() == BATCH_PATH
    assert conv(larger).grad_fn.name() != BATCH_PATH  # 16 output pixels: torch's is as fast
    assert conv(tiny[0]).grad_fn.name() != BATCH_PATH  # an unbatched image
    with torch.no_grad():
        assert conv(tiny).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16: oneDNN's own path
        assert conv(tiny).grad_fn.name() != BATCH_PATH
    with standard_weight_grad():
        assert conv(tiny).grad_fn.name() != BATCH_PATH
    assert conv(tiny).grad_fn.name() == BATCH_PATH  # and back after the block
    _, dilated = _pair(8, 8, kernel_size=3, padding=2, dilation=2)
    assert dilated(tiny).grad_fn.name() != BATCH_PATH
    biased = use_small_map_convs(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)))[0]
    assert biased(tiny).grad_fn.name() != BATCH_PATH


def test_the_resnet_keeps_torchvisions_layers_weights_and_random_draws():
    torch.manual_seed(3)
    ours = cifar_resnet18()
    after_ours = torch.get_rng_state()
    torch.manual_seed(3)  # what cifar_resnet18 builds, without the conversion
    theirs = torchvision.models.resnet18(weights=None)
    theirs.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    theirs.maxpool, theirs.fc = nn.Identity(), nn.Identity()
    assert torch.equal(torch.get_rng_state(), after_ours)
    convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is SmallMapConv2d for m in convs)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert list(ours_state) == list(theirs_state)
    assert all(torch.equal(ours_state[k], theirs_state[k]) for k in theirs_state)


def test_a_resnet_backward_gives_torchs_gradients():
    torch.manual_seed(0)
    net = cifar_resnet18().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 8, 8).contiguous(memory_format=torch.channels_last)  # layer4 at 1x1

    def gradients() -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        net(x).square().sum().backward()
        return {name: p.grad.clone() for name, p in net.named_parameters()}

    ours = gradients()
    with standard_weight_grad():
        theirs = gradients()
    for name, grad in theirs.items():
        assert _close(ours[name], grad), name

"""ResNet-18 (CIFAR stem) + projection head + prototypes: the SwAV network."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from swavnb.base.small_map_conv import use_small_map_convs

HEADS = ("linear", "mlp")
BACKBONE_DIM = 512


def torchvision_cifar_resnet18() -> nn.Module:
    """Plain torchvision ResNet-18 with the CIFAR stem (torchvision's layers only); ``forward``
    gives (B, 512) pooled features.

    A 3x3 stride-1 first conv and no max-pool keep 32 px inputs at 32x32 through the
    stem; the ImageNet stem would shrink them to 8x8 before the first block. ``fc`` is removed.
    """
    # imported here: torchvision pulls in torch._dynamo (~2 s), which a process that never builds a
    # network (the study's driver, the results step, --help) should not pay for
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def cifar_resnet18() -> nn.Module:
    """:func:`torchvision_cifar_resnet18` whose convolutions are
    :class:`~swavnb.base.small_map_conv.SmallMapConv2d`: the same layers, whose float32 weight
    gradient on a CPU is faster where the map is tiny; ``forward`` gives (B, 512) pooled features.
    """
    return use_small_map_convs(torchvision_cifar_resnet18())


def projection_head(kind: str, feat_dim: int, hidden_dim: int) -> nn.Module:
    """The reference report's linear projection (eq. 2) or SwAV's 2-layer MLP."""
    if kind == "linear":
        return nn.Linear(BACKBONE_DIM, feat_dim)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(BACKBONE_DIM, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, feat_dim),
        )
    raise ValueError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")


class SwAVModel(nn.Module):
    """Backbone, L2-normalised projection and ``n_prototypes`` unit-norm prototypes.

    Args:
        feat_dim: size of the normalised embedding z (128 in the reference report).
        n_prototypes: number of prototype vectors K (3000 in the reference report).
        head: ``linear`` (the reference report's) or ``mlp`` (SwAV's original head).
        hidden_dim: width of the MLP head's hidden layer.
    """

    def __init__(
        self,
        feat_dim: int = 128,
        n_prototypes: int = 3000,
        head: str = "linear",
        hidden_dim: int = 2048,
    ):
        super().__init__()
        if feat_dim < 1 or n_prototypes < 1:
            raise ValueError(
                f"feat_dim and n_prototypes must be >= 1, got {feat_dim}, {n_prototypes}"
            )
        self.hparams = {
            "feat_dim": feat_dim,
            "n_prototypes": n_prototypes,
            "head": head,
            "hidden_dim": hidden_dim,
        }
        self.backbone = cifar_resnet18()
        self.projection = projection_head(head, feat_dim, hidden_dim)
        self.prototypes = nn.Linear(feat_dim, n_prototypes, bias=False)
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Put every prototype back on the unit sphere; SwAV does this before each step."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, feat_dim) unit-norm embeddings."""
        return F.normalize(self.projection(self.backbone(x)).float(), dim=1)

    def forward(
        self, crops: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Embeddings and prototype scores for each crop.

        Crops of equal resolution go through the backbone together (one pass for the
        two global views, one for the local ones), which is what makes multi-crop cheap.

        Args:
            crops: views of the same B images, each (B, 3, S_i, S_i).

        Returns:
            (embeddings, scores): per crop, (B, feat_dim) and (B, n_prototypes).
        """
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        batch = crops[0].shape[0]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, crop in enumerate(crops):
            if crop.shape[0] != batch:
                raise ValueError(
                    f"all crops must hold the same {batch} images, crop {index} has {crop.shape[0]}"
                )
            by_size.setdefault(tuple(crop.shape[-2:]), []).append(index)
        embeddings: list[torch.Tensor | None] = [None] * len(crops)
        for indices in by_size.values():
            z = self.embed(torch.cat([crops[i] for i in indices]))  # (len(indices) * B, feat_dim)
            for i, chunk in zip(indices, z.split(batch), strict=True):
                embeddings[i] = chunk
        with torch.autocast(
            crops[0].device.type, enabled=False
        ):  # scores / 0.1 need float32 precision
            scores = [self.prototypes(z) for z in embeddings]
        return embeddings, scores

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> SwAVModel:
        """Rebuild a pretrained model from a ``pretrain`` checkpoint file alone."""
        from swavnb.base.checkpoint import load_checkpoint

        state = load_checkpoint(path, map_location=map_location)
        model = cls(**state["model_hparams"])
        model.load_state_dict(state["model"])
        return model

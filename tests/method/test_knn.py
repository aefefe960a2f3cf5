"""The k-NN pieces the probes and pretraining's online k-NN share."""

from __future__ import annotations

import torch

from swavnb.evaluation import probes
from swavnb.method import knn
from swavnb.method.model import cifar_resnet18


def test_the_probes_import_path_gives_the_same_functions():
    assert probes.extract_features is knn.extract_features
    assert probes.knn_scores is knn.knn_scores


def test_extract_features_restores_the_mode_and_leaves_bn_statistics_alone():
    backbone = cifar_resnet18().train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    features = knn.extract_features(backbone, images, batch_size=4, amp=False)
    assert features.shape == (6, 512) and features.dtype == torch.float32
    assert backbone.training
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name

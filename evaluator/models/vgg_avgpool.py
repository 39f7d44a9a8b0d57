"""VGG16 with four max-pools and a 2x2 average pool (2x2 -> 1x1) before the classifier.

Keys: ``features.{0,3,7,10,14,17,20,24,27,30,34,37,40}`` convs without bias and their BatchNorms, then either
``classifier`` = Linear 512->10 (``head="linear"``) or ``classifier.0`` Linear 512->512, ``classifier.1``
BatchNorm1d(512), ReLU, ``classifier.3`` Linear 512->10 (``head="mlp-bn"``).
"""
from __future__ import annotations

import torch
from torch import nn

from evaluator.models.vgg import VGG16_LAYOUT, make_features

HEADS = ("linear", "mlp-bn")


class VGG16AvgPool(nn.Module):
    """VGG16-bn, 4 max-pools, AvgPool2d(2), a linear or a Linear-BatchNorm1d-ReLU-Linear head."""

    def __init__(self, num_classes: int, head: str = "linear") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head {head!r} is not one of {HEADS}")
        self.features = make_features(VGG16_LAYOUT)
        self.avgpool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.classifier: nn.Module = nn.Linear(512, num_classes) if head == "linear" else nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

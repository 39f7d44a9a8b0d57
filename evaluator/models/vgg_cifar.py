"""The "CIFAR" VGG16: 13 conv 3x3 (with or without bias), each with BatchNorm and ReLU, five 2x2 max-pools
(32x32 -> 1x1), a 1x1 average pool (an identity kept for its index) and one Linear 512->10.

Keys: ``features.{0,3,7,10,14,17,20,24,27,30,34,37,40}`` convs, the BatchNorm right after each, and
``classifier.weight``/``classifier.bias``.
"""
from __future__ import annotations

import torch
from torch import nn

from evaluator.models.vgg import VGG16_CIFAR_LAYOUT, make_features


class VGG16Cifar(nn.Module):
    """CIFAR VGG16 with batch norm and a single linear classifier."""

    def __init__(self, num_classes: int, conv_bias: bool = False) -> None:
        super().__init__()
        self.features = make_features(VGG16_CIFAR_LAYOUT, conv_bias=conv_bias)
        self.features.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

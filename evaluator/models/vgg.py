"""VGG16 with batch norm for 32x32 inputs: the original benchmark's ``models/base_vgg16.py`` (``vgg16_bn``).

State-dict keys and shapes are those of the original base model: ``features`` (13 conv 3x3 pad 1 without bias,
each followed by BatchNorm and ReLU; max-pools between stages), ``avgpool`` = AdaptiveAvgPool2d(2, 2) and
``classifier`` = Linear(2048, 256)-ReLU-Linear(256, 256)-ReLU-Linear(256, 10).
:func:`make_features` also builds the feature stacks of the other VGG16 variants (conv bias, BatchNorm without
affine parameters, a fifth max-pool).
"""
from __future__ import annotations

import torch
from torch import nn

# Output channels of each conv; "M" is a 2x2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# The "CIFAR" VGG16 (cfg D of the VGG paper as used on 32x32 inputs): a fifth max-pool brings the map to 1x1.
VGG16_CIFAR_LAYOUT: tuple[int | str, ...] = (*VGG16_LAYOUT, "M")


def make_features(layout: tuple[int | str, ...] = VGG16_LAYOUT, *, conv_bias: bool = False,
                  bn_affine: bool = True) -> nn.Sequential:
    """Conv-BN-ReLU stages with max-pools, in the index order the original checkpoints use."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1, bias=conv_bias),
                   nn.BatchNorm2d(int(item), affine=bn_affine), nn.ReLU(inplace=True)]
        in_channels = int(item)
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """VGG16-bn with a 2x2 adaptive average pool and a 2048-256-256-10 classifier."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = make_features()
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 2 * 2, 256), nn.ReLU(True),
            nn.Linear(256, 256), nn.ReLU(True),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

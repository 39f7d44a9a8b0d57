"""ResNet18 for 32x32 inputs: the CIFAR variant of the original benchmark's ``models/base_resnet18.py``.

State-dict keys and shapes are those of the original base model (``conv1``, ``bn1``, ``layer1``-``layer4`` of
BasicBlocks with ``conv1/bn1/conv2/bn2`` and, where the block changes shape, ``shortcut.0`` (1x1 conv) and
``shortcut.1`` (BatchNorm), then ``linear`` 512->10), so every checkpoint that loaded there loads here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, bn_affine: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, affine=bn_affine)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, affine=bn_affine)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, affine=bn_affine),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Body(nn.Module):
    """The stem and the four stages of ResNet18 (BasicBlocks 2-2-2-2), 3x3 stem without max-pool, then a 4x4
    average pool; subclasses add the classifier."""

    layer1: nn.Sequential  # set by name in __init__; declared for the type checker
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, bn_affine: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, affine=bn_affine)
        widths_and_strides = [(64, 1), (128, 2), (256, 2), (512, 2)]
        in_planes = 64
        for number, (planes, stride) in enumerate(widths_and_strides, start=1):
            setattr(self, f"layer{number}", nn.Sequential(BasicBlock(in_planes, planes, stride, bn_affine),
                                                          BasicBlock(planes, planes, 1, bn_affine)))
            in_planes = planes

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The (n, 512, 1, 1) map before the classifier."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.avg_pool2d(out, 4)


class ResNet18(ResNet18Body):
    """ResNet18 (BasicBlocks 2-2-2-2), 3x3 stem without max-pool, 4x4 average pool, Linear 512->10."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pooled_features(x).flatten(1))

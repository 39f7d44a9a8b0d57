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

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 (BasicBlocks 2-2-2-2), 3x3 stem without max-pool, 4x4 average pool, 10 classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths_and_strides = [(64, 1), (128, 2), (256, 2), (512, 2)]
        in_planes = 64
        for number, (planes, stride) in enumerate(widths_and_strides, start=1):
            setattr(self, f"layer{number}", nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes)))
            in_planes = planes
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))

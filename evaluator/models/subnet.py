"""Edge-popup "subnet" models (Ramanujan et al. 2020; Robust Scratch Tickets, Fu et al. 2021) after folding.

Every conv of these networks is a scored conv: the checkpoint holds dense weights and one ``scores`` tensor per
conv, and the kept weights are chosen from the scores (``masks: popup-scores`` folds them, see
:mod:`evaluator.checkpoint.key_rules`), so what is built here is the folded network: plain convs without bias, BatchNorm
without affine parameters, and a 1x1 conv as the classifier.

- ``SubnetResNet18``: the post-activation ResNet18 (keys of the base one, BatchNorms with running statistics
  only) whose classifier is ``fc``, a 1x1 conv 512->10 applied to the pooled map.
- ``SubnetVGG16``: the CIFAR VGG16 (five max-pools, ``features.44`` a 1x1 average pool) whose classifier is
  ``classifier``, a 1x1 conv 512->10.
"""
from __future__ import annotations

import torch
from torch import nn

from evaluator.models.resnet import ResNet18Body
from evaluator.models.vgg import VGG16_CIFAR_LAYOUT, make_features


class SubnetResNet18(ResNet18Body):
    """ResNet18 with non-affine BatchNorm and a 1x1-conv classifier ``fc`` (no bias)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(bn_affine=False)
        self.fc = nn.Conv2d(512, num_classes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled_features(x)).flatten(1)


class SubnetVGG16(nn.Module):
    """CIFAR VGG16 with non-affine BatchNorm, convs without bias and a 1x1-conv classifier (no bias)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = make_features(VGG16_CIFAR_LAYOUT, bn_affine=False)
        self.features.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.classifier = nn.Conv2d(512, num_classes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).flatten(1)

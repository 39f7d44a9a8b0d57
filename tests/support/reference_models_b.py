"""Reference modules for the checkpoints of FlyingBird, RobustBird, RST, MAD and Li20 (tests/data/ap_layouts/*.json).

Each class is written from the architecture each AP's repository describes (facts: layer order, kernel sizes,
biases, BatchNorm flavour, attribute names, where normalization and masks enter the forward); no code is taken
from those repositories. ``state_dict()`` of each module equals the tensor list of the matching layout file once
wrapper prefixes (``module.``), extra top-level entries and the prune reparametrization are removed. Nothing here
imports ``evaluator``: these modules are the independent side a test compares the evaluator against.

Which AP uses which module (see each layout file's ``forward.reference_module``):

- ``PreActResNet18``: FlyingBird and RobustBird resnet18 (VITA-Group/Sparsity-Win-Robust-Generalization).
- ``ChenVGG16``: FlyingBird and RobustBird vgg16 (same repository, ``vgg16_bn``).
- ``BasicResNet18``: RST resnet18 (``layers="subnet"``), MAD resnet18 (``layers="softplus_mask"``),
  Li20 resnet18 (``layers="plain"``).
- ``SubnetVGG16``: RST vgg16.
- ``MadVGG16``: MAD vgg16.
- ``Li20VGG16``: Li20 vgg16 (the saved object is this bare ``nn.Sequential``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LayerKind = Literal["plain", "subnet", "softplus_mask"]

# 13 convs of VGG16; "M" is a 2x2 max-pool. The Chen and RST VGG16s end with a fifth pool, MAD and Li20 do not.
VGG16_WITH_FINAL_POOL: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_WITHOUT_FINAL_POOL: tuple[int | str, ...] = VGG16_WITH_FINAL_POOL[:-1]


class ChannelNormalize(nn.Module):
    """``(x - mean) / std`` per channel with ``mean`` and ``std`` as buffers (saved in the state dict)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean: torch.Tensor = self.mean
        std: torch.Tensor = self.std
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def kept_count(numel: int, density: float) -> int:
    """Entries an edge-popup layer keeps: the lowest ``int((1 - density) * numel)`` scores are dropped."""
    return numel - int((1 - density) * numel)


def topk_abs_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """0/1 mask keeping the ``kept_count`` entries of largest ``abs(scores)`` in this one layer.

    Same set as sorting abs(scores) ascending and zeroing the first ``numel - kept`` entries; among equal scores at
    the threshold the later ones are kept (the authors' unstable sort leaves that order unspecified)."""
    flat = scores.detach().abs().flatten()
    dropped = flat.numel() - kept_count(flat.numel(), density)
    if dropped == 0:
        return torch.ones_like(scores)
    threshold = torch.kthvalue(flat, dropped).values
    keep = flat > threshold
    missing = flat.numel() - dropped - int(keep.sum())
    if missing > 0:
        ties = (flat == threshold).nonzero().flatten()
        keep[ties[ties.numel() - missing:]] = True
    return keep.to(scores.dtype).view_as(scores)


class SubnetConv2d(nn.Conv2d):
    """Edge-popup conv: dense ``weight`` plus a same-shape ``scores`` parameter; the forward uses
    ``weight * topk_abs_mask(scores, density)``."""

    def __init__(self, *args: int, density: float = 1.0, **kwargs: int | bool) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.scores = nn.Parameter(torch.randn_like(self.weight))
        self.density = density

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * topk_abs_mask(self.scores, self.density)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def softplus_inverse_of_one() -> torch.Tensor:
    """The value MAD fills its masks with: ``log(e - 1)``, so that ``softplus(mask) == 1``."""
    return torch.log(torch.expm1(torch.tensor(1.0)))


class SoftplusMaskConv2d(nn.Conv2d):
    """MAD conv: ``weight`` plus ``mask_weight`` (and ``mask_bias`` when there is a bias); the forward uses
    ``weight * softplus(mask_weight)``."""

    def __init__(self, *args: int, **kwargs: int | bool) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.mask_weight = nn.Parameter(softplus_inverse_of_one() * torch.ones_like(self.weight))
        self.mask_bias = (nn.Parameter(softplus_inverse_of_one() * torch.ones_like(self.bias))
                          if self.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * F.softplus(self.mask_bias)
        return F.conv2d(x, self.weight * F.softplus(self.mask_weight), bias, self.stride, self.padding,
                        self.dilation, self.groups)


class SoftplusMaskLinear(nn.Linear):
    """MAD linear layer: ``weight``, ``bias``, ``mask_weight``, ``mask_bias``; effective ``w * softplus(m)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.mask_weight = nn.Parameter(softplus_inverse_of_one() * torch.ones_like(self.weight))
        self.mask_bias = nn.Parameter(softplus_inverse_of_one() * torch.ones_like(self.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * F.softplus(self.mask_weight), self.bias * F.softplus(self.mask_bias))


# ----------------------------------------------------------------------------------------------------------------
# FlyingBird / RobustBird (Chen et al. 2021): pre-activation ResNet18 and a 5-pool VGG16 with conv bias,
# both normalizing inside the model with buffers ``normalize.mean`` / ``normalize.std``.

CIFAR10_MEAN_CHEN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD_CHEN = (0.2470, 0.2435, 0.2616)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3; the 1x1 ``shortcut`` conv (no BN) reads the first BN-ReLU output."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + skip


class PreActResNet18(nn.Module):
    """normalize -> conv1 3x3 -> 4 stages of 2 PreActBlocks -> ``bn`` -> ReLU -> global avg pool -> ``linear``."""

    def __init__(self, num_classes: int = 10, mean: Sequence[float] = CIFAR10_MEAN_CHEN,
                 std: Sequence[float] = CIFAR10_STD_CHEN) -> None:
        super().__init__()
        self.normalize = ChannelNormalize(mean, std)
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        in_planes = 64
        for index, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            setattr(self, f"layer{index}", nn.Sequential(PreActBlock(in_planes, planes, stride),
                                                         PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        for index in range(1, 5):
            out = getattr(self, f"layer{index}")(out)
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.linear(out)


def vgg_features(layout: Sequence[int | str], conv: type[nn.Conv2d], conv_bias: bool, affine_bn: bool,
                 density: float | None = None) -> list[nn.Module]:
    """Conv3x3(pad 1)-BN-ReLU per channel entry, MaxPool2d(2) per "M", in the index order the checkpoints use."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        extra = {} if density is None else {"density": density}
        layers += [conv(in_channels, int(item), 3, padding=1, bias=conv_bias, **extra),
                   nn.BatchNorm2d(int(item), affine=affine_bn), nn.ReLU(inplace=True)]
        in_channels = int(item)
    return layers


class ChenVGG16(nn.Module):
    """normalize -> ``features`` (13 conv3x3 with bias + BN + ReLU, 5 max-pools, AvgPool2d(1)) -> ``classifier``
    Linear(512, 10). ``normalize`` is registered last, so its buffers come last in the state dict."""

    def __init__(self, num_classes: int = 10, mean: Sequence[float] = CIFAR10_MEAN_CHEN,
                 std: Sequence[float] = CIFAR10_STD_CHEN) -> None:
        super().__init__()
        layers = vgg_features(VGG16_WITH_FINAL_POOL, nn.Conv2d, conv_bias=True, affine_bn=True)
        self.features = nn.Sequential(*layers, nn.AvgPool2d(kernel_size=1, stride=1))
        self.classifier = nn.Linear(512, num_classes)
        self.normalize = ChannelNormalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))


# ----------------------------------------------------------------------------------------------------------------
# Post-activation ResNet18 (RST cResNet18, MAD resnet18, Li20 ResNet): one topology, three layer kinds.

class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus identity or ``shortcut`` = conv1x1(stride)-BN, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, make_conv: ConvFactory,
                 make_bn: type[nn.BatchNorm2d] | BatchNormFactory) -> None:
        super().__init__()
        self.conv1 = make_conv(in_planes, planes, 3, stride)
        self.bn1 = make_bn(planes)
        self.conv2 = make_conv(planes, planes, 3, 1)
        self.bn2 = make_bn(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(make_conv(in_planes, planes, 1, stride), make_bn(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ConvFactory:
    """Builds the conv of one layer kind with the padding the authors use (1 for 3x3, 0 for 1x1), no bias."""

    def __init__(self, kind: LayerKind, density: float) -> None:
        self.kind = kind
        self.density = density

    def __call__(self, in_planes: int, out_planes: int, kernel: int, stride: int) -> nn.Conv2d:
        padding = kernel // 2
        if self.kind == "subnet":
            return SubnetConv2d(in_planes, out_planes, kernel, stride=stride, padding=padding, bias=False,
                                density=self.density)
        if self.kind == "softplus_mask":
            return SoftplusMaskConv2d(in_planes, out_planes, kernel, stride=stride, padding=padding, bias=False)
        return nn.Conv2d(in_planes, out_planes, kernel, stride=stride, padding=padding, bias=False)


class BatchNormFactory:
    """BatchNorm2d with or without affine parameters (RST uses ``affine=False``)."""

    def __init__(self, affine: bool) -> None:
        self.affine = affine

    def __call__(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, affine=self.affine)


class BasicResNet18(nn.Module):
    """conv1 3x3 -> BN -> ReLU -> 4 stages of 2 BasicBlocks -> avg_pool2d(4) -> head.

    ``layers="plain"`` (Li20): nn.Conv2d, affine BN, head ``linear`` = Linear(512, 10); no normalization inside.
    ``layers="subnet"`` (RST): SubnetConv2d everywhere (first conv and shortcuts included), BN without affine,
    head ``fc`` = SubnetConv2d 1x1 512->10 without bias on the pooled 1x1 map, flattened; no normalization inside.
    ``layers="softplus_mask"`` (MAD): SoftplusMask convs and ``linear`` = SoftplusMaskLinear; the forward first
    applies ``(x - mean) / std`` with mean/std held as plain attributes (not in the state dict).
    """

    def __init__(self, layers: LayerKind = "plain", density: float = 1.0, num_classes: int = 10,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.layers = layers
        make_conv = ConvFactory(layers, density)
        make_bn = BatchNormFactory(affine=layers != "subnet")
        self.conv1 = make_conv(3, 64, 3, 1)
        self.bn1 = make_bn(64)
        in_planes = 64
        for index, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            setattr(self, f"layer{index}", nn.Sequential(BasicBlock(in_planes, planes, stride, make_conv, make_bn),
                                                         BasicBlock(planes, planes, 1, make_conv, make_bn)))
            in_planes = planes
        if layers == "subnet":
            self.fc = SubnetConv2d(512, num_classes, 1, bias=False, density=density)
        elif layers == "softplus_mask":
            self.linear = SoftplusMaskLinear(512, num_classes)
        else:
            self.linear = nn.Linear(512, num_classes)
        # Plain attributes, as in MAD: not part of the state dict.
        self.input_mean = None if mean is None else torch.tensor(list(mean)).view(1, -1, 1, 1)
        self.input_std = None if std is None else torch.tensor(list(std)).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_mean is not None and self.input_std is not None:
            x = (x - self.input_mean) / self.input_std
        out = F.relu(self.bn1(self.conv1(x)))
        for index in range(1, 5):
            out = getattr(self, f"layer{index}")(out)
        out = F.avg_pool2d(out, 4)
        if self.layers == "subnet":
            return self.fc(out).flatten(1)
        return self.linear(out.flatten(1))


class SubnetVGG16(nn.Module):
    """RST VGG16: ``features`` = 13 SubnetConv2d 3x3 (no bias) + BN without affine + ReLU, 5 max-pools,
    AvgPool2d(1); ``classifier`` = SubnetConv2d 1x1 512->10 without bias on the 1x1 map, flattened.
    No normalization inside (RST normalizes in its data loader)."""

    def __init__(self, density: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        layers = vgg_features(VGG16_WITH_FINAL_POOL, SubnetConv2d, conv_bias=False, affine_bn=False,
                              density=density)
        self.features = nn.Sequential(*layers, nn.AvgPool2d(kernel_size=1, stride=1))
        self.classifier = SubnetConv2d(512, num_classes, 1, bias=False, density=density)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).flatten(1)


CIFAR10_MEAN_MAD = (0.4914, 0.4822, 0.4465)
CIFAR10_STD_MAD = (0.2023, 0.1994, 0.2010)


class MadVGG16(nn.Module):
    """MAD VGG16: ``feature`` = 13 SoftplusMaskConv2d 3x3 (no bias) + affine BN + ReLU with 4 max-pools (no pool
    after the last stage), then AvgPool2d(2) on the 2x2 map, flatten, ``classifier`` = SoftplusMaskLinear(512, 10).
    The forward first applies ``(x - mean) / std`` (plain attributes, not saved)."""

    def __init__(self, num_classes: int = 10, mean: Sequence[float] = CIFAR10_MEAN_MAD,
                 std: Sequence[float] = CIFAR10_STD_MAD) -> None:
        super().__init__()
        self.input_mean = torch.tensor(list(mean)).view(1, -1, 1, 1)
        self.input_std = torch.tensor(list(std)).view(1, -1, 1, 1)
        self.feature = nn.Sequential(*vgg_features(VGG16_WITHOUT_FINAL_POOL, SoftplusMaskConv2d, conv_bias=False,
                                                   affine_bn=True))
        self.classifier = SoftplusMaskLinear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.feature((x - self.input_mean) / self.input_std)
        return self.classifier(F.avg_pool2d(out, 2).flatten(1))


class Li20VGG16(nn.Sequential):
    """Li20's saved object: Sequential(features, AvgPool2d(2), Flatten, head).

    ``0`` = 13 conv3x3 (no bias) + affine BN + ReLU with 4 max-pools; ``3`` = Linear(512, 512)-BatchNorm1d(512)-
    ReLU-Linear(512, 10). No normalization inside (Li20 normalizes in its data loader)."""

    def __init__(self, num_classes: int = 10) -> None:
        features = nn.Sequential(*vgg_features(VGG16_WITHOUT_FINAL_POOL, nn.Conv2d, conv_bias=False,
                                               affine_bn=True))
        head = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                             nn.Linear(512, num_classes))
        super().__init__(features, nn.AvgPool2d(2), nn.Flatten(), head)

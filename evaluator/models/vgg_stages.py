"""VGG16 written as named stages, with conv bias: the original benchmark's ``models/pwoa.py`` ``VGG16``.

Keys: ``layer1``-``layer5`` are stages of Conv2d(3x3, pad 1, bias)-BatchNorm-ReLU blocks (``layerN.i.0`` conv,
``layerN.i.1`` BatchNorm; 2, 2, 3, 3, 3 blocks), stages 1-4 end in a 2x2 max-pool and stage 5 in
AdaptiveAvgPool2d(2, 2); ``layer6.0`` Linear 2048->256 (+ReLU), ``layer7.0`` Linear 256->256 (+ReLU),
``layer8`` Linear 256->10. The computation is the base VGG16's with conv biases.
"""
from __future__ import annotations

import torch
from torch import nn

STAGE_WIDTHS: tuple[tuple[int, ...], ...] = ((3, 64, 64), (64, 128, 128), (128, 256, 256, 256),
                                             (256, 512, 512, 512), (512, 512, 512, 512))


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv2d 3x3 pad 1 with bias, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class VGG16Stages(nn.Module):
    """VGG16-bn with conv bias in five named stages and a 2048-256-256-10 classifier in three named layers."""

    layer1: nn.Sequential  # set by name in __init__; declared for the type checker
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    layer5: nn.Sequential

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        for number, widths in enumerate(STAGE_WIDTHS, start=1):
            pool: nn.Module = nn.AdaptiveAvgPool2d((2, 2)) if number == len(STAGE_WIDTHS) else nn.MaxPool2d(2, 2)
            blocks = [conv_block(cin, cout) for cin, cout in zip(widths[:-1], widths[1:])]
            setattr(self, f"layer{number}", nn.Sequential(*blocks, pool))
        self.layer6 = nn.Sequential(nn.Linear(2048, 256), nn.ReLU(inplace=True))
        self.layer7 = nn.Sequential(nn.Linear(256, 256), nn.ReLU(inplace=True))
        self.layer8 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.layer8(self.layer7(self.layer6(out.flatten(1))))

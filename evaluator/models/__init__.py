"""Base architectures of the benchmark (32x32 inputs in [0, 1], 10 classes) and the normalization wrapper."""
from __future__ import annotations

from typing import Callable

from torch import nn

from evaluator.models.normalize import Normalized
from evaluator.models.resnet import ResNet18
from evaluator.models.vgg import VGG16

ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"resnet18": ResNet18, "vgg16": VGG16}

__all__ = ["ARCHITECTURES", "Normalized", "ResNet18", "VGG16", "build_model"]


def build_model(architecture: str) -> nn.Module:
    """A freshly initialised base model (wrap it in :class:`Normalized` for a normalization)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: {architecture!r} is not one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]()

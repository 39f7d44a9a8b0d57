"""Base architectures of the benchmark (32x32 inputs in [0, 1], 10 classes) and the normalization wrapper."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from evaluator.models.normalize import Normalized
from evaluator.models.resnet import ResNet18
from evaluator.models.vgg import VGG16

ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"resnet18": ResNet18, "vgg16": VGG16}

__all__ = ["ARCHITECTURES", "Normalized", "ResNet18", "VGG16", "build_model"]


def build_model(architecture: str, normalization: Any = None) -> nn.Module:
    """A freshly initialised base model; wrapped in :class:`Normalized` when *normalization* (an object with
    ``mean`` and ``std``, a ``{"mean": ..., "std": ...}`` mapping or a ``(mean, std)`` pair) is given."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: {architecture!r} is not one of {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[architecture]()
    if normalization is None:
        return model
    mean, std = _mean_and_std(normalization)
    return Normalized(model, mean, std)


def _mean_and_std(normalization: Any) -> tuple[Any, Any]:
    if isinstance(normalization, dict):
        return normalization["mean"], normalization["std"]
    if hasattr(normalization, "mean") and hasattr(normalization, "std"):
        return normalization.mean, normalization.std
    mean, std = normalization
    return mean, std

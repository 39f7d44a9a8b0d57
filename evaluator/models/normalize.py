"""Input normalization as a wrapper module: models always take images in [0, 1]."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalized(nn.Module):
    """``model((x - mean) / std)`` with per-channel *mean* and *std*; the wrapped model stays ``.model``.

    The statistics are non-persistent buffers, so ``state_dict()`` holds only the wrapped model's keys
    (under ``model.``) and ``.to(device)`` moves them along.
    """

    mean: torch.Tensor  # buffers registered in __init__; declared for the type checker
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"normalization needs 3 channel values, got mean={list(mean)} std={list(std)}")
        if any(float(s) <= 0 for s in std):
            raise ValueError(f"normalization std must be positive, got {list(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"

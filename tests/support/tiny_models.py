"""Tiny, seeded models for the attack tests: a linear classifier with closed-form Linf and L2 distances and a CNN;
the registered norms they are attacked in."""
from __future__ import annotations

import math

import torch
from torch import nn

from evaluator.registry.norms import get_norm

LINF, L2 = get_norm("Linf"), get_norm("L2")


class LinearClassifier(nn.Module):
    """``logits = W x + b`` on flattened inputs; its minimal Linf and L2 distances are known in closed form."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def linear_classifier(shape: tuple[int, ...] = (3, 8, 8), classes: int = 10, seed: int = 0) -> LinearClassifier:
    """A random linear classifier over inputs of ``shape``."""
    generator = torch.Generator().manual_seed(seed)
    features = int(torch.tensor(shape).prod())
    weight = torch.randn(classes, features, generator=generator) / features ** 0.5
    bias = 0.1 * torch.randn(classes, generator=generator)
    return LinearClassifier(weight, bias)


def interior_inputs(count: int, shape: tuple[int, ...] = (3, 8, 8), seed: int = 1) -> torch.Tensor:
    """Inputs in [0.25, 0.75], far from the box edges, so a perturbation below 0.25 never meets the box."""
    generator = torch.Generator().manual_seed(seed)
    return 0.25 + 0.5 * torch.rand(count, *shape, generator=generator)


def exact_distances(model: LinearClassifier, inputs: torch.Tensor, labels: torch.Tensor, p: float = math.inf
                    ) -> torch.Tensor:
    """Minimal ``||.||_p`` distance to a misclassification, ignoring the box: ``min_j margin_j / ||w_y - w_j||_q``
    with ``q`` the dual order of ``p`` (Linf: 1; L2: 2).

    Exact when the result stays below the inputs' distance to the box edges (see ``interior_inputs``);
    0 where the input is already misclassified.
    """
    weight, bias = model.linear.weight.detach(), model.linear.bias.detach()
    logits = model(inputs).detach()
    margins = logits.gather(1, labels[:, None]) - logits                     # z_y - z_j, (n, classes)
    dual = 1.0 if math.isinf(p) else p / (p - 1)
    norms = torch.linalg.vector_norm(weight[labels][:, None, :] - weight[None, :, :], ord=dual, dim=-1)
    ratios = (margins / norms).scatter(1, labels[:, None], float("inf"))
    return ratios.amin(dim=1).clamp(min=0)


class TinyCNN(nn.Module):
    """Two conv blocks and a linear head: 3x16x16 (or 3x32x32) inputs, 10 classes."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(4),
        )
        self.head = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def tiny_cnn(seed: int = 0, classes: int = 10) -> TinyCNN:
    """A seeded ``TinyCNN`` in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TinyCNN(classes).eval()

"""Checkpoints as authors' training scripts save them: a CIFAR ResNet18 pruned with torch.nn.utils.prune (the
``weight_orig`` / ``weight_mask`` pairs kept), wrapped in DataParallel (``module.`` keys) and saved inside a
dict with the epoch, the best accuracy and the optimizer's settings.

For speed its classifier is constant (zero weights, a large bias for class 9): on test sets without class 9
no sample is classified correctly, so the attacks of a smoke evaluation have nothing to attack and the
ResNet18 runs forward passes only."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from evaluator.registry.variants import build_model

CONSTANT_CLASS = 9


def pruned_resnet18(sparsity: int, seed: int = 0) -> nn.Module:
    """A ResNet18 whose every Conv2d is L1-pruned to *sparsity* percent by torch.nn.utils.prune (masks kept)."""
    torch.manual_seed(seed)
    model = build_model("resnet18")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, "weight", amount=sparsity / 100)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
        model.linear.bias[CONSTANT_CLASS] = 10.0
    return model.eval()


def save_training_checkpoint(model: nn.Module, path: Path) -> Path:
    """``torch.save({'state_dict': DataParallel(model).state_dict(), 'epoch': ..., ...}, path)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": nn.DataParallel(model).state_dict(), "epoch": 100, "best_acc": 80.1,
                "optimizer": {"lr": 0.1, "momentum": 0.9}}, path)
    return path


def labels_without_constant_class(n: int) -> list[int]:
    """Labels cycling through 0..8 (never the constant class)."""
    return [i % CONSTANT_CLASS for i in range(n)]

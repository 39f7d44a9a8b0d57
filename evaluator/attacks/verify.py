"""Verified per-sample results: an adversarial counts only if the model, asked again, misclassifies it.

Rules (one place, used for AutoAttack and HO-FMN alike):

- clean input misclassified -> distance ``0`` (not robust at any epsilon);
- otherwise the candidate ``adv`` is an adversarial when it is finite, lies in the box ``[0, 1]`` (up to
  the norm's tolerance) and the model misclassifies it -> distance ``||adv - x||_p`` (float32), ``p`` the
  threat model's norm (``evaluator/registry/norms.yaml``);
- otherwise -> distance ``inf`` (no adversarial found).

A sample is robust at ``eps`` when its distance exceeds ``eps + tolerance``, the norm's tolerance (why it
exists and its size: ``evaluator/registry/norms.yaml``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from evaluator.attacks.common import frozen_for_attack, lp_norms, misclassified
from evaluator.errors import APBError
from evaluator.registry.norms import Norm


def predicted_wrong(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
                    batch_size: int = 256) -> torch.Tensor:
    """Per sample: does the model misclassify it? Batched, without gradients."""
    flags = torch.empty(len(inputs), dtype=torch.bool, device=inputs.device)
    with frozen_for_attack(model), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            stop = start + batch_size
            flags[start:stop] = misclassified(model(inputs[start:stop]), labels[start:stop])
    return flags


def verified_distances(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, adv: torch.Tensor, *,
                       norm: Norm, batch_size: int = 256) -> torch.Tensor:
    """Verified minimal-distance result per sample (float32): 0, ``||adv - x||_p`` or ``inf`` (module doc)."""
    if adv.shape != inputs.shape:
        raise APBError(f"adv: shape {tuple(adv.shape)} differs from the inputs' {tuple(inputs.shape)}",
                       file="attack results")
    adv = adv.detach().to(inputs.device)
    clean_wrong = predicted_wrong(model, inputs, labels, batch_size=batch_size)
    flat = adv.flatten(1)
    valid = (torch.isfinite(flat).all(dim=1)
             & (flat.amin(dim=1) >= -norm.tolerance) & (flat.amax(dim=1) <= 1 + norm.tolerance))
    adv_wrong = predicted_wrong(model, torch.where(valid.view(-1, *[1] * (adv.ndim - 1)), adv, inputs), labels,
                                batch_size=batch_size)
    distances = torch.where(valid & adv_wrong, lp_norms(adv - inputs, norm.p).float(),
                            torch.full((len(inputs),), math.inf, device=inputs.device))
    return torch.where(clean_wrong, torch.zeros_like(distances), distances)


def within_eps(distances: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Per sample: broken within ``eps`` (distance <= eps + the norm's tolerance; 0 = misclassified clean)."""
    return distances <= eps + norm.tolerance


def robust_within(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, adv: torch.Tensor,
                  eps: float, *, norm: Norm, batch_size: int = 256) -> torch.Tensor:
    """Per sample: clean-correct and ``adv`` is no verified adversarial within ``eps`` (bool)."""
    return ~within_eps(verified_distances(model, inputs, labels, adv, norm=norm, batch_size=batch_size), eps, norm)

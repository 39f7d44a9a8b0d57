"""Verified per-sample results: an adversarial counts only if the model, asked again, misclassifies it.

Rules (one place, used for AutoAttack and HO-FMN alike):

- clean input misclassified -> distance ``0`` (not robust at any epsilon);
- otherwise the candidate ``adv`` is an adversarial when it is finite, lies in the box ``[0, 1]`` (up to
  ``LINF_TOLERANCE``) and the model misclassifies it -> distance ``||adv - x||_inf`` (float32);
- otherwise -> distance ``inf`` (no adversarial found).

A sample is robust at ``eps`` when its distance exceeds ``eps + LINF_TOLERANCE``. The tolerance
(1e-6, about 1/4000 of one 8-bit grey level) absorbs float32 rounding of ``x + delta`` near 1 (one ulp
is 6e-8) so that an attack that projects exactly onto the eps-ball is not refused for rounding, while no
perturbation meaningfully larger than eps can count.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from evaluator.attacks.common import frozen_for_attack, linf_norms, misclassified
from evaluator.errors import APBError
from evaluator.record.records import LINF_TOLERANCE


def predicted_wrong(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
                    batch_size: int = 256) -> torch.Tensor:
    """Per sample: does the model misclassify it? Batched, without gradients."""
    flags = torch.empty(len(inputs), dtype=torch.bool, device=inputs.device)
    with frozen_for_attack(model), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            stop = start + batch_size
            flags[start:stop] = misclassified(model(inputs[start:stop]), labels[start:stop])
    return flags


def linf_distances(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, adv: torch.Tensor, *,
                   batch_size: int = 256) -> torch.Tensor:
    """Verified minimal-distance result per sample (float32): 0, ``||adv - x||_inf`` or ``inf`` (module doc)."""
    if adv.shape != inputs.shape:
        raise APBError(f"adv: shape {tuple(adv.shape)} differs from the inputs' {tuple(inputs.shape)}",
                       file="attack results")
    adv = adv.detach().to(inputs.device)
    clean_wrong = predicted_wrong(model, inputs, labels, batch_size=batch_size)
    flat = adv.flatten(1)
    valid = (torch.isfinite(flat).all(dim=1)
             & (flat.amin(dim=1) >= -LINF_TOLERANCE) & (flat.amax(dim=1) <= 1 + LINF_TOLERANCE))
    adv_wrong = predicted_wrong(model, torch.where(valid.view(-1, *[1] * (adv.ndim - 1)), adv, inputs), labels,
                                batch_size=batch_size)
    distances = torch.where(valid & adv_wrong, linf_norms(adv - inputs).float(),
                            torch.full((len(inputs),), math.inf, device=inputs.device))
    return torch.where(clean_wrong, torch.zeros_like(distances), distances)


def within_eps(distances: torch.Tensor, eps: float) -> torch.Tensor:
    """Per sample: broken within ``eps`` (distance <= eps + LINF_TOLERANCE; 0 = misclassified clean)."""
    return distances <= eps + LINF_TOLERANCE


def robust_within(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, adv: torch.Tensor,
                  eps: float, *, batch_size: int = 256) -> torch.Tensor:
    """Per sample: clean-correct and ``adv`` is no verified adversarial within ``eps`` (bool)."""
    return ~within_eps(linf_distances(model, inputs, labels, adv, batch_size=batch_size), eps)

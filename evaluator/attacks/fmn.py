"""Fast Minimum-Norm attack in the HO-FMN variant (Pintor et al. 2021; Mura et al. 2024), for the norm
``||.||_p`` with ``p`` = ``inf`` or 2 (the ``p`` of a norm of ``evaluator/registry/norms.yaml``).

One step, per sample:

1. evaluate ``x + delta``; when it is misclassified and smaller than the best so far, keep it;
2. update the norm constraint ``epsilon``: shrink it by ``(1 - gamma)`` (and never above the best norm)
   where the point is adversarial, grow it by ``(1 + gamma)`` where it is not but an adversarial was
   found before, leave it unbounded (``inf``) while none was found; never above the largest
   distance the box allows. ``gamma`` is cosine-annealed from ``gamma_init`` to ``gamma_final``;
3. descend on ``-objective`` with a ``torch.optim`` optimizer whose gradient is the steepest direction of
   the norm (Linf: the *sign* of the gradient; L2: the gradient over its L2 norm), the learning rate
   following the scheduler;
4. project ``delta`` onto the ``epsilon`` ball (Linf: clip; L2: scale down), then ``x + delta`` onto the
   box ``[0, 1]``.

The attack is deterministic: it draws no random numbers.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from evaluator.attacks.common import Objective, frozen_for_attack, lp_norms, misclassified, objective_named
from evaluator.errors import APBError

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam}
SCHEDULERS = ("cosine", "none")
DEFAULT_OPTIMIZER_PARAMS = {"lr": 1.0}


@dataclass
class Trackers:
    """Per-sample state of a run: the best adversarial so far and the norm constraint."""

    best_norm: torch.Tensor
    best_adv: torch.Tensor
    adv_found: torch.Tensor
    epsilon: torch.Tensor
    worst_norm: torch.Tensor


def cosine_anneal(initial: float, final: float, step: int, steps: int) -> float:
    """``final + (initial - final) * (1 + cos(pi * step / steps)) / 2``: ``initial`` at step 0."""
    return final + (initial - final) * (1 + math.cos(math.pi * step / steps)) / 2


def updated_epsilon(epsilon: torch.Tensor, *, is_adv: torch.Tensor, adv_found: torch.Tensor,
                    best_norm: torch.Tensor, worst_norm: torch.Tensor, gamma: float) -> torch.Tensor:
    """The next norm constraint per sample (see the module docstring, step 2)."""
    grown = torch.where(adv_found, epsilon * (1 + gamma), torch.full_like(epsilon, math.inf))
    shrunk = torch.minimum(epsilon * (1 - gamma), best_norm)
    return torch.minimum(torch.where(is_adv, shrunk, grown), worst_norm)


def project_linf_(delta: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """Clip each sample of ``delta`` to ``[-epsilon, epsilon]`` in place (``inf`` leaves it free)."""
    bound = epsilon.view(-1, *[1] * (delta.ndim - 1))
    return torch.clamp(delta, min=-bound, max=bound, out=delta)


def project_l2_(delta: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """Scale each sample of ``delta`` onto the L2 ball of radius ``epsilon`` in place where it lies outside
    (``inf`` leaves it free)."""
    norms = lp_norms(delta, 2)
    factor = torch.where(norms > epsilon, epsilon / norms, torch.ones_like(norms))
    return delta.mul_(factor.view(-1, *[1] * (delta.ndim - 1)))


def _sign(grad: torch.Tensor) -> torch.Tensor:
    return grad.sign()


def _unit_l2(grad: torch.Tensor) -> torch.Tensor:
    return grad / lp_norms(grad, 2).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))


# per p: (projection onto the p-ball in place, steepest ascent direction of a unit p-norm step)
GEOMETRY: dict[float, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                            Callable[[torch.Tensor], torch.Tensor]]] = {
    math.inf: (project_linf_, _sign), 2.0: (project_l2_, _unit_l2)}


def geometry(p: float) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                                Callable[[torch.Tensor], torch.Tensor]]:
    """FMN's projection and steepest direction for ``||.||_p``, or an error saying where to add them."""
    if float(p) not in GEOMETRY:
        raise APBError(f"p: FMN has no projection and step for p = {p}; add them to GEOMETRY in "
                       "evaluator/attacks/fmn.py (known: inf, 2)", file="attack options")
    return GEOMETRY[float(p)]


def project_box_(delta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Make ``inputs + delta`` lie in ``[0, 1]`` by changing ``delta`` in place."""
    return delta.add_(inputs).clamp_(0, 1).sub_(inputs)


def track_best(trackers: Trackers, adv_inputs: torch.Tensor, delta_norm: torch.Tensor,
               is_adv: torch.Tensor) -> None:
    """Keep, per sample, the adversarial input with the smallest norm seen so far."""
    better = is_adv & (delta_norm < trackers.best_norm)
    trackers.adv_found |= is_adv
    trackers.best_norm = torch.where(better, delta_norm, trackers.best_norm)
    torch.where(better.view(-1, *[1] * (adv_inputs.ndim - 1)), adv_inputs, trackers.best_adv, out=trackers.best_adv)


def optimizer_kwargs(optimizer: str, params: dict | None) -> dict:
    """Keyword arguments for the torch optimizer; ``beta1``/``beta2`` become Adam's ``betas``."""
    if optimizer not in OPTIMIZERS:
        raise APBError(f"optimizer: unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}",
                       file="attack options")
    kwargs = dict(DEFAULT_OPTIMIZER_PARAMS if params is None else params)
    if "beta1" in kwargs or "beta2" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1", 0.9), kwargs.pop("beta2", 0.999))
    accepted = set(inspect.signature(OPTIMIZERS[optimizer]).parameters) - {"params"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise APBError(f"optimizer_params: {', '.join(unknown)} is not a parameter of torch.optim.{optimizer}; "
                       f"use some of {', '.join(sorted(accepted | {'beta1', 'beta2'}))}", file="attack options")
    return kwargs


def make_optimizer(delta: torch.Tensor, optimizer: str, params: dict | None) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer over the single tensor ``delta``; the fused kernel (one pass over ``delta``
    per step; SGD gives bit-identical results, Adam equal up to float rounding) unless ``params`` choose
    ``fused``/``foreach`` themselves."""
    kwargs = optimizer_kwargs(optimizer, params)
    if not {"fused", "foreach"} & set(kwargs) and delta.device.type in ("cpu", "cuda") and delta.is_floating_point():
        kwargs["fused"] = True
    return OPTIMIZERS[optimizer]([delta], **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, scheduler: str | None,
                   steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Cosine annealing (``T_max = steps``, ``eta_min = 0``) or none."""
    if scheduler not in (*SCHEDULERS, None):
        raise APBError(f"scheduler: unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}",
                       file="attack options")
    if scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.0)
    return None


def steepest_step(optimizer: torch.optim.Optimizer, delta: torch.Tensor, direction: torch.Tensor) -> None:
    """One optimizer step that sees ``direction`` (the steepest direction of the gradient in the attack's norm)
    as the gradient of ``delta``, laid out as ``delta`` is: a model
    that works in channels_last hands back a channels_last input gradient, and torch's fused SGD applies a
    gradient of other strides in memory order, to the wrong elements (torch 2.14, measured)."""
    # a new tensor, not in place: autograd may return an expanded (shared-memory) gradient
    delta.grad = torch.empty_like(delta, memory_format=torch.preserve_format).copy_(direction)
    optimizer.step()


def boundary_search(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, starting_points: torch.Tensor,
                    *, p: float, steps: int = 10) -> torch.Tensor:
    """Initial ``delta``: a binary search between the inputs and adversarial starting points, mid-points
    projected onto the p-ball of the mid radius."""
    project = geometry(p)[0]
    with torch.no_grad():
        if not misclassified(model(starting_points), labels).all():
            raise APBError("starting_points: every starting point must be misclassified", file="attack options")
        full_delta = starting_points - inputs
        lower = torch.zeros(len(inputs), device=inputs.device)
        upper = torch.ones(len(inputs), device=inputs.device)
        for _ in range(steps):
            middle = (lower + upper) / 2
            mid_delta = project(full_delta.clone(), middle * lp_norms(full_delta, p))
            is_adv = misclassified(model(inputs + mid_delta), labels)
            lower = torch.where(is_adv, lower, middle)
            upper = torch.where(is_adv, middle, upper)
        return project(full_delta, upper * lp_norms(full_delta, p))


def initial_trackers(inputs: torch.Tensor, p: float) -> Trackers:
    """Nothing found yet: unbounded constraint, the input itself as the best point."""
    n = len(inputs)
    return Trackers(
        best_norm=torch.full((n,), math.inf, device=inputs.device),
        best_adv=inputs.clone(),
        adv_found=torch.zeros(n, dtype=torch.bool, device=inputs.device),
        epsilon=torch.full((n,), math.inf, device=inputs.device),
        worst_norm=lp_norms(torch.maximum(inputs, 1 - inputs), p),
    )


def fmn_step(model: nn.Module, objective: Objective, inputs: torch.Tensor, labels: torch.Tensor,
             delta: torch.Tensor, trackers: Trackers, optimizer: torch.optim.Optimizer, gamma: float,
             p: float) -> None:
    """One FMN iteration (module docstring, steps 1-4); updates ``delta`` and ``trackers`` in place."""
    project, direction = geometry(p)
    adv_inputs = inputs + delta
    logits = model(adv_inputs)
    is_adv = misclassified(logits, labels)
    with torch.no_grad():
        track_best(trackers, adv_inputs.detach(), lp_norms(delta, p), is_adv)
        trackers.epsilon = updated_epsilon(trackers.epsilon, is_adv=is_adv, adv_found=trackers.adv_found,
                                           best_norm=trackers.best_norm, worst_norm=trackers.worst_norm,
                                           gamma=gamma)
    (grad,) = torch.autograd.grad(-objective(logits, labels).sum(), delta)
    steepest_step(optimizer, delta, direction(grad))
    with torch.no_grad():
        project_box_(project(delta, trackers.epsilon), inputs)


def fmn(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, p: float, steps: int, loss: str = "DLR",
        optimizer: str = "SGD", optimizer_params: dict | None = None, scheduler: str | None = "cosine",
        gamma_init: float = 0.05, gamma_final: float = 0.001,
        starting_points: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample the misclassified input of smallest ``||adv - x||_p`` FMN found (``p``: ``inf`` or 2), or the
    input itself where none was found.

    ``loss``: LL, DLR or CE (see ``evaluator.attacks.common``); ``optimizer``: SGD or Adam with
    ``optimizer_params`` (default ``{"lr": 1.0}``; Adam also takes ``beta1``/``beta2``); ``scheduler``:
    ``cosine`` (``T_max = steps``, ``eta_min = 0``) or ``none``. Inputs must lie in ``[0, 1]``; the
    result lives on the inputs' device.
    """
    if steps < 1:
        raise APBError(f"steps: must be at least 1, got {steps}", file="attack options")
    if inputs.numel() and (inputs.min() < 0 or inputs.max() > 1):
        raise APBError("inputs: values must lie in [0, 1]; remove the normalization from the data "
                       "(the model wrapper normalizes)", file="attack options")
    objective = objective_named(loss)
    geometry(p)
    inputs, labels = inputs.detach(), labels.detach()
    with frozen_for_attack(model):
        delta = (torch.zeros_like(inputs) if starting_points is None
                 else boundary_search(model, inputs, labels, starting_points.detach(), p=p))
        delta.requires_grad_(True)
        opt = make_optimizer(delta, optimizer, optimizer_params)
        sched = make_scheduler(opt, scheduler, steps)
        trackers = initial_trackers(inputs, p)
        for step in range(steps):
            fmn_step(model, objective, inputs, labels, delta, trackers, opt,
                     cosine_anneal(gamma_init, gamma_final, step, steps), p)
            if sched is not None:
                sched.step()
    return trackers.best_adv

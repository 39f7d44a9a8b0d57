"""HO-FMN (Mura et al. 2024): tune FMN's optimizer parameters per model, then attack with the tuned FMN.

Tuning minimizes the median verified distance (in the threat model's norm) on a tuning batch (misclassified or
failed samples count as ``inf``; the median is the lower median, as ``torch.median``). The engine is Optuna: a
scrambled Sobol start (``startup_trials`` points, enqueued) followed by the GP sampler
(``deterministic_objective``: the objective is a deterministic function of the parameters), all seeded.
The search space is data: ``{name: {"low": float, "high": float, "log": bool}}``, names being keyword
arguments of the torch optimizer (plus ``beta1``/``beta2`` for Adam).
"""
from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import torch
from torch import nn
from tqdm import tqdm

from evaluator.attacks.fmn import fmn, optimizer_kwargs
from evaluator.attacks.verify import verified_distances
from evaluator.errors import APBError
from evaluator.registry.norms import Norm

SPACE_FIELDS = {"low", "high", "log"}


@dataclass
class TuningResult:
    """Best parameters, their objective value and every trial as ``(params, value)`` in order.

    ``attack_seconds`` is the time spent running FMN and verifying it, ``engine_seconds`` the rest
    (Optuna's sampling and bookkeeping): the optimizer-engine overhead.
    """

    best_params: dict[str, float]
    best_value: float
    trials: list[tuple[dict[str, float], float]]
    attack_seconds: float = 0.0
    engine_seconds: float = 0.0


def search_distributions(search_space: dict, optimizer: str) -> dict[str, optuna.distributions.FloatDistribution]:
    """Optuna distributions for a search space given as data; errors name the offending field."""
    if not isinstance(search_space, dict) or not search_space:
        raise APBError("search_space: must be a non-empty mapping of parameter name to {low, high, log}",
                       file="tuning options")
    distributions = {}
    for name, spec in search_space.items():
        where = f"search_space.{name}"
        if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - SPACE_FIELDS:
            raise APBError(f"{where}: must be a mapping with low, high and optionally log, got {spec!r}",
                           file="tuning options")
        low, high, log = spec["low"], spec["high"], spec.get("log", False)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise APBError(f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}",
                           file="tuning options")
        if not isinstance(log, bool) or (log and low <= 0):
            raise APBError(f"{where}: log must be true or false, and true only with low > 0", file="tuning options")
        distributions[name] = optuna.distributions.FloatDistribution(float(low), float(high), log=log)
    optimizer_kwargs(optimizer, {name: d.low for name, d in distributions.items()})
    return distributions


def sobol_points(distributions: dict[str, optuna.distributions.FloatDistribution], count: int,
                 seed: int) -> list[dict[str, float]]:
    """``count`` scrambled-Sobol parameter sets spread over the space (log dimensions in log scale)."""
    if count <= 0:
        return []
    unit = torch.quasirandom.SobolEngine(len(distributions), scramble=True, seed=seed).draw(count, dtype=torch.float64)
    points = []
    for row in unit.tolist():
        point = {}
        for u, (name, d) in zip(row, distributions.items()):
            if d.log:
                value = math.exp(math.log(d.low) + u * (math.log(d.high) - math.log(d.low)))
            else:
                value = d.low + u * (d.high - d.low)
            point[name] = min(max(value, d.low), d.high)
        points.append(point)
    return points


def median_distance(distances: torch.Tensor) -> float:
    """The tuning objective: lower median of the distances with misclassified (0) counted as ``inf``."""
    return float(torch.where(distances > 0, distances, math.inf).median())


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines and experimental/inf-clipping warnings, for the duration."""
    logger = optuna.logging.get_logger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="Clip non-finite values")
            yield
    finally:
        logger.setLevel(level)


def make_study(distributions: dict, *, seed: int, startup_trials: int) -> optuna.Study:
    """A seeded in-memory Optuna study: enqueued Sobol start, then the GP sampler."""
    sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials, deterministic_objective=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for point in sobol_points(distributions, startup_trials, seed):
        study.enqueue_trial(point)
    return study


def evaluate_params(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, params: dict, *, norm: Norm,
                    steps: int, loss: str, optimizer: str, scheduler: str | None) -> float:
    """Median verified distance of FMN with ``params`` on the tuning batch."""
    adv = fmn(model, inputs, labels, p=norm.p, steps=steps, loss=loss, optimizer=optimizer, optimizer_params=params,
              scheduler=scheduler)
    return median_distance(verified_distances(model, inputs, labels, adv, norm=norm))


def best_trial(trials: list[tuple[dict[str, float], float]]) -> tuple[dict[str, float], float]:
    """The trial with the smallest value; the earliest among equals."""
    return min(trials, key=lambda trial: trial[1])


def tune_fmn(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, norm: Norm, search_space: dict,
             trials: int = 32, steps: int = 100, seed: int = 0, loss: str = "DLR", optimizer: str = "SGD",
             scheduler: str | None = "cosine", startup_trials: int = 8, progress: bool = True) -> TuningResult:
    """Bayesian optimization of FMN's optimizer parameters on one batch (module docstring); deterministic."""
    if trials < 1:
        raise APBError(f"trials: must be at least 1, got {trials}", file="tuning options")
    distributions = search_distributions(search_space, optimizer)
    started = time.perf_counter()
    attack_seconds = 0.0
    history: list[tuple[dict[str, float], float]] = []
    with quiet_optuna():
        study = make_study(distributions, seed=seed, startup_trials=min(startup_trials, trials))
        fixed: dict[str, optuna.distributions.BaseDistribution] = dict(distributions)
        bar = tqdm(total=trials, desc="HO-FMN tuning", unit="trial", file=sys.stderr, disable=not progress)
        with bar:
            for _ in range(trials):
                trial = study.ask(fixed_distributions=fixed)
                attack_started = time.perf_counter()
                value = evaluate_params(model, inputs, labels, trial.params, norm=norm, steps=steps, loss=loss,
                                        optimizer=optimizer, scheduler=scheduler)
                attack_seconds += time.perf_counter() - attack_started
                study.tell(trial, value)
                history.append((dict(trial.params), value))
                bar.set_postfix(best=f"{best_trial(history)[1]:.5f}")
                bar.update()
    best_params, best_value = best_trial(history)
    total = time.perf_counter() - started
    return TuningResult(best_params=dict(best_params), best_value=best_value, trials=history,
                        attack_seconds=attack_seconds, engine_seconds=total - attack_seconds)


def hofmn_attack(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, norm: Norm, params: dict,
                 steps: int = 200, loss: str = "DLR", optimizer: str = "SGD",
                 scheduler: str | None = "cosine") -> torch.Tensor:
    """The tuned FMN: ``fmn`` in ``norm`` with the tuned optimizer ``params``; returns the best adversarials."""
    return fmn(model, inputs, labels, p=norm.p, steps=steps, loss=loss, optimizer=optimizer, optimizer_params=params,
               scheduler=scheduler)

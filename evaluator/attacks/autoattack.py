"""AutoAttack (Croce & Hein 2020) in a registered norm, through the official code: PyPI ``pyautoattack`` or the git
``autoattack``.

The adapter never reads stdout. AutoAttack's own sanity checks (randomized / dynamic defense, probability
outputs, zero gradients, Square stronger than the gradient attacks, ...) are collected as ``warnings``:
from the ``auto-attack`` logger for ``pyautoattack``, from the logger object for the git module.
Per-sample robustness is recomputed from the returned adversarials with ``verify.robust_within``.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import nn

from evaluator.attacks.common import frozen_for_attack
from evaluator.attacks.verify import robust_within
from evaluator.errors import APBError
from evaluator.registry.norms import Norm

IMPLEMENTATIONS = ("pyautoattack", "autoattack")
LOGGER_NAME = "auto-attack"


@dataclass
class AutoAttackResult:
    """What one AutoAttack run gives: adversarials, verified robust flags and AutoAttack's own warnings."""

    adv: torch.Tensor
    robust: torch.Tensor
    warnings: list[str] = field(default_factory=list)
    attacks_to_run: list[str] = field(default_factory=list)
    implementation: str = ""


def load_implementation() -> ModuleType:
    """The installed official AutoAttack: ``pyautoattack`` (preferred) or the git ``autoattack`` module."""
    for name in IMPLEMENTATIONS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise APBError("AutoAttack is not installed; run `pip install pyautoattack==0.2.0`", file="environment")


class _WarningCollector(logging.Handler):
    """Collects, in order and once each, the warnings logged while it is attached."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        add_once(self.messages, record.getMessage())

    def log(self, message: str) -> None:
        """The git module's ``Logger.log`` interface: its checks log ``'Warning: ...'``."""
        if str(message).startswith("Warning: "):
            add_once(self.messages, str(message)[len("Warning: "):])


def add_once(messages: list[str], message: str) -> None:
    """Append ``message`` unless it is already there (order kept)."""
    if message not in messages:
        messages.append(message)


@contextmanager
def collected_warnings() -> Iterator[_WarningCollector]:
    """Attach a collector to the ``auto-attack`` logger and record Python warnings, for the duration."""
    collector = _WarningCollector()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(collector)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield collector
    finally:
        logger.removeHandler(collector)
    for item in caught:  # AutoAttack's checks warn with the bare ``Warning`` class; pass the rest on
        if item.category is Warning:
            add_once(collector.messages, str(item.message))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def _run_pyautoattack(module: ModuleType, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
                      norm: str, eps: float, version: str, attacks: list[str] | None, seed: int, batch_size: int,
                      device: str, collector: _WarningCollector) -> tuple[torch.Tensor, list[str]]:
    adversary = module.AutoAttack(model, norm=norm, eps=eps, version=version, attacks=attacks, seed=seed,
                                  device=device)
    adv, _ = adversary.run_standard_evaluation(inputs, labels, batch_size=batch_size)
    return adv, list(adversary.attacks_to_run)


def _run_git_autoattack(module: ModuleType, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
                        norm: str, eps: float, version: str, attacks: list[str] | None, seed: int,
                        batch_size: int, device: str, collector: _WarningCollector) -> tuple[torch.Tensor, list[str]]:
    adversary = module.AutoAttack(model, norm=norm, eps=eps, seed=seed, verbose=False, version=version,
                                  attacks_to_run=[] if attacks is None else attacks, device=device)
    for owner in (adversary, adversary.apgd, adversary.apgd_targeted):
        owner.logger = collector
    adv = adversary.run_standard_evaluation(inputs, labels, bs=batch_size)
    return adv, list(adversary.attacks_to_run)


def autoattack(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, norm: Norm, eps: float,
               version: str = "standard", seed: int = 0, batch_size: int = 500,
               device: str | None = None, attacks: list[str] | None = None) -> AutoAttackResult:
    """Run AutoAttack (``norm``, ``eps``, ``version``, ``seed``) on the frozen model; flags verified per sample.

    ``attacks`` (e.g. ``["apgd-ce", "apgd-t"]``) is for ``version="custom"`` only, as in AutoAttack.
    """
    if (version == "custom") != (attacks is not None):
        raise APBError("attacks: give a list of attacks exactly when version is 'custom'", file="attack options")
    module = load_implementation()
    run = _run_pyautoattack if module.__name__ == "pyautoattack" else _run_git_autoattack
    device = str(inputs.device) if device is None else device
    with frozen_for_attack(model), collected_warnings() as collector:
        adv, attacks_run = run(module, model, inputs.detach(), labels.detach(), norm=norm.autoattack, eps=eps,
                               version=version, attacks=attacks, seed=seed, batch_size=batch_size, device=device,
                               collector=collector)
    adv = adv.detach().to(inputs.device)
    robust = robust_within(model, inputs, labels, adv, eps, norm=norm, batch_size=batch_size)
    return AutoAttackResult(adv=adv, robust=robust, warnings=collector.messages, attacks_to_run=attacks_run,
                            implementation=module.__name__)

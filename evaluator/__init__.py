"""Adversarial Pruning Benchmark evaluator (console script ``apb``).

The seed-compatible API (``load_model``, ``load_local_model``, ``model_key_maker``, ``test_model_aa``, ``test_model_hofmn``,
``benchmark``, ``load_distance``, ``plot_sec_curve``, ``load_ap_taxonomy``) is importable from here; each
name is loaded lazily so ``import evaluator`` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "model_key_maker": "evaluator.registry.model_keys",
    "parse_model_key": "evaluator.registry.model_keys",
    "load_model": "evaluator.api",
    "load_local_model": "evaluator.api",
    "load_ap_taxonomy": "evaluator.api",
    "test_model_aa": "evaluator.api",
    "test_model_hofmn": "evaluator.api",
    "benchmark": "evaluator.api",
    "load_distance": "evaluator.api",
    "plot_sec_curve": "evaluator.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evaluator' has no attribute {name!r}")

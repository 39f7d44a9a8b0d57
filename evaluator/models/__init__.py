"""Network builders of the benchmark (32x32 inputs in [0, 1]) and the normalization wrapper; which builder
makes which architecture and variant is said by ``variants.yaml`` (``evaluator.registry.variants.build_model``)."""
from __future__ import annotations

from evaluator.models.normalize import Normalized

__all__ = ["Normalized"]

"""``ModelEntry`` objects for tests, built with the real constructor."""
from __future__ import annotations

from pathlib import Path

from evaluator.repository.manifest import ModelEntry, Normalization

AP_KEY = "Demo_Doe2024Demo"


def make_entry(**fields) -> ModelEntry:
    """A ResNet18 / CIFAR10 / weights 90 entry of ``AP_KEY``; *fields* override any field."""
    normalization = fields.pop("normalization", None)
    if isinstance(normalization, dict):
        normalization = Normalization(tuple(normalization["mean"]), tuple(normalization["std"]))
    values = {"ap_key": AP_KEY, "architecture": "resnet18", "dataset": "CIFAR10", "structure": "weights",
              "sparsity": 90, "url": "https://example.org/ckpt.pt", "sha256": None, "imported": None,
              "format": "torch", "state_dict_key": None, "strip_prefix": None, "normalization": normalization,
              "claimed": None, "manifest_path": Path(f"submissions/{AP_KEY}/manifest.yaml"), "line": 7, "index": 0}
    values.update(fields)
    return ModelEntry(**values)

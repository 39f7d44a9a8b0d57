"""The closed registry of architecture variants (``evaluator/models/variants.yaml``); imports no torch.

A manifest entry names its architecture family (``resnet18`` / ``vgg16``: the leaderboard column) and,
optionally, a ``variant`` of that family: the exact module layout its checkpoint was saved from. Each variant is
one builder in a module of this package; the registry file says which, with where its layout comes from.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR

if TYPE_CHECKING:
    from torch import nn

VARIANTS_FILE = PACKAGE_DIR / "models" / "variants.yaml"
_MODULE_PREFIX = "evaluator.models."


@dataclass(frozen=True)
class Variant:
    """One architecture variant: its family, its builder and the facts a reader needs about it."""

    name: str
    family: str
    builder: str  # "<module>:<callable>" inside evaluator.models
    description: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> int:
        """The number of logits the variant's head gives (10 unless its options say ``num_classes``)."""
        return int(self.options.get("num_classes", 10))

    def build(self) -> nn.Module:
        module_name, _, attribute = self.builder.partition(":")
        module = importlib.import_module(_MODULE_PREFIX + module_name)
        return getattr(module, attribute)(**self.options)


@functools.lru_cache(maxsize=1)
def variants() -> dict[str, Variant]:
    """Every registered variant by name, in file order."""
    from evaluator.untrusted.safeio import load_yaml

    data, lines = load_yaml(VARIANTS_FILE)
    found: dict[str, Variant] = {}
    problems = []
    for name, spec in (data.get("variants") or {}).items():
        try:
            found[name] = Variant(name=name, family=spec["family"], builder=spec["builder"],
                                  description=spec["description"], source=spec["source"],
                                  options=dict(spec.get("options") or {}))
        except (KeyError, TypeError) as error:
            problems.append(Problem(str(VARIANTS_FILE), f"variant {name!r}: needs family, builder, description "
                                                        f"and source ({error})", lines.line(("variants", name))))
    if problems:
        raise APBError(problems)
    return found


def get_variant(name: str) -> Variant:
    """The registered variant *name*; ``ValueError`` listing the known ones otherwise."""
    known = variants()
    if name not in known:
        raise ValueError(f"variant {name!r} is not one of {', '.join(known)}")
    return known[name]


def build_variant(name: str) -> nn.Module:
    """A freshly initialised model of the variant *name* (logits for its ``outputs`` classes from 32x32 inputs)."""
    return get_variant(name).build()


def variant_names(family: str | None = None) -> list[str]:
    """The registered variant names, of one family or all."""
    return [name for name, variant in variants().items() if family is None or variant.family == family]

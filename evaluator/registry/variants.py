"""The closed registries of architectures and their variants (``evaluator/models/variants.yaml``); imports no torch.

A manifest entry names its architecture family (an ``architectures`` entry: the leaderboard column, its model-key
code, title and plot marker) and, optionally, a ``variant`` of that family: the exact module layout its
checkpoint was saved from. Each variant is one builder in a module of ``evaluator.models``; the registry file
says which, with where its layout comes from. The variant named like its family is the family's base.
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


MARKERS = ("circle", "square")  # the point shapes of evaluator/render/svg.py


@dataclass(frozen=True)
class Architecture:
    """One architecture family: a leaderboard column."""

    name: str
    code: str  # the model key's architecture part
    title: str  # the column and legend title
    marker: str  # one of MARKERS: the point shape of its series in the efficiency figures


@dataclass(frozen=True)
class Variant:
    """One architecture variant: its family, its builder and the facts a reader needs about it."""

    name: str
    family: str
    builder: str  # "<module>:<callable>" inside evaluator.models
    description: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)

    def outputs(self, classes: int) -> int:
        """The number of logits the variant's head gives on a dataset of *classes* classes: *classes*, unless
        its options say ``num_classes`` (a head as trained, e.g. 100 outputs evaluated on 10 classes)."""
        return int(self.options.get("num_classes", classes))

    def build(self, classes: int) -> nn.Module:
        module_name, _, attribute = self.builder.partition(":")
        module = importlib.import_module(_MODULE_PREFIX + module_name)
        return getattr(module, attribute)(**{**self.options, "num_classes": self.outputs(classes)})


def _architecture(name: str, spec: Any) -> Architecture:
    """One ``architectures`` entry; ``ValueError`` naming the field otherwise."""
    if not isinstance(spec, dict):
        raise ValueError("must be a mapping {code: <key code>, title: <column title>, marker: <point shape>}")
    if not isinstance(spec.get("code"), str) or not spec["code"].isascii() or not spec["code"].isalnum():
        raise ValueError(f"code: must be ASCII letters and digits (a model key part), got {spec.get('code')!r}")
    if not isinstance(spec.get("title"), str) or not spec["title"].strip():
        raise ValueError(f"title: must be the column title (text), got {spec.get('title')!r}")
    if spec.get("marker") not in MARKERS:
        raise ValueError(f"marker: must be one of {', '.join(MARKERS)}, got {spec.get('marker')!r}")
    return Architecture(name, spec["code"], spec["title"], spec["marker"])


@functools.lru_cache(maxsize=1)
def architectures() -> dict[str, Architecture]:
    """Every registered architecture family by name, in file order (the leaderboard's column order)."""
    from evaluator.registry.entries import parse_section, read_registry

    data, lines = read_registry(VARIANTS_FILE)
    problems: list[Problem] = []
    found = parse_section(VARIANTS_FILE, data, lines, "architectures", _architecture, problems)
    for name in found:
        if name not in (data.get("variants") or {}):
            problems.append(Problem(str(VARIANTS_FILE), f"architectures.{name}: has no base variant; add a variant "
                                                        f"named {name} with family {name}",
                                    lines.line(("architectures", name))))
    codes = [architecture.code for architecture in found.values()]
    if not found or len(set(codes)) != len(codes):
        problems.append(Problem(str(VARIANTS_FILE), "architectures: must list at least one architecture, each "
                                                    f"with its own code (found {codes})", lines.line(("architectures",))))
    if problems:
        raise APBError(problems)
    return found


def architecture_names() -> tuple[str, ...]:
    """The registered architecture families, in the leaderboard's column order."""
    return tuple(architectures())


def _variant(name: str, spec: Any) -> Variant:
    """One ``variants`` entry; ``ValueError`` naming what it needs otherwise."""
    try:
        return Variant(name=name, family=spec["family"], builder=spec["builder"], description=spec["description"],
                       source=spec["source"], options=dict(spec.get("options") or {}))
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"needs family, builder, description and source ({error})") from None


@functools.lru_cache(maxsize=1)
def variants() -> dict[str, Variant]:
    """Every registered variant by name, in file order."""
    from evaluator.registry.entries import parse_section, read_registry

    data, lines = read_registry(VARIANTS_FILE)
    problems: list[Problem] = []
    found = parse_section(VARIANTS_FILE, data, lines, "variants", _variant, problems)
    families = architectures()
    for name, variant in found.items():
        if variant.family not in families:
            problems.append(Problem(str(VARIANTS_FILE), f"variants.{name}.family: {variant.family!r} is not one of "
                                    f"the architectures {', '.join(families)}", lines.line(("variants", name))))
    if problems:
        raise APBError(problems)
    return found


def get_variant(name: str) -> Variant:
    """The registered variant *name*; ``ValueError`` listing the known ones otherwise."""
    from evaluator.registry.entries import lookup

    return lookup(variants(), "variant", name, VARIANTS_FILE)


def build_variant(name: str, classes: int | None = None) -> nn.Module:
    """A freshly initialised model of the variant *name*: logits for its ``outputs(classes)`` classes from 32x32
    inputs, *classes* being the entry's dataset's class count (by default, the first registered dataset's)."""
    return get_variant(name).build(default_classes() if classes is None else classes)


def build_model(architecture: str, classes: int | None = None) -> nn.Module:
    """A freshly initialised base model of *architecture* (wrap it in ``evaluator.models.Normalized`` for a
    normalization); *classes* as for :func:`build_variant`."""
    if architecture not in architectures():
        raise ValueError(f"architecture: {architecture!r} is not one of {list(architectures())}")
    return build_variant(architecture, classes)


def default_classes() -> int:
    """The class count of the first registered dataset (the benchmark's default dataset, as ``apb`` and the API
    default to it): what a model built without naming a dataset outputs. A dataset added later with another
    class count changes nothing here; its entries build with their own count."""
    from evaluator.registry.datasets import datasets

    return next(iter(datasets().values())).classes


def variant_names(family: str | None = None) -> list[str]:
    """The registered variant names, of one family or all."""
    return [name for name, variant in variants().items() if family is None or variant.family == family]

"""Compliance: does a state dict fit a registered variant exactly, and if not, which variant and rules would.

This is a measurement below loading: :mod:`evaluator.checkpoint.load` refuses a state dict that does not fit, and
``apb check`` reports it, with the closest registered variant and the key rules that would make it fit.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from evaluator.paths import PACKAGE_DIR
from evaluator.registry.variants import build_variant, default_classes, variants

NORMALIZATION_KEY_HINTS = ("mean", "std")
SCORE_NAMES = ("scores", "popup_scores")  # edge-popup (RST) and HYDRA name the score tensor these ways
FOREIGN_LAYOUTS_FILE = PACKAGE_DIR / "models" / "foreign_layouts.yaml"


@dataclass
class ComplianceReport:
    """How a state dict fits a variant (what a strict ``load_state_dict`` would say), and a suggestion."""

    architecture: str  # the variant checked against
    n_keys: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[dict] = field(default_factory=list)  # {"key", "expected", "found"}
    suggestion: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatched)

    @property
    def target(self) -> str:
        """How messages name what was checked against: "the base resnet18" or "the variant preact-resnet18"."""
        base = variants()[self.architecture].family == self.architecture
        return f"the base {self.architecture}" if base else f"the variant {self.architecture}"

    def summary(self) -> str:
        if self.ok:
            return f"all {self.n_keys} keys match {self.target}"
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({listing(list(map(repr, self.missing)))})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({listing(list(map(repr, self.unexpected)))})")
        if self.shape_mismatched:
            shapes = [f"{m['key']!r}: expected {m['expected']}, found {m['found']}" for m in self.shape_mismatched]
            parts.append(f"{len(shapes)} with the wrong shape ({listing(shapes)})")
        if self.suggestion:
            parts.append(self.suggestion)
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "architecture": self.architecture, "n_keys": self.n_keys, "missing": self.missing,
                "unexpected": self.unexpected, "shape_mismatched": self.shape_mismatched,
                "suggestion": self.suggestion}

    def render_text(self) -> str:
        if self.ok:
            return f"compliance  ok: {self.summary()}"
        lines = [f"compliance  FAILED: the state dict does not load strictly into {self.target}"]
        lines += [f"    missing:    {key!r}" for key in self.missing]
        lines += [f"    unexpected: {key!r}" for key in self.unexpected]
        lines += [f"    shape:      {m['key']!r} expected {m['expected']} found {m['found']}"
                  for m in self.shape_mismatched]
        if self.suggestion:
            lines.append(f"    hint:       {self.suggestion}")
        return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def expected_shapes(variant: str, classes: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the variant's state dict for a dataset of *classes* classes (built on the meta device: no
    memory, no initialisation)."""
    with torch.device("meta"):
        model = build_variant(variant, classes)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def check_compliance(state_dict: dict[str, torch.Tensor], variant: str, classes: int | None = None) -> ComplianceReport:
    """Missing, unexpected and mis-shaped keys of *state_dict* against *variant* built for *classes* classes (the
    entry's dataset's; by default the first registered dataset's), exactly as a strict ``load_state_dict`` judges
    them (e.g. a missing BatchNorm ``num_batches_tracked`` is accepted); when it does not fit, the closest
    registered variant and the rules that would help are suggested."""
    classes = default_classes() if classes is None else classes
    with torch.device("meta"):
        model = build_variant(variant, classes)
    expected = model.state_dict()
    mismatched = [{"key": key, "expected": list(expected[key].shape), "found": list(value.shape)}
                  for key, value in state_dict.items() if key in expected and value.shape != expected[key].shape]
    wrong = {item["key"] for item in mismatched}
    result = model.load_state_dict({k: v for k, v in state_dict.items() if k not in wrong}, strict=False, assign=True)
    report = ComplianceReport(variant, len(state_dict), [k for k in result.missing_keys if k not in wrong],
                              list(result.unexpected_keys), mismatched)
    if not report.ok:
        head = head_outputs_hint(mismatched, variants()[variant].family, classes)
        report.suggestion = head or suggest_fix({key: tuple(value.shape) for key, value in state_dict.items()},
                                                variant, classes)
    return report


def suggest_fix(shapes: dict[str, tuple[int, ...]], declared: str, classes: int) -> str | None:
    """A sentence naming the variant and key rules under which *shapes* (the state dict after the entry's
    rules) fits best: the variant whose keys and shapes overlap most, after trying the usual rules. A known
    layout that is no benchmark architecture (torchvision's ImageNet models) is named as such."""
    foreign = foreign_layout(shapes)
    if foreign:
        return foreign
    best = closest_variant(shapes, classes)
    if best is None:
        return None
    name, rule, matched, total = best
    family = variants()[name].family
    declared_family = variants()[declared].family
    hints = [f"architecture: {family} (the checkpoint is a {family}, not a {declared_family}; its model key "
             f"changes with it)" if family != declared_family else "",
             f"variant: {name}" if name not in (declared, family) else ""] + [rule] + rule_hints(shapes)
    hints = [hint for hint in hints if hint]
    fit = f"{matched} of {total} keys of the variant {name} match by name and shape"
    if not hints:
        return f"closest variant: {name} ({fit}); the keys that differ are listed above"
    return f"closest variant: {name} ({fit}); try {', '.join(hints)}"


def closest_variant(shapes: dict[str, tuple[int, ...]], classes: int,
                    family: str | None = None) -> tuple[str, str, int, int] | None:
    """``(variant, rule, matched, total)``: the registered variant (of *family*, default any; built for *classes*
    classes) whose keys and
    shapes overlap most with *shapes*, as they are or with their common prefix stripped (*rule* then says
    ``strip_prefix: '<prefix>'``); None when no key matches any variant."""
    candidates = [("", shapes)]
    prefix = model_prefix(shapes)
    if prefix:
        candidates.append((f"strip_prefix: {prefix!r}", {k[len(prefix):]: v for k, v in shapes.items()}))
    best: tuple[float, str, str, int, int] | None = None
    for rule, keys in candidates:
        for name, variant in variants().items():
            if family is not None and variant.family != family:
                continue
            score, matched, total = overlap(keys, expected_shapes(name, classes))
            if best is None or score > best[0]:
                best = (score, name, rule, matched, total)
    if best is None or best[3] == 0:
        return None
    return best[1], best[2], best[3], best[4]


@functools.lru_cache(maxsize=1)
def _foreign_layouts() -> dict[str, Any]:
    from evaluator.untrusted.safeio import load_yaml

    data, _ = load_yaml(FOREIGN_LAYOUTS_FILE)
    return dict(data.get("foreign_layouts") or {})


def foreign_layout(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The message of a known non-benchmark layout (``evaluator/models/foreign_layouts.yaml``) that *shapes*
    has, looked for as the keys are and with their common prefix removed; None for any other layout."""
    prefix = common_prefix(shapes)
    stripped = {key[len(prefix):]: shape for key, shape in shapes.items()}
    for layout in _foreign_layouts().values():
        signs = sum(1 for sign in layout["signs"] if _sign_holds(sign, stripped))
        if signs >= int(layout.get("min_signs", len(layout["signs"]))):
            return " ".join(str(layout["message"]).split())
    return None


def _sign_holds(sign: dict, shapes: dict[str, tuple[int, ...]]) -> bool:
    shape = shapes.get(sign["key"])
    if shape is None:
        return False
    if "shape" in sign and list(shape) != list(sign["shape"]):
        return False
    return "kernel" not in sign or list(shape[-2:]) == list(sign["kernel"])


def overlap(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> tuple[float, int, int]:
    """(Jaccard score of the (key, shape) pairs, matched pairs, expected pairs) of a state dict and a variant."""
    found_pairs = {(key, shape) for key, shape in found.items() if not key.endswith("num_batches_tracked")}
    expected_pairs = {(key, shape) for key, shape in expected.items() if not key.endswith("num_batches_tracked")}
    matched = len(found_pairs & expected_pairs)
    union = len(found_pairs | expected_pairs)
    return (matched / union if union else 0.0), matched, len(expected_pairs)


def common_prefix(shapes: dict[str, tuple[int, ...]]) -> str:
    """The dotted prefix every key shares (``module.``, ``module.basic_model.``), or ''."""
    keys = list(shapes)
    parts = keys[0].split(".")[:-1] if keys else []
    prefix = ""
    for part in parts:
        candidate = f"{prefix}{part}."
        if not all(key.startswith(candidate) for key in keys):
            break
        prefix = candidate
    return prefix


def model_prefix(shapes: dict[str, tuple[int, ...]]) -> str:
    """The prefix the network's keys share, leaving out input-normalization tensors (a ``Sequential(Normalize,
    ResNet)`` saves ``0.mean``, ``0.std`` and ``1.<key>``: the model's prefix is ``1.``)."""
    buffers = set(normalization_keys(shapes))
    return common_prefix({key: shape for key, shape in shapes.items() if key not in buffers})


def head_outputs_hint(mismatched: list[dict], family: str, classes: int) -> str | None:
    """A sentence when the only difference of a mis-shaped layer is its number of outputs and the variant
    expects *classes* (the classifier): the network's output count against the dataset's classes, and what to do."""
    for item in mismatched:
        expected, found = item["expected"], item["found"]
        if len(expected) != len(found) or expected[1:] != found[1:] or expected[0] != classes or found[0] == classes:
            continue
        fitting = [name for name, variant in variants().items()
                   if variant.family == family and variant.outputs(classes) == found[0]]
        what = (f"set variant: {fitting[0]} (the network as trained: all {found[0]} outputs, a prediction outside "
                f"the {classes} classes counts as wrong)" if fitting else
                f"save the network your paper evaluated with a {classes}-output head (num_classes={classes}); no "
                f"registered {family} variant has {found[0]} outputs (evaluator/models/variants.yaml)")
        return (f"{item['key']} has {found[0]} rows: the network has {found[0]} outputs, but the dataset has "
                f"{classes} classes. apb never cuts a head to its first {classes} rows (that is another network: its "
                f"predictions and attacks differ); {what}")
    return None


def rule_hints(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Key rules suggested by tell-tale keys: pruning masks, edge-popup scores, normalization tensors."""
    hints = [f"masks: {rule}" + (" with keep_ratios (uniform or the per-layer ratios your code used)"
                                 if rule == "popup-scores" else "")
             for rule in mask_rules_present([key.rpartition(".")[2] for key in shapes])]
    normalization = normalization_keys(shapes)
    if normalization:
        hints.append(f"normalization_buffers for {', '.join(normalization[:2])} (normalization_buffers: "
                     f"{{mean: {normalization[0]}, std: {normalization[-1]}}} with normalization set to the values "
                     "they hold; `apb prepare` writes both)")
    return hints


def mask_rules_present(names: list[str]) -> list[str]:
    """The ``masks`` rules whose tell-tale tensors are among *names* (the last parts of the keys), in order of
    precedence: ``orig-mask`` (``*_orig``), ``popup-scores`` (``SCORE_NAMES``), ``softplus`` (``mask_*``)."""
    present = []
    if any(name.endswith("_orig") for name in names):
        present.append("orig-mask")
    if any(name in SCORE_NAMES for name in names):
        present.append("popup-scores")
    if any(name.startswith("mask_") for name in names):
        present.append("softplus")
    return present


def normalization_keys(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Keys that look like input-normalization tensors: named ``mean`` / ``std`` with 3 values (one per
    colour channel, e.g. shape (3,) or (1, 3, 1, 1)), the mean first."""
    found = [key for key, shape in shapes.items()
             if key.rpartition(".")[2] in NORMALIZATION_KEY_HINTS and math.prod(shape) == 3]
    return sorted(found, key=lambda key: NORMALIZATION_KEY_HINTS.index(key.rpartition(".")[2]))


def listing(items: list[str], limit: int = 5) -> str:
    """The first *limit* items, comma-separated, with a count of the rest."""
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

"""The closed registry of threat-model norms (``evaluator/registry/norms.yaml``) and the ``ThreatModel`` a
protocol fixes: a norm, an exact eps and the budgets of its security curves. Imports no torch.

Everything that depends on the norm reads it from here: the attacks (AutoAttack's norm name, FMN's ``p``),
verification (``||adv - x||_p`` and the tolerance), the curves (grid and tick labels) and the pages.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR

NORMS_FILE = PACKAGE_DIR / "registry" / "norms.yaml"
CURVE_FIELDS = ("step", "points", "tick_step", "tick_unit")
_NORM_FIELDS = ("p", "autoattack", "tolerance", "display", "curve")


@dataclass(frozen=True)
class CurveGrid:
    """The budgets of a security curve: ``0, step, 2 step, ...`` (``points`` of them), x ticks every
    ``tick_step``, labelled as multiples of ``tick_unit`` (``"k/255"``) or, without one, as decimals."""

    step: Fraction
    points: int
    tick_step: Fraction
    tick_unit: Fraction | None = None

    def __hash__(self) -> int:  # equal grids, equal step and size (the generated hash of four Fractions: 4 µs)
        return hash((self.step.numerator, self.step.denominator, self.points))

    @functools.cached_property
    def budgets(self) -> np.ndarray:
        """The grid as float64 (read-only): ``k * step`` computed as ``k * numerator / denominator``."""
        grid = np.arange(self.points, dtype=np.float64) * self.step.numerator / self.step.denominator
        grid.flags.writeable = False
        return grid

    @property
    def end(self) -> Fraction:
        return self.step * (self.points - 1)

    def index(self, eps: float) -> int:
        """The grid position of *eps* (the nearest grid budget)."""
        return int(np.abs(self.budgets - eps).argmin())

    def ticks(self) -> list[tuple[float, str]]:
        """``(budget, label)`` of each x tick up to the grid's end."""
        count = int(self.end / self.tick_step) + 1
        return [(float(k * self.tick_step), self.label(k * self.tick_step)) for k in range(count)]

    def point_label(self, k: int) -> str:
        """The label of the grid's *k*-th budget: as :meth:`label`, with two decimals where it is no whole
        multiple of ``tick_unit`` (``0.25/255``)."""
        value = k * self.step
        if self.tick_unit is None or (value / self.tick_unit).denominator == 1:
            return self.label(value)
        return f"{float(value / self.tick_unit):.2f}/{self.tick_unit.denominator}"

    def label(self, value: Fraction) -> str:
        """``0``, ``k/255`` (a multiple of a ``tick_unit`` 1/255) or a short decimal."""
        if value == 0:
            return "0"
        if self.tick_unit is not None:
            multiple = value / self.tick_unit
            return f"{multiple}/{self.tick_unit.denominator}" if self.tick_unit.numerator == 1 else f"{multiple}"
        return f"{float(value):g}"


@dataclass(frozen=True)
class Norm:
    """One registered norm: what the attacks, verification and pages need to know about it."""

    name: str  # as protocols write it: Linf, L2
    p: float  # the order of ||adv - x||_p; FMN runs with it
    autoattack: str  # AutoAttack's `norm` argument
    tolerance: float  # broken at eps when the verified distance is <= eps + tolerance
    display: str  # ℓ∞, ℓ2
    curve: CurveGrid  # the default curve budgets of a threat model in this norm


@dataclass(frozen=True)
class ThreatModel:
    """What a protocol's ``threat_model`` fixes: the norm, eps as an exact fraction and the curve budgets."""

    norm: Norm
    eps_fraction: Fraction
    curve: CurveGrid

    def __hash__(self) -> int:  # the renderer's caches key on a threat model per model drawn (generated: 7 µs)
        return hash((self.norm.name, self.eps_fraction.numerator, self.eps_fraction.denominator, self.curve))

    @property
    def eps(self) -> float:
        """eps as the float nearest the exact fraction (8/255 -> 0.03137254901960784)."""
        return float(self.eps_fraction)

    @property
    def tolerance(self) -> float:
        return self.norm.tolerance

    @property
    def key(self) -> tuple[str, Fraction]:
        """What makes two threat models comparable: the same norm and the same eps."""
        return (self.norm.name, self.eps_fraction)


def parse_fraction(value: Any) -> Fraction:
    """An exact number from ``"8/255"``, ``10``, ``0.9`` or ``"0.5"``; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number or a fraction such as \"8/255\", got {value!r}")
    try:
        return Fraction(value) if not isinstance(value, float) else Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number or a fraction such as \"8/255\", got {value!r}") from None


def _fraction(value: Any, where: str) -> Fraction:
    try:
        return parse_fraction(value)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def curve_grid(data: Any, where: str, default: CurveGrid | None = None) -> CurveGrid:
    """A ``CurveGrid`` from a mapping with ``step``, ``points``, ``tick_step`` and optional ``tick_unit`` (fields
    left out come from *default*); ``ValueError`` naming the field otherwise."""
    if not isinstance(data, dict) or set(data) - set(CURVE_FIELDS):
        raise ValueError(f"{where}: must be a mapping with fields among {', '.join(CURVE_FIELDS)}, got {data!r}")
    known = {} if default is None else {"step": default.step, "points": default.points,
                                        "tick_step": default.tick_step, "tick_unit": default.tick_unit}
    merged = {**known, **data}
    missing = [name for name in CURVE_FIELDS[:3] if name not in merged]
    if missing:
        raise ValueError(f"{where}: missing field {missing[0]!r}")
    points = merged["points"]
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"{where}.points: must be an integer >= 2, got {points!r}")
    step, tick_step = _fraction(merged["step"], f"{where}.step"), _fraction(merged["tick_step"], f"{where}.tick_step")
    unit = merged.get("tick_unit")
    tick_unit = None if unit is None else _fraction(unit, f"{where}.tick_unit")
    for name, value in (("step", step), ("tick_step", tick_step), ("tick_unit", tick_unit)):
        if value is not None and value <= 0:
            raise ValueError(f"{where}.{name}: must be positive, got {merged[name]!r}")
    return CurveGrid(step, points, tick_step, tick_unit)


def _norm(name: str, spec: Any) -> Norm:
    """One ``norms`` entry; ``ValueError`` naming the field otherwise."""
    if not isinstance(spec, dict) or set(spec) != set(_NORM_FIELDS):
        raise ValueError(f"needs exactly the fields {', '.join(_NORM_FIELDS)}")
    p, tolerance = (math.inf if spec["p"] == "inf" else spec["p"]), spec["tolerance"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"p: must be inf or a number >= 1, got {spec['p']!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1e-3:
        raise ValueError(f"tolerance: must be a number in [0, 1e-3), got {tolerance!r}")
    for text in ("autoattack", "display"):
        if not isinstance(spec[text], str) or not spec[text]:
            raise ValueError(f"{text}: must be a non-empty text")
    return Norm(name, float(p), spec["autoattack"], float(tolerance), spec["display"],
                curve_grid(spec["curve"], "curve"))


@functools.lru_cache(maxsize=1)
def norms() -> dict[str, Norm]:
    """Every registered norm by name, in file order."""
    from evaluator.registry.entries import parse_section, read_registry

    data, lines = read_registry(NORMS_FILE)
    problems: list[Problem] = []
    found = parse_section(NORMS_FILE, data, lines, "norms", _norm, problems)
    if problems:
        raise APBError(problems)
    return found


def get_norm(name: str) -> Norm:
    """The registered norm *name*; ``ValueError`` listing the known ones otherwise."""
    from evaluator.registry.entries import lookup

    return lookup(norms(), "norm", name, NORMS_FILE)


def threat_model(norm: str, eps: Fraction, curve: CurveGrid | None = None) -> ThreatModel:
    """The threat model of *norm* at *eps*, on *curve* or the norm's default curve budgets."""
    found = get_norm(norm)
    return ThreatModel(found, Fraction(eps), found.curve if curve is None else curve)

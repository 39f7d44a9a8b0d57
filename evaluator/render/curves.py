"""Security curves: robust accuracy (%) as a function of the budget, from per-sample minimal distances.

A sample's distance is the smallest perturbation (in the threat model's norm) found that changes its
prediction: ``0`` means the
clean input is already misclassified (non-robust at every budget), ``inf`` means no adversarial example
was found (counted robust at every budget, and reported in the legend). Robust accuracy at ``eps`` is the
share of samples whose distance is greater than ``eps`` plus the norm's tolerance, compared in float32 like
:meth:`evaluator.record.records.PerSample.hofmn_robust`.

:func:`curve_summary` reduces one model's distances to its robust accuracy at every budget of its threat model's
curve grid (``ThreatModel.curve``; Linf: 0 to 38/255 in steps of 1/1020, so every k/255 is a grid point): the
leaderboard and the site draw curves from these summaries, never holding the distances of more than one model
at a time.

Only matplotlib's object API and the Agg canvas are used (never pyplot), so figures do not depend on a
display, on global pyplot state, or on the user's ``matplotlibrc``; importing this module never imports
torch.
"""
from __future__ import annotations

import functools
import io
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, cast

from typing import TYPE_CHECKING

import numpy as np

from evaluator.registry.norms import CurveGrid, ThreatModel

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: the leaderboard's summaries never need it
    from matplotlib.figure import Figure

FIGSIZE_INCHES = (7.0, 4.6)
DPI = 100
GRID_POINTS = 751  # budgets drawn by security_curve: far finer than the curve grid
MARGINS = {"left": 0.085, "right": 0.98, "bottom": 0.11, "top": 0.93}  # fixed: no layout search per figure
_STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # shipped with matplotlib: same glyphs on every machine
    "font.size": 9.0,
    "svg.hashsalt": "apb",
    "path.simplify": False,
}
_LINESTYLES = ("-", "--", "-.", ":")


@functools.lru_cache(maxsize=8)
def _grid_budgets(curve: CurveGrid, tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The float32 budgets (grid plus tolerance), the budget of index i (past the grid: inf) and of index i - 1."""
    budgets = np.asarray(curve.budgets + tolerance, dtype=np.float32)
    at = np.concatenate([budgets, np.array([np.inf, np.inf], dtype=np.float32)])
    before = np.concatenate([np.array([-np.inf], dtype=np.float32), budgets, np.array([np.inf], dtype=np.float32)])
    return budgets, at, before


@contextmanager
def _fixed_style() -> Iterator[None]:
    """matplotlib's built-in defaults plus our few settings, whatever the user's matplotlibrc says."""
    import matplotlib
    import matplotlib.style

    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):  # type: ignore[arg-type]  # stubs: literal keys
        yield


def _as_distances(name: str, values: np.ndarray) -> np.ndarray:
    distances = np.asarray(values, dtype=np.float32).reshape(-1)
    if distances.size == 0:
        raise ValueError(f"distances of {name!r}: empty; a security curve needs at least one sample")
    if np.isnan(distances).any() or (distances < 0).any():
        raise ValueError(f"distances of {name!r}: NaN or negative values; distances are >= 0 (inf allowed)")
    return distances


def robust_accuracy(distances: np.ndarray, eps: float | np.ndarray, tolerance: float) -> np.ndarray:
    """Share (0-1) of samples whose minimal distance exceeds *eps* + *tolerance* (the norm's; *eps* a scalar or
    an array of budgets): the rule of ``PerSample.hofmn_robust``."""
    distances = np.sort(_as_distances("distances", distances))
    budgets = np.asarray(np.asarray(eps, dtype=np.float64) + tolerance, dtype=np.float32)
    not_robust = np.searchsorted(distances, budgets, side="right")
    return (distances.size - not_robust) / distances.size


def curve_summary(distances: np.ndarray, threat: ThreatModel) -> np.ndarray:
    """Robust accuracy at every budget of *threat*'s curve grid in hundredths of a percent (uint16: 4312 = 43.12%),
    by the rule of :func:`robust_accuracy` (a sample is broken at a budget once its distance is at most the
    float32 budget plus tolerance); one pass over the distances, no sort."""
    distances = _as_distances("distances", distances)
    step = threat.curve.step
    budgets, budget_at, budget_before = _grid_budgets(threat.curve, threat.tolerance)
    size = budgets.size
    # first budget index at or above each distance: estimated arithmetically (the grid is uniform), then made
    # exact against the float32 budgets (the estimate is off by at most one step)
    first = np.ceil((distances - np.float32(threat.tolerance)) * np.float32(step.denominator / step.numerator))
    first = np.clip(first, 0, size).astype(np.intp)  # inf -> size: never broken
    first += budget_at[first] < distances
    first -= budget_before[first] >= distances
    broken = np.cumsum(np.bincount(first, minlength=size + 2)[:size])
    return np.rint(10000.0 * (distances.size - broken) / distances.size).astype(np.uint16)


def axis_title(threat: ThreatModel) -> str:
    """The x axis of a curve: ``Linf perturbation budget ε``."""
    return f"{threat.norm.name} perturbation budget ε"


@functools.lru_cache(maxsize=256)
def eps_label(eps: float) -> str:
    """``8/255`` for budgets that are a small fraction of 1/255, else a short decimal."""
    fraction = Fraction(eps).limit_denominator(255)
    if fraction.denominator == 255 and abs(float(fraction) - eps) < 1e-12:
        return f"{fraction.numerator}/255"
    return f"{eps:.4g}"


def legend_label(name: str, distances: np.ndarray, threat: ThreatModel) -> str:
    """``name – 43.12%`` (robust accuracy at the threat model's eps), noting samples with no adversarial found."""
    distances = _as_distances(name, distances)
    label = f"{name} – {100.0 * float(robust_accuracy(distances, threat.eps, threat.tolerance)):.2f}%"
    unbroken = int(np.isinf(distances).sum())
    if unbroken:
        label += f" ({unbroken} with no adversarial found)"
    return label


def security_curve(distances: Mapping[str, np.ndarray], threat: ThreatModel, *, title: str | None = None) -> Figure:
    """One figure comparing models: robust accuracy (%) vs budget on *threat*'s curve grid (its ticks), a vertical
    line at its eps, legend entries ``name – robust accuracy at eps`` in the given order."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    if not distances:
        raise ValueError("security_curve needs at least one named distances array")
    eps_max, marked_eps = float(threat.curve.end), threat.eps
    budgets = np.linspace(0.0, eps_max, GRID_POINTS)
    with _fixed_style():
        figure = Figure(figsize=FIGSIZE_INCHES, dpi=DPI)
        figure.subplots_adjust(**MARGINS)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        palette = matplotlib.colormaps["tab10"]
        if not isinstance(palette, ListedColormap):
            raise TypeError("matplotlib's tab10 is expected to be a listed colour map")
        colors = cast(Sequence[Any], palette.colors)  # a tuple of RGB tuples for a listed map
        for i, (name, values) in enumerate(distances.items()):
            values = _as_distances(name, values)
            axes.plot(budgets, 100.0 * robust_accuracy(values, budgets, threat.tolerance),
                      color=colors[i % len(colors)], linestyle=_LINESTYLES[(i // len(colors)) % len(_LINESTYLES)],
                      linewidth=1.4, label=legend_label(name, values, threat))
        axes.axvline(marked_eps, color="0.3", linestyle="--", linewidth=1.0)
        axes.annotate(f"ε = {eps_label(marked_eps)}", xy=(marked_eps, 100.0), xytext=(3, -3),
                      textcoords="offset points", ha="left", va="top", color="0.3")
        axes.set_xlim(0.0, eps_max)
        axes.set_ylim(0.0, 100.0)
        ticks = threat.curve.ticks()
        axes.set_xticks([value for value, _ in ticks], [label for _, label in ticks])
        axes.set_xlabel(axis_title(threat))
        axes.set_ylabel("robust accuracy (%)")
        axes.grid(True, color="0.9", linewidth=0.6)
        axes.legend(loc="upper right", fontsize=7.5, title=f"robust accuracy at ε = {eps_label(marked_eps)}",
                    title_fontsize=7.5, frameon=True)
        if title:
            axes.set_title(title)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes with no timestamp or software metadata: same figure, same bytes."""
    buffer = io.BytesIO()
    with _fixed_style():
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def save_png(figure: Figure, path: Path | str) -> Path:
    """Write the figure as a deterministic PNG to *path*, atomically."""
    from evaluator.untrusted.safeio import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, png_bytes(figure))
    return path

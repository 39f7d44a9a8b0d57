"""Security curves: robust accuracy (%) as a function of the Linf budget, from per-sample minimal distances.

A sample's distance is the smallest Linf perturbation found that changes its prediction: ``0`` means the
clean input is already misclassified (non-robust at every budget), ``inf`` means no adversarial example
was found (counted robust at every budget, and reported in the legend). Robust accuracy at ``eps`` is the
share of samples whose distance is greater than ``eps``, compared in float32 like
:meth:`evaluator.record.records.PerSample.hofmn_robust`.

:func:`curve_summary` reduces one model's distances to its robust accuracy at every budget of ``EPS_GRID`` (0 to
38/255 in steps of 1/1020, so every k/255 is a grid point): the leaderboard and the site draw curves from these
summaries, never holding the distances of more than one model at a time.

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

from evaluator.record.records import LINF_TOLERANCE

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: the leaderboard's summaries never need it
    from matplotlib.figure import Figure

FIGSIZE_INCHES = (7.0, 4.6)
DPI = 100
GRID_POINTS = 751  # a step of 0.0002 on [0, 0.15]: far finer than 1/255
MARGINS = {"left": 0.085, "right": 0.98, "bottom": 0.11, "top": 0.93}  # fixed: no layout search per figure
_STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # shipped with matplotlib: same glyphs on every machine
    "font.size": 9.0,
    "svg.hashsalt": "apb",
    "path.simplify": False,
}
_LINESTYLES = ("-", "--", "-.", ":")
GRID_STEPS_PER_255 = 4
EPS_GRID = np.arange(0, 38 * GRID_STEPS_PER_255 + 1, dtype=np.float64) / (255 * GRID_STEPS_PER_255)
EPS_TICKS_255 = tuple(range(0, 37, 4))  # x ticks at k/255
_GRID_BUDGETS = np.asarray(EPS_GRID + LINF_TOLERANCE, dtype=np.float32)
_BUDGET_AT = np.concatenate([_GRID_BUDGETS, np.array([np.inf, np.inf], dtype=np.float32)])  # budget of index i (past the grid: inf)
_BUDGET_BEFORE = np.concatenate([np.array([-np.inf], dtype=np.float32), _GRID_BUDGETS, np.array([np.inf], dtype=np.float32)])  # of index i - 1


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


def robust_accuracy(distances: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """Share (0-1) of samples whose minimal distance exceeds *eps* + ``LINF_TOLERANCE`` (scalar or array of
    budgets): the rule of ``PerSample.hofmn_robust``."""
    distances = np.sort(_as_distances("distances", distances))
    budgets = np.asarray(np.asarray(eps, dtype=np.float64) + LINF_TOLERANCE, dtype=np.float32)
    not_robust = np.searchsorted(distances, budgets, side="right")
    return (distances.size - not_robust) / distances.size


def curve_summary(distances: np.ndarray) -> np.ndarray:
    """Robust accuracy at every budget of ``EPS_GRID`` in hundredths of a percent (uint16: 4312 = 43.12%),
    by the rule of :func:`robust_accuracy` (a sample is broken at a budget once its distance is at most the
    float32 budget plus tolerance); one pass over the distances, no sort."""
    distances = _as_distances("distances", distances)
    size = _GRID_BUDGETS.size
    # first budget index at or above each distance: estimated arithmetically (the grid is uniform), then made
    # exact against the float32 budgets (the estimate is off by at most one step)
    first = np.ceil((distances - np.float32(LINF_TOLERANCE)) * np.float32(255 * GRID_STEPS_PER_255))
    first = np.clip(first, 0, size).astype(np.intp)  # inf -> size: never broken
    first += _BUDGET_AT[first] < distances
    first -= _BUDGET_BEFORE[first] >= distances
    broken = np.cumsum(np.bincount(first, minlength=size + 2)[:size])
    return np.rint(10000.0 * (distances.size - broken) / distances.size).astype(np.uint16)


def grid_index(eps: float) -> int:
    """The ``EPS_GRID`` position of *eps* (the nearest grid budget)."""
    return int(np.abs(EPS_GRID - eps).argmin())


def tick_label(k: int) -> str:
    return "0" if k == 0 else f"{k}/255"


@functools.lru_cache(maxsize=256)
def eps_label(eps: float) -> str:
    """``8/255`` for budgets that are a small fraction of 1/255, else a short decimal."""
    fraction = Fraction(eps).limit_denominator(255)
    if fraction.denominator == 255 and abs(float(fraction) - eps) < 1e-12:
        return f"{fraction.numerator}/255"
    return f"{eps:.4g}"


def legend_label(name: str, distances: np.ndarray, marked_eps: float) -> str:
    """``name – 43.12%`` (robust accuracy at the marked budget), noting samples with no adversarial found."""
    distances = _as_distances(name, distances)
    label = f"{name} – {100.0 * float(robust_accuracy(distances, marked_eps)):.2f}%"
    unbroken = int(np.isinf(distances).sum())
    if unbroken:
        label += f" ({unbroken} with no adversarial found)"
    return label


def security_curve(distances: Mapping[str, np.ndarray], *, eps_max: float = 0.15, marked_eps: float = 8 / 255,
                   title: str | None = None) -> Figure:
    """One figure comparing models: robust accuracy (%) vs Linf budget on ``[0, eps_max]`` (ticks at k/255), a vertical
    line at *marked_eps*, legend entries ``name – robust accuracy at marked_eps`` in the given order."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    if not distances:
        raise ValueError("security_curve needs at least one named distances array")
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
            axes.plot(budgets, 100.0 * robust_accuracy(values, budgets), color=colors[i % len(colors)],
                      linestyle=_LINESTYLES[(i // len(colors)) % len(_LINESTYLES)], linewidth=1.4,
                      label=legend_label(name, values, marked_eps))
        axes.axvline(marked_eps, color="0.3", linestyle="--", linewidth=1.0)
        axes.annotate(f"ε = {eps_label(marked_eps)}", xy=(marked_eps, 100.0), xytext=(3, -3),
                      textcoords="offset points", ha="left", va="top", color="0.3")
        axes.set_xlim(0.0, eps_max)
        axes.set_ylim(0.0, 100.0)
        ticks = [k for k in range(0, int(eps_max * 255) + 1, 4)]
        axes.set_xticks([k / 255 for k in ticks], [tick_label(k) for k in ticks])
        axes.set_xlabel("Linf perturbation budget ε")
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

"""The leaderboard's figures, drawn from curve summaries (never from the distances themselves):

- a security curve per (protocol, dataset, structure, architecture, sparsity): the ``TOP_K`` models with the
  highest robust accuracy at the marked budget (the site compares any others), each in its 95% band;
- a curve per model page: the model's own curve, bold, over its column's top ``TOP_K`` in grey;
- per protocol and dataset, robust accuracy vs effective MACs per input of every evaluated model.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from evaluator.render.curves import EPS_GRID, EPS_TICKS_255, eps_label, grid_index, tick_label
from evaluator.render.layout import group_title
from evaluator.render.rows import Row
from evaluator.render.svg import Axis, Series, line_chart, log_ticks, pixel_points, scatter_chart, x_pixels, y_pixels
from evaluator.render.tables import ApLabel, column_title

TOP_K = 8  # curves per column figure
CONTEXT_K = 5  # grey curves under a model page's own curve
EPS_AXIS = Axis("Linf perturbation budget ε", 0.0, float(EPS_GRID[-1]), [(k / 255, tick_label(k)) for k in EPS_TICKS_255])
PERCENT_AXIS = Axis("robust accuracy (%)", 0.0, 100.0, [(v, f"{v}%") for v in range(0, 101, 20)])


DRAWN = np.r_[0:EPS_GRID.size:2, EPS_GRID.size - 1]  # every other grid budget (1/510 apart: under a pixel)


_DRAWN_X = x_pixels(EPS_GRID[DRAWN], EPS_AXIS)  # the same budgets on every curve: their pixels once


def curve_points(curve: np.ndarray) -> str:
    """The pixels of a curve summary's line on the curve axes."""
    return pixel_points(_DRAWN_X, y_pixels(curve[DRAWN].astype(np.float64) / 100.0, PERCENT_AXIS))


def curve_band(row: Row) -> str | None:
    """The pixels of the 95% band around a row's curve: at each drawn budget, the Wilson interval of its robust
    count on the samples the curve was measured on (about ±9 points at 128 samples, ±1 at 10,000)."""
    from evaluator.records import wilson_intervals

    if row.curve is None or not row.distance_counts:
        return None
    n = row.distance_counts[0]
    robust = np.rint(row.curve[DRAWN].astype(np.float64) * n / 10000.0)  # the counts the summary was made from
    low, high = wilson_intervals(robust, n)
    upper = pixel_points(_DRAWN_X, y_pixels(100.0 * high, PERCENT_AXIS))
    lower = pixel_points(_DRAWN_X[::-1], y_pixels(100.0 * low[::-1], PERCENT_AXIS))
    return f"{upper} {lower}"


def at_eps(row: Row, eps: float) -> float:
    """Robust accuracy (%) of a row's curve at the grid budget nearest *eps*."""
    assert row.curve is not None
    return float(row.curve[grid_index(eps)]) / 100.0


def top_rows(rows: Iterable[Row], labels: Mapping[str, ApLabel], eps: float, k: int = TOP_K) -> list[Row]:
    """The *k* rows with the highest robust accuracy at *eps* (ties by name, then model key)."""
    index = grid_index(eps)
    return sorted(rows, key=lambda r: (-int(r.curve[index]), labels[r.ap_key].name, r.model_key))[:k]  # type: ignore[index]


def curve_label(row: Row, labels: Mapping[str, ApLabel], eps: float) -> str:
    return f"{labels[row.ap_key].name} – {at_eps(row, eps):.2f}%"


def samples_note(rows: Sequence[Row]) -> str:
    ranges = sorted({r.sample_range for r in rows if r.sample_range})
    if len(ranges) == 1:
        first, stop = ranges[0]
        return f"samples {first}–{stop - 1}"
    return "samples as recorded"


def group_curve_svg(rows: Sequence[Row], labels: Mapping[str, ApLabel], protocol: str, eps: float) -> str:
    """The curves of one column's top ``TOP_K`` models (legend: robust accuracy at *eps*)."""
    shown = top_rows(rows, labels, eps)
    first = rows[0]
    title = (f"{group_title(first.group)} · {column_title(first.column)} · {protocol} "
             f"({samples_note(rows)})")
    series = [Series(curve_label(r, labels, eps), curve_points(r.curve), band=curve_band(r))  # type: ignore[arg-type]
              for r in shown]
    legend = (f"HO-FMN at {eps_label(eps)}, top {len(shown)} of {len(rows)}" if len(rows) > len(shown) else
              f"HO-FMN at ε = {eps_label(eps)}")
    return line_chart(title, series, EPS_AXIS, PERCENT_AXIS, marker=(eps, f"ε = {eps_label(eps)}"),
                      legend_title=legend)


def model_curve_svg(row: Row, top: Sequence[Row], top_pixels: Mapping[str, str], labels: Mapping[str, ApLabel],
                    protocol: str, eps: float) -> str:
    """One model's curve (bold) over the grey curves of its column's top rows *top* (whose pixels are
    *top_pixels*, by model key: drawn once per column, not once per page)."""
    context = [r for r in top if r.model_key != row.model_key]
    series = [Series("", top_pixels[r.model_key], context=True) for r in context]
    own = top_pixels.get(row.model_key) or curve_points(row.curve)  # type: ignore[arg-type]
    series.append(Series(curve_label(row, labels, eps), own, emphasis=True, band=curve_band(row)))
    if context:
        series.insert(0, Series(f"grey: the column's top {len(context)}", [], context=True))
    title = f"{row.model_key} · {protocol} ({samples_note([row])})"
    return line_chart(title, series, EPS_AXIS, PERCENT_AXIS, marker=(eps, f"ε = {eps_label(eps)}"),
                      legend_title=f"HO-FMN at ε = {eps_label(eps)}")


EFFICIENCY_SERIES = (("US", "resnet18"), ("US", "vgg16"), ("S", "resnet18"), ("S", "vgg16"))


def efficiency_svg(points: Mapping[tuple[str, str], Sequence[tuple[float, float]]], protocol: str, dataset: str,
                   metric_title: str) -> str:
    """Robust accuracy (*metric_title*) vs effective MACs per input, a colour per structure and architecture;
    *points*: ``(structure kind, architecture) -> [(effective MACs, robust accuracy), ...]`` (sorted)."""
    low = min(series[0][0] for series in points.values()) / 1.5
    high = max(series[-1][0] for series in points.values()) * 1.5
    x = Axis("effective multiply-accumulates per input (log scale)", low, high, log_ticks(low, high), log=True)
    y = Axis(f"{metric_title} robust accuracy (%)", 0.0, 100.0, [(v, f"{v}%") for v in range(0, 101, 20)])
    series = []
    for kind, architecture in EFFICIENCY_SERIES:
        chosen = points.get((kind, architecture))
        if chosen:
            title = column_title((architecture, 0)).rsplit(" ", 1)[0]
            series.append(Series(f"{title}, {kind}", chosen, marker="square" if architecture == "vgg16" else "circle"))
    count = sum(len(chosen) for chosen in points.values())
    return scatter_chart(f"{dataset} · {protocol}: robust accuracy vs effective MACs ({count} models)",
                         series, x, y, legend_title="structure")

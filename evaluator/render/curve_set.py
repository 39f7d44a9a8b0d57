"""The leaderboard's figures, drawn from curve summaries (never from the distances themselves):

- a security curve per (protocol, dataset, structure, architecture, sparsity): the column's models of the first
  ``TOP_K`` APs of the table the figure illustrates, in that table's order (its metric, its rank groups; the
  site compares any others), each in its 95% band, its legend naming each AP's rank in that table;
- a curve per model page: the model's own curve, bold, over its column's first ``CONTEXT_K`` in grey;
- per protocol, dataset and structure, robust accuracy vs effective MACs per input of every evaluated model,
  with the Pareto front named.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from evaluator.registry.norms import ThreatModel
from evaluator.registry.variants import MARKERS, architectures
from evaluator.render.curves import axis_title, eps_label
from evaluator.render.layout import architecture_sort_key, group_title
from evaluator.render.rows import Row
from evaluator.render.svg import (LEGEND_ROOM, LEGEND_SIZE, Axis, Mark, Series, fitted, line_chart, log_ticks,
                                  pixel_points, scatter_chart, shortened, si_label, x_pixels, y_pixels)
from evaluator.render.tables import UNRANKED, ApLabel, RankedRow, column_title

TOP_K = 8  # curves per column figure
CONTEXT_K = 5  # grey curves under a model page's own curve
PERCENT_AXIS = Axis("robust accuracy (%)", 0.0, 100.0, [(v, f"{v}%") for v in range(0, 101, 20)])


@functools.lru_cache(maxsize=8)
def eps_axis(threat: ThreatModel) -> tuple[Axis, np.ndarray, np.ndarray]:
    """The x axis of *threat*'s curves (its grid and ticks), the grid positions drawn (every other budget, and
    the last: Linf's are 1/510 apart, under a pixel) and their pixels (the same on every curve: computed once)."""
    grid = threat.curve.budgets
    axis = Axis(axis_title(threat), 0.0, float(grid[-1]), threat.curve.ticks())
    drawn = np.r_[0:grid.size:2, grid.size - 1]
    return axis, drawn, x_pixels(grid[drawn], axis)


def curve_points(curve: np.ndarray, threat: ThreatModel) -> str:
    """The pixels of a curve summary's line on the curve axes."""
    _, drawn, drawn_x = eps_axis(threat)
    return pixel_points(drawn_x, y_pixels(curve[drawn].astype(np.float64) / 100.0, PERCENT_AXIS))


def curve_band(row: Row, threat: ThreatModel) -> str | None:
    """The pixels of the 95% band around a row's curve: at each drawn budget, the Wilson interval of its robust
    count on the samples the curve was measured on (about ±9 points at 128 samples, ±1 at 10,000)."""
    from evaluator.record.records import wilson_intervals

    if row.curve is None or not row.distance_counts:
        return None
    n = row.distance_counts[0]
    _, drawn, drawn_x = eps_axis(threat)
    robust = np.rint(row.curve[drawn].astype(np.float64) * n / 10000.0)  # the counts the summary was made from
    low, high = wilson_intervals(robust, n)
    upper = pixel_points(drawn_x, y_pixels(100.0 * high, PERCENT_AXIS))
    lower = pixel_points(drawn_x[::-1], y_pixels(100.0 * low[::-1], PERCENT_AXIS))
    return f"{upper} {lower}"


def at_eps(row: Row, threat: ThreatModel) -> float:
    """Robust accuracy (%) of a row's curve at the grid budget nearest *threat*'s eps."""
    assert row.curve is not None
    return float(row.curve[threat.curve.index(threat.eps)]) / 100.0


@dataclass(frozen=True)
class TableOrder:
    """The order of the table a column's figures illustrate: its name (``AutoAttack table``) and each AP's place
    in it, ``ap_key -> (position, rank)`` (rank None: unranked)."""

    table: str
    places: Mapping[str, tuple[int, int | None]]

    @classmethod
    def of(cls, table: str, ranked: Sequence[RankedRow]) -> "TableOrder":
        return cls(table, {row.ap_key: (position, row.rank) for position, row in enumerate(ranked)})

    def rank(self, ap_key: str) -> str:
        """``#3`` (``#–`` unranked or not in the table), as the table's # column says."""
        rank = self.places.get(ap_key, (0, None))[1]
        return f"#{UNRANKED if rank is None else rank}"


def top_rows(rows: Iterable[Row], order: TableOrder, labels: Mapping[str, ApLabel], k: int = TOP_K) -> list[Row]:
    """The rows of the first *k* APs of *order* that have a row here, in its order (APs not in the table after,
    by name; then by model key)."""
    last = len(order.places)
    return sorted(rows, key=lambda r: (order.places.get(r.ap_key, (last, None))[0], labels[r.ap_key].name,
                                       r.model_key))[:k]


def curve_label(row: Row, labels: Mapping[str, ApLabel], threat: ThreatModel, order: TableOrder) -> str:
    """``#2 HYDRA – 43.12%``: the AP's rank in the illustrated table, its name, its robust accuracy at *threat*'s
    eps."""
    rank, value = f"{order.rank(row.ap_key)} ", f" – {at_eps(row, threat):.2f}%"
    return fitted(rank, labels[row.ap_key].name, value, LEGEND_ROOM, LEGEND_SIZE, bold=True)  # bold on its page


def samples_note(rows: Sequence[Row]) -> str:
    ranges = sorted({r.sample_range for r in rows if r.sample_range})
    if len(ranges) == 1:
        first, stop = ranges[0]
        return f"samples {first}–{stop - 1}"
    return "samples as recorded"


def group_curve_svg(rows: Sequence[Row], labels: Mapping[str, ApLabel], protocol: str, threat: ThreatModel,
                    order: TableOrder) -> str:
    """The curves of one column's first ``TOP_K`` models in the order of the table they illustrate (legend:
    rank in that table, robust accuracy at *threat*'s eps)."""
    shown = top_rows(rows, order, labels)
    eps = threat.eps
    first = rows[0]
    title = (f"{group_title(first.group)} · {column_title(first.column)} · {protocol} "
             f"({samples_note(rows)})")
    series = [Series(curve_label(r, labels, threat, order), curve_points(r.curve, threat),  # type: ignore[arg-type]
                     band=curve_band(r, threat)) for r in shown]
    chosen = f"\nits top {len(shown)} of {len(rows)}" if len(rows) > len(shown) else ""
    return line_chart(title, series, eps_axis(threat)[0], PERCENT_AXIS, marker=(eps, f"ε = {eps_label(eps)}"),
                      legend_title=f"HO-FMN at ε = {eps_label(eps)}\norder: {order.table}{chosen}")


def context_series(top: Sequence[Row], labels: Mapping[str, ApLabel], threat: ThreatModel,
                   order: TableOrder) -> dict[str, Series]:
    """The grey curves of a column's first rows *top* in the order of the illustrated table, by model key: drawn
    once per column and reused on each of its model pages."""
    return {r.model_key: Series(curve_label(r, labels, threat, order),
                                curve_points(r.curve, threat), context=True)  # type: ignore[arg-type]
            for r in top}


def model_curve_svg(row: Row, context: Mapping[str, Series], labels: Mapping[str, ApLabel], protocol: str,
                    threat: ThreatModel, order: TableOrder) -> str:
    """One model's curve (bold) over the grey curves of its column's first rows (*context*, from
    :func:`context_series`; the model's own among them is drawn bold instead)."""
    series = [item for model_key, item in context.items() if model_key != row.model_key]
    own = (context[row.model_key].points if row.model_key in context
           else curve_points(row.curve, threat))  # type: ignore[arg-type]
    shown = len(series)
    series.append(Series(curve_label(row, labels, threat, order), own, emphasis=True, band=curve_band(row, threat)))
    eps = threat.eps
    if shown:
        series.insert(0, Series(f"grey: {order.table}'s top {shown}", [], context=True))
    title = f"{row.model_key} · {protocol} ({samples_note([row])})"
    mark = autoattack_mark(row, threat)
    return line_chart(title, series, eps_axis(threat)[0], PERCENT_AXIS, marker=(eps, f"ε = {eps_label(eps)}"),
                      legend_title=f"HO-FMN at ε = {eps_label(eps)}", marks=[mark] if mark else [])


def autoattack_mark(row: Row, threat: ThreatModel) -> Mark | None:
    """AutoAttack's robust accuracy at the protocol's ε on the samples of the model's curve, with its 95% interval,
    and how many samples the two attacks disagree on: where the square sits off the HO-FMN curve, one attack
    found adversarials the other missed. None without per-sample flags."""
    from evaluator.record.records import wilson_interval

    if row.agreement is None or not row.distance_counts:
        return None
    (both, aa_only, hofmn_only), n = row.agreement, row.distance_counts[0]
    robust = both + aa_only
    low, high = wilson_interval(robust, n)
    return Mark(f"AutoAttack – {100.0 * robust / n:.2f}%", threat.eps, 100.0 * robust / n, 100.0 * low,
                100.0 * high, f"disagree on {aa_only + hofmn_only:,} samples")


FRONT_LABELS = 12  # Pareto-front points named in the figure (the rest of the front is drawn, unnamed)
FRONT_LABEL_CHARS = 16  # a front label's room: the x axis ends 200 px before the figure does

Point = tuple[float, float, str]  # (effective MACs, robust accuracy, ap_key)


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """The points no other point beats with at most as many MACs and a higher robust accuracy, by MACs: the
    best accuracy reachable at each cost."""
    front: list[Point] = []
    for point in sorted(points, key=lambda p: (p[0], -p[1], p[2])):
        if not front or point[1] > front[-1][1]:
            front.append(point)
    return front


def efficiency_svg(points: Mapping[str, Sequence[Point]], protocol: str, group: tuple[str, str], metric_title: str,
                   labels: Mapping[str, ApLabel]) -> tuple[str, str]:
    """Robust accuracy (*metric_title*) vs effective MACs per input of one dataset and structure, a colour per
    architecture, with the Pareto front drawn and its points named; *points*: ``architecture -> [(effective
    MACs, robust accuracy, ap_key), ...]``. Returns the figure and its alt text (what the figure says)."""
    every = [point for series in points.values() for point in series]
    low, high = min(p[0] for p in every) / 1.5, max(p[0] for p in every) * 1.5
    x = Axis("effective multiply-accumulates per input (log scale)", low, high, log_ticks(low, high), log=True)
    y = Axis(f"{metric_title} robust accuracy (%)", 0.0, 100.0, [(v, f"{v}%") for v in range(0, 101, 20)])
    series = []
    known = architectures()
    for architecture in sorted(points, key=architecture_sort_key):
        title = column_title((architecture, 0)).rsplit(" ", 1)[0]
        series.append(Series(title, [(p[0], p[1]) for p in points[architecture]],
                             marker=known[architecture].marker if architecture in known else MARKERS[0]))
    front = pareto_front(every)
    named = [(p[0], p[1], shortened(labels[p[2]].name, FRONT_LABEL_CHARS))
             for p in front[-FRONT_LABELS:]]  # the most accurate end; the alt text has the full names
    title = (f"{group_title(group)} · {protocol}: robust accuracy vs effective MACs ({len(every)} models)")
    figure = scatter_chart(title, series, x, y, legend_title="architecture", front=[(p[0], p[1]) for p in front],
                           front_labels=named)
    alt = (f"{metric_title} robust accuracy against effective multiply-accumulates per input, {group_title(group)}, "
           f"protocol {protocol}: {len(every)} models; Pareto front (best accuracy at each cost): "
           + "; ".join(f"{labels[p[2]].name} {si_label(p[0])} MACs {p[1]:.2f}%" for p in front) + ".")
    return figure, alt

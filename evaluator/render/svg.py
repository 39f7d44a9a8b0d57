"""Small deterministic SVG charts for the Markdown leaderboard: security curves (lines) and the
robust-accuracy-vs-MACs trade-off (points).

Written as text, not drawn by a plotting library: a leaderboard of 1,000 APs has tens of thousands of model
pages, each with its own curve, and an SVG of a few kilobytes costs microseconds to write, diffs as text in
git and renders in GitHub's Markdown (as an image). The interactive charts are on the site (plotly).
Same input, same bytes: coordinates are rounded (lines to whole pixels, the rest to 0.1 px) and nothing reads
the clock.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Sequence

import numpy as np

WIDTH, HEIGHT = 640, 400
PLOT = {"left": 52, "right": 440, "top": 30, "bottom": 350}  # the axes' box; the legend sits right of it
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
CONTEXT = "#b8b8b8"  # curves shown for context (the other models of a model page)
FONT = "font-family:DejaVu Sans,Arial,sans-serif"


@dataclass(frozen=True)
class Series:
    """One named line (``points`` as ``(x, y)`` data) or point set; ``emphasis`` draws it bold and on top,
    ``context`` thin and grey."""

    name: str
    points: Sequence[tuple[float, float]] | str  # data points, or a line's pixels from :func:`pixel_points`
    emphasis: bool = False
    context: bool = False
    marker: str = "circle"  # circle | square (points only)
    band: str | None = None  # a shaded area around the line (a polygon's pixels), drawn under it


@dataclass(frozen=True)
class Mark:
    """One value drawn over the lines: a square at ``(x, y)`` with its interval ``[low, high]`` as a vertical bar,
    named in the legend (``note``: a line of text under its entry)."""

    name: str
    x: float
    y: float
    low: float
    high: float
    note: str = ""


MARK_COLOUR = "#222"


@dataclass(frozen=True)
class Axis:
    """Data range and ticks ``(value, label)`` of one axis; ``log`` maps values by log10."""

    title: str
    low: float
    high: float
    ticks: Sequence[tuple[float, str]]
    log: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ticks", tuple(self.ticks))  # hashable: frames are cached per pair of axes


def _scale(value: float, axis: Axis, start: float, stop: float) -> float:
    low, high, value = ((math.log10(axis.low), math.log10(axis.high), math.log10(max(value, axis.low)))
                        if axis.log else (axis.low, axis.high, value))
    return start + (stop - start) * (value - low) / (high - low if high > low else 1.0)


def _xy(point: tuple[float, float], x: Axis, y: Axis) -> str:
    px = _scale(point[0], x, PLOT["left"], PLOT["right"])
    py = _scale(point[1], y, PLOT["bottom"], PLOT["top"])
    return f"{px:.1f},{py:.1f}"


def x_pixels(xs: np.ndarray, x: Axis) -> np.ndarray:
    """Whole-pixel x positions of data values on a linear axis."""
    return np.rint(PLOT["left"] + (PLOT["right"] - PLOT["left"]) * (xs - x.low) / (x.high - x.low)).astype(np.int64)


def y_pixels(ys: np.ndarray, y: Axis) -> np.ndarray:
    """Whole-pixel y positions of data values on a linear axis."""
    return np.rint(PLOT["bottom"] + (PLOT["top"] - PLOT["bottom"]) * (ys - y.low) / (y.high - y.low)).astype(np.int64)


def pixel_points(px: np.ndarray, py: np.ndarray) -> str:
    """The ``points`` attribute of a line through whole pixels, a pixel repeated right after itself dropped:
    computed once per curve and reused in every chart that shows it."""
    keep = np.ones(px.size, dtype=bool)
    keep[1:] = (px[1:] != px[:-1]) | (py[1:] != py[:-1])
    flat = np.column_stack((px[keep], py[keep])).ravel().tolist()  # x, y, x, y, ...: formatted in one call
    return ("%d,%d " * (len(flat) // 2))[:-1] % tuple(flat)


LEGEND_X = PLOT["right"] + 12  # where the legend's samples start; its text starts 21 px further
LEGEND_ROOM = WIDTH - LEGEND_X - 21 - 4  # a legend line's room in pixels
LEGEND_SIZE = 9.5
TITLE_SIZE, TITLE_ROOM = 12.5, WIDTH - 20


@functools.lru_cache(maxsize=1)
def _advances() -> tuple[dict[bool, dict[str, float]], float]:
    """``figure_font.yaml``: each listed character's advance in em, by boldness, and the fallback's."""
    from evaluator.untrusted.safeio import load_yaml

    data, _ = load_yaml(Path(__file__).with_name("figure_font.yaml"))
    unit = float(data["units_per_em"])
    return ({bold: {char: value / unit for char, value in data["bold" if bold else "regular"].items()}
             for bold in (False, True)}, data["fallback"] / unit)


@functools.lru_cache(maxsize=4096)  # a column's legend lines recur on each of its models' figures
def text_width(text: str, size: float, bold: bool = False) -> float:
    """The width in pixels of *text* set in DejaVu Sans at *size* (no kerning: within a pixel of Chromium's)."""
    advances, fallback = _advances()
    return size * sum(map(advances[bold].get, text, itertools.repeat(fallback)))


def shortened(text: str, room: int) -> str:
    """*text*, cut to *room* characters with an ellipsis where it is longer (figures have no room to wrap)."""
    return text if len(text) <= room else text[:max(1, room - 1)] + "…"


def fitted(head: str, middle: str, tail: str, room: float, size: float, bold: bool = False, *,
           keep_end: bool = False) -> str:
    """``head + middle + tail`` at most *room* pixels wide as DejaVu Sans sets it (:func:`text_width`): the
    *middle* gives way, cut at its end (or, *keep_end*, in its middle) with an ellipsis; *head* and *tail* stay
    whole."""
    keep = len(middle)
    text = head + middle + tail
    while keep > 1 and text_width(text, size, bold) > room:
        keep -= 1
        cut = (middle[:keep - keep // 2] + "…" + middle[len(middle) - keep // 2:] if keep_end
               else middle[:keep] + "…")
        text = head + cut + tail
    return text


def fitted_title(title: str) -> str:
    """*title* within the figure's width: its head (the part before the first `` · ``, a model key in a model's
    figure) gives way first, in its middle (a model key's AP key, keeping its architecture, dataset and
    sparsity), so that what follows it (protocol, samples) stays whole."""
    head, separator, tail = title.partition(" · ")
    if not separator or text_width(separator + tail, TITLE_SIZE) > TITLE_ROOM / 2:
        return fitted("", title, "", TITLE_ROOM, TITLE_SIZE)
    return fitted("", head, separator + tail, TITLE_ROOM, TITLE_SIZE, keep_end=True)


def _text(x: float, y: float, text: str, anchor: str = "start", size: float = 11, extra: str = "", *,
          bold: bool = False, room: float | None = None) -> str:
    """A text element; with *room* (pixels), a text wider than that (:func:`text_width`: one not
    :func:`fitted` beforehand, a front label of wide letters) is squeezed to *room* (``textLength``) instead of
    running off the figure."""
    weight = ' font-weight="bold"' if bold else ""
    fit = ""
    if room is not None and text_width(text, size, bold) > room:
        fit = f' textLength="{room:.1f}" lengthAdjust="spacingAndGlyphs"'
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"{weight}{extra}{fit}>'
            f"{escape(text)}</text>")


def _frame(title: str, x: Axis, y: Axis) -> list[str]:
    """The chart's opening, title (shortened to the figure's width), axes, grid and tick labels."""
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" style="{FONT}">',
            f"<title>{escape(title)}</title>", f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
            _text(WIDTH / 2, 18, fitted_title(title), "middle", TITLE_SIZE, room=TITLE_ROOM), _axes(x, y)]


@functools.lru_cache(maxsize=64)
def _axes(x: Axis, y: Axis) -> str:
    left, right, top, bottom = PLOT["left"], PLOT["right"], PLOT["top"], PLOT["bottom"]
    parts = []
    for value, label in x.ticks:
        px = _scale(value, x, left, right)
        parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" stroke="#ececec"/>')
        parts.append(_text(px, bottom + 14, label, "middle", 10))
    for value, label in y.ticks:
        py = _scale(value, y, bottom, top)
        parts.append(f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="#ececec"/>')
        parts.append(_text(left - 5, py + 3.5, label, "end", 10))
    parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
                 'stroke="#444"/>')
    parts.append(_text((left + right) / 2, bottom + 32, x.title, "middle", 11))
    parts.append(_text(14, (top + bottom) / 2, y.title, "middle", 11,
                       f' transform="rotate(-90 14 {(top + bottom) / 2:.1f})"'))
    return "\n".join(parts)


def _legend(entries: list[tuple[str, str, bool]], title: str | None, marks: Sequence[Mark] = ()) -> list[str]:
    """Legend lines right of the axes: ``(label, colour, bold)``, under *title* (a line per ``\\n``), then each
    of *marks* with its square and note."""
    x, y = LEGEND_X, PLOT["top"] + 8
    parts = []
    for line in title.split("\n") if title else []:
        parts.append(_text(x, y, line, size=10, bold=True, room=LEGEND_ROOM + 21))
        y += 15
    for label, colour, bold in entries:
        width = 3 if bold else 1.6
        parts.append(f'<line x1="{x}" y1="{y - 3.5:.1f}" x2="{x + 16}" y2="{y - 3.5:.1f}" stroke="{colour}" '
                     f'stroke-width="{width}"/>')
        parts.append(_text(x + 21, y, label, size=LEGEND_SIZE, bold=bold, room=LEGEND_ROOM))
        y += 14
    for mark in marks:
        y += 4
        parts.append(_square(x + 8, y - 3.5, MARK_COLOUR))
        parts.append(_text(x + 21, y, mark.name, size=LEGEND_SIZE, room=LEGEND_ROOM))
        if mark.note:
            y += 13
            parts.append(_text(x + 21, y, mark.note, size=9, room=LEGEND_ROOM))
        y += 14
    return parts


def _square(px: float, py: float, colour: str, opacity: str = "") -> str:
    return f'<rect x="{px - 3:.1f}" y="{py - 3:.1f}" width="6" height="6" fill="{colour}"{opacity}/>'


def _marks(marks: Sequence[Mark], x: Axis, y: Axis) -> list[str]:
    """Each mark's interval bar and square, in data coordinates."""
    parts = []
    for mark in marks:
        (px, low), (_, high), (_, py) = ((float(v) for v in _xy((mark.x, value), x, y).split(","))
                                         for value in (mark.low, mark.high, mark.y))
        parts.append(f'<line x1="{px:.1f}" y1="{low:.1f}" x2="{px:.1f}" y2="{high:.1f}" stroke="{MARK_COLOUR}" '
                     'stroke-width="1.2"/>')
        parts.append(_square(px, py, MARK_COLOUR))
    return parts


def _colour(index: int, series: Series) -> str:
    return CONTEXT if series.context else PALETTE[index % len(PALETTE)]


def line_chart(title: str, series: Sequence[Series], x: Axis, y: Axis, *, marker: tuple[float, str] | None = None,
               legend_title: str | None = None, legend_limit: int = 20, marks: Sequence[Mark] = ()) -> str:
    """Lines of *series* (context ones first, emphasised last, so they are drawn on top) with a dashed vertical
    *marker* ``(x, label)``, *marks* over the lines, and a legend of at most *legend_limit* non-context entries
    (then the marks)."""
    parts = _frame(title, x, y)
    if marker is not None:
        px = _scale(marker[0], x, PLOT["left"], PLOT["right"])
        parts.append(f'<line x1="{px:.1f}" y1="{PLOT["top"]}" x2="{px:.1f}" y2="{PLOT["bottom"]}" stroke="#555" '
                     'stroke-dasharray="4 3"/>')
        parts.append(_text(px + 3, PLOT["top"] + 12, marker[1], size=10))
    coloured = [(i, s) for i, s in enumerate(series)]
    ordered = sorted(coloured, key=lambda item: (not item[1].context, item[1].emphasis))
    for index, item in ordered:
        if item.band:
            parts.append(f'<polygon fill="{_colour(index, item)}" fill-opacity="0.15" stroke="none" '
                         f'points="{item.band}"/>')
    for index, item in ordered:
        width = 3 if item.emphasis else 1 if item.context else 1.6
        points = item.points if isinstance(item.points, str) else " ".join(_xy(p, x, y) for p in item.points)
        parts.append(f'<polyline fill="none" stroke="{_colour(index, item)}" stroke-width="{width}" '
                     f'stroke-linejoin="round" points="{points}"/>')
    parts += _marks(marks, x, y)
    entries = [(s.name, _colour(i, s), s.emphasis) for i, s in coloured if s.name][:legend_limit]
    parts += _legend(entries, legend_title, marks)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def scatter_chart(title: str, series: Sequence[Series], x: Axis, y: Axis, *, legend_title: str | None = None,
                  front: Sequence[tuple[float, float]] = (),
                  front_labels: Sequence[tuple[float, float, str]] = (),
                  error_bars: Sequence[tuple[float, float, float]] = (), diagonal: bool = False) -> str:
    """Points of each series (a marker shape and colour per series) with a legend; *front*, a staircase through
    the given points (a Pareto front), and *front_labels* ``(x, y, text)`` written next to their points;
    *error_bars* ``(x, low, high)``, vertical intervals; *diagonal*, the line y = x."""
    parts = _frame(title, x, y)
    if diagonal:
        low, high = max(x.low, y.low), min(x.high, y.high)
        (x1, y1), (x2, y2) = _xy((low, low), x, y).split(","), _xy((high, high), x, y).split(",")
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#888" stroke-dasharray="4 3"/>')
    if front:  # under the markers: each step runs right at the accuracy reached, then up to the next point
        steps = [front[0]] + [corner for before, after in zip(front, front[1:])
                              for corner in ((after[0], before[1]), after)]
        parts.append(f'<polyline fill="none" stroke="#222" stroke-width="1.2" '
                     f'points="{" ".join(_xy(p, x, y) for p in steps)}"/>')
    for bar_x, bottom, top in error_bars:
        (x1, y1), (_, y2) = _xy((bar_x, bottom), x, y).split(","), _xy((bar_x, top), x, y).split(",")
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x1}" y2="{y2}" stroke="#555" stroke-width="1"/>')
    for index, item in enumerate(series):
        colour = _colour(index, item)
        if isinstance(item.points, str):
            raise ValueError(f"scatter series {item.name!r} needs data points, not a line's pixels")
        for point in item.points:
            px, py = (float(v) for v in _xy(point, x, y).split(","))
            if item.marker == "square":
                parts.append(_square(px, py, colour, ' fill-opacity="0.7"'))
            else:
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.2" fill="{colour}" fill-opacity="0.7"/>')
    for px_py, text in ((_xy((lx, ly), x, y), label) for lx, ly, label in front_labels):
        px, py = (float(v) for v in px_py.split(","))
        parts.append(_text(px + 5, py - 5, text, size=9, extra=' fill="#222"', room=WIDTH - px - 7))
    entries = [(s.name, _colour(i, s), False) for i, s in enumerate(series)]
    if front:
        entries.append(("Pareto front", "#222", False))
    parts += _legend(entries, legend_title)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def log_ticks(low: float, high: float) -> list[tuple[float, str]]:
    """Powers of ten (and 2x, 5x between) covering ``[low, high]``, labelled 10k, 2M, 1G."""
    ticks = []
    exponent = math.floor(math.log10(max(low, 1e-12)))
    while 10 ** exponent <= high * 1.0001:
        for step in (1, 2, 5):
            value = step * 10 ** exponent
            if low * 0.9999 <= value <= high * 1.0001:
                ticks.append((float(value), si_label(value)))
        exponent += 1
    return ticks


def si_label(value: float) -> str:
    """``1.2G``, ``56.3M``, ``840k``: three significant digits at most."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}"

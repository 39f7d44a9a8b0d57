"""One leaderboard table: a row per AP, a column per (architecture, sparsity), cells ``clean/robust``.

Ranking rule (stated in the README as ``RANKING_RULE``): a table shows one protocol. Its *ranked columns* are
the columns where at least one AP has a cell of that protocol. An AP with a cell of the protocol in every
ranked column is *complete*; complete rows are ranked by their mean robust accuracy over the ranked columns
(every ranked row is averaged over the same cells); a row whose difference from the row above is not
significant (:mod:`evaluator.record.stats`, paired per-sample tests with Holm's correction) shares its rank, and where
no test can be made (published numbers) ties as displayed (two decimals) share a rank; equal means are
ordered by name. Rows with missing cells follow, unranked, by name, with their coverage. Published-only cells
(``†``, filling gaps of the AutoAttack table of an evaluated protocol) are another protocol: they are shown but
never enter a mean nor make a row complete. So a row with fewer cells never ranks above another because of
it, and no mean mixes protocols.

Marks in the cell itself: ``†`` published only, ``⚠`` the record carries a sanity flag (its model page says
which). Bold: the best robust accuracy of each column among the protocol's own unflagged cells (ties all bold).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import PurePosixPath
from statistics import fmean
from typing import Callable, Mapping, Sequence

from evaluator.render.layout import TAXONOMY_README, architecture_title, relative_link
from evaluator.render.markdown import inline, link, simple_table

DAGGER = "†"
FLAG = "⚠"
MISSING = "-"
UNRANKED = "–"
RANKING_RULE = (
    "**Ranking.** Each table shows one protocol. Rows with a cell in every column that the protocol has cells "
    "in are ranked (#) by their mean robust accuracy over those columns, so every ranked row is averaged over "
    "the same cells. Rows not significantly different from the row above share its rank (exact paired test on "
    "the per-sample results, pooled over the ranked columns, α = 0.05 with Holm's correction over the table; "
    "published numbers have no per-sample results, so there equal displayed means share a rank; "
    "docs/leaderboard.md, *Rank groups*). Rows with missing cells follow, unranked (–), by name, with their "
    f"coverage. Published-only cells ({DAGGER}) are another protocol: shown, never averaged, never counted "
    f"for coverage. {FLAG}: the record carries a sanity flag (see its model page). Bold: the best robust "
    "accuracy of each column among the protocol's own unflagged cells.")


@dataclass(frozen=True)
class ApLabel:
    """How an AP appears in a row: display name, its taxonomy entry, code, paper, venue and year."""

    ap_key: str
    name: str
    taxonomy_anchor: str | None = None  # anchor of its entry in taxonomy/README.md
    code_url: str | None = None
    paper_url: str | None = None
    venue: str | None = None
    year: int | None = None
    taxonomy_page: PurePosixPath = TAXONOMY_README  # the page holding its taxonomy entry

    def markdown(self, page: PurePosixPath) -> str:
        """The name linked to the taxonomy entry (relative to *page*), then a link to the code."""
        target = relative_link(page, self.taxonomy_page, self.taxonomy_anchor) if self.taxonomy_anchor else None
        text = link(inline(self.name), target)
        return f"{text} ({link('code', self.code_url)})" if self.code_url else text

    def paper_markdown(self) -> str:
        """The venue linked to the paper (``paper`` where the entry names no venue)."""
        venue = inline(self.venue) if self.venue else None
        return link(venue or "paper", self.paper_url) if self.paper_url else (venue or MISSING)


@dataclass(frozen=True)
class Cell:
    """One model's numbers in one table (percent); ``link`` points at its model page."""

    clean: float | None
    robust: float | None
    link: str | None = None
    published_only: bool = False
    flagged: bool = False
    spread: float | None = None  # half the width of the robust accuracy's 95% interval

    @property
    def own(self) -> bool:
        """A cell of the table's own protocol with a robust accuracy: what ranking and bold consider."""
        return not self.published_only and self.robust is not None


Column = tuple[str, int]  # (architecture, sparsity)
Cells = Mapping[tuple[str, Column], Cell]


@dataclass(frozen=True)
class RankedRow:
    """A row's place: ``rank`` (None: unranked), mean over the ranked columns, cells it has of them."""

    ap_key: str
    rank: int | None
    mean: float | None
    covered: int
    of: int
    p_above: float | None = None  # the paired test against the row above (None: first row, or not testable)


def interval_spread(value: float | None, n_samples: int) -> float | None:
    """Half the width of the 95% Wilson interval (percent) of an accuracy of *value* percent on *n_samples*, the
    interval the record holds (``records.summarize``); None without a value."""
    if value is None or not n_samples:
        return None
    return _half_width(value, n_samples)


@functools.lru_cache(maxsize=8192)
def _half_width(value: float, n_samples: int) -> float:
    """:func:`interval_spread` of a value: asked again for every table and page a cell appears on, and many cells
    share a value (the import stays out of that hot path)."""
    from evaluator.record.records import count_of_percent, wilson_interval

    low, high = wilson_interval(count_of_percent(value, n_samples), n_samples)
    return 50.0 * (high - low)


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def column_title(column: Column) -> str:
    architecture, sparsity = column
    return f"{architecture_title(architecture)} {sparsity}%"


def cell_markdown(cell: Cell | None, bold: bool) -> str:
    """``clean/robust`` (robust bold when the column's best), linked to the model page, then its marks."""
    if cell is None:
        return MISSING
    robust = percent(cell.robust)
    text = link(f"{percent(cell.clean)}/{f'**{robust}**' if bold else robust}", cell.link)
    spread = "" if cell.spread is None else f"<sub>±{cell.spread:.2f}</sub>"
    return text + spread + (DAGGER if cell.published_only else "") + (FLAG if cell.flagged else "")


def ranked_columns(cells: Cells) -> set[Column]:
    return {column for (_, column), cell in cells.items() if cell.own}


def rank_rows(cells: Cells, labels: Mapping[str, ApLabel]) -> list[RankedRow]:
    """Every AP of *cells*, ranked by the module's rule: complete rows by mean, then the others by name."""
    own: dict[str, list[float]] = {}
    for (ap_key, _), cell in cells.items():
        values = own.setdefault(ap_key, [])
        if cell.own:
            values.append(float(cell.robust))  # type: ignore[arg-type]
    summaries = {ap_key: (fmean(values) if values else None, len(values)) for ap_key, values in own.items()}
    return rank_summaries(summaries, len(ranked_columns(cells)), labels)


def rank_summaries(summaries: Mapping[str, tuple[float | None, int]], n_columns: int,
                   labels: Mapping[str, ApLabel],
                   paired: Callable[[str, str], float | None] | None = None) -> list[RankedRow]:
    """The module's rule on per-AP summaries ``ap_key -> (mean of its own cells, how many)``, every own cell
    being in one of the *n_columns* ranked columns: complete rows by mean, then the others by name.
    ``paired(above, below)`` is the p-value of the paired test of two complete rows (None: not testable);
    ranks are then groups (:func:`evaluator.record.stats.rank_groups`); without it, equal displayed means share a rank."""
    from evaluator.record.stats import rank_groups

    complete = sorted(((mean, ap_key) for ap_key, (mean, covered) in summaries.items()
                       if n_columns and covered == n_columns),
                      key=lambda item: (-round(item[0], 2), labels[item[1]].name, item[1]))  # type: ignore[arg-type]
    keys = [ap_key for _, ap_key in complete]
    p_values = [paired(above, below) if paired else None for above, below in zip(keys, keys[1:])]
    ranks = rank_groups([percent(mean) for mean, _ in complete], p_values)
    rows = [RankedRow(ap_key, rank, mean, n_columns, n_columns, p_values[position - 1] if position else None)
            for position, ((mean, ap_key), rank) in enumerate(zip(complete, ranks))]
    ranked = {row.ap_key for row in rows}
    for ap_key in sorted((k for k in summaries if k not in ranked), key=lambda k: (labels[k].name, k)):
        rows.append(RankedRow(ap_key, None, None, summaries[ap_key][1], n_columns))
    return rows


def best_per_column(cells: Cells, columns: Sequence[Column]) -> dict[Column, str]:
    """The best displayed robust accuracy of each column among its own unflagged cells."""
    best: dict[Column, str] = {}
    for column in columns:
        values = [cell.robust for (_, col), cell in cells.items() if col == column and cell.own and not cell.flagged]
        if values:
            best[column] = percent(max(values))  # type: ignore[type-var]
    return best


def mean_markdown(row: RankedRow) -> str:
    return f"{percent(row.mean) if row.rank is not None else UNRANKED} ({row.covered}/{row.of})"


def leaderboard_table(cells: Cells, labels: Mapping[str, ApLabel], columns: Sequence[Column], ranking_title: str,
                      page: PurePosixPath, *, window: tuple[int, int | None] = (0, None),
                      ranked: list[RankedRow] | None = None, best: dict[Column, str] | None = None,
                      anchor: Callable[[str], str | None] | None = None) -> tuple[str, int]:
    """The Markdown table of *cells* keyed ``(ap_key, (architecture, sparsity))`` for the file *page*, and the
    number of rows it has in all; only the ranks in *window* ``(start, stop)`` are written. *ranked* and
    *best* (``rank_rows``, ``best_per_column`` of these cells) are computed when not given. ``anchor(ap_key)``
    names an anchor to put in the row's AP cell (None: no anchor)."""
    best = best_per_column(cells, columns) if best is None else best
    ranked = rank_rows(cells, labels) if ranked is None else ranked
    rows = []
    for row in ranked[window[0]:window[1]]:
        label = labels[row.ap_key]
        name = anchor(row.ap_key) if anchor else None
        line = {"#": UNRANKED if row.rank is None else str(row.rank),
                "AP": (f'<a id="{name}"></a>' if name else "") + label.markdown(page),
                "Paper": label.paper_markdown(), "Year": str(label.year or MISSING)}
        for column in columns:
            cell = cells.get((row.ap_key, column))
            bold = (cell is not None and cell.own and not cell.flagged
                    and percent(cell.robust) == best.get(column))
            line[column_title(column)] = cell_markdown(cell, bold)
        line[ranking_title] = mean_markdown(row)
        rows.append(line)
    # the rank, the AP and what it is ranked by first: a table wider than GitHub's page scrolls, and these stay in view
    headers = ["#", "AP", ranking_title, *map(column_title, columns), "Paper", "Year"]
    table = simple_table(headers, [[line[h] for h in headers] for line in rows],
                         ["right", "left", "right", *["center"] * len(columns), "left", "left"])
    return table, len(ranked)

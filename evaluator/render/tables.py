"""One leaderboard table: a row per AP, a column per (architecture, sparsity), cells ``clean/robust``.

Rows are ranked by the mean robust accuracy over the cells the AP has (shown with their count), ties broken
by display name then AP key. The best robust accuracy of each column, compared as displayed (two
decimals), is bold; ties are all bold. Published-only cells in a table that also shows evaluated numbers
carry a dagger.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from pathlib import PurePosixPath
from typing import Mapping, Sequence

import pandas as pd

from evaluator.render.layout import ARCHITECTURE_TITLES, TAXONOMY_README, relative_link
from evaluator.render.markdown import link, pipe_table

DAGGER = "†"
MISSING = "-"


@dataclass(frozen=True)
class ApLabel:
    """How an AP appears in a row: display name, link to its taxonomy entry, link to its code."""

    ap_key: str
    name: str
    taxonomy_anchor: str | None = None  # anchor of its entry in taxonomy/README.md
    code_url: str | None = None

    def markdown(self, page: PurePosixPath) -> str:
        """The name linked to the taxonomy entry (relative to *page*), then a link to the code."""
        target = relative_link(page, TAXONOMY_README, self.taxonomy_anchor) if self.taxonomy_anchor else None
        text = link(self.name, target)
        return f"{text} ({link('code', self.code_url)})" if self.code_url else text


@dataclass(frozen=True)
class Cell:
    """One model's numbers in one table (percent); ``link`` points at its provenance."""

    clean: float | None
    robust: float | None
    link: str | None = None
    published_only: bool = False


Column = tuple[str, int]  # (architecture, sparsity)


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def column_title(column: Column) -> str:
    architecture, sparsity = column
    return f"{ARCHITECTURE_TITLES.get(architecture, architecture)} {sparsity}%"


def cell_markdown(cell: Cell | None, bold: bool, dagger: bool) -> str:
    """``clean/robust`` with the robust part bold when it is the column's best, a dagger when asked."""
    if cell is None:
        return MISSING
    robust = percent(cell.robust)
    text = f"{percent(cell.clean)}/{f'**{robust}**' if bold else robust}"
    text = link(text, cell.link)
    return text + DAGGER if dagger and cell.published_only else text


def rank_rows(cells: Mapping[tuple[str, Column], Cell],
              labels: Mapping[str, ApLabel]) -> list[tuple[str, float | None, int]]:
    """``(ap_key, mean robust accuracy, cell count)`` best first; ties by name, then AP key."""
    by_ap: dict[str, list[float]] = {}
    for (ap_key, _), cell in sorted(cells.items()):
        values = by_ap.setdefault(ap_key, [])
        if cell.robust is not None:
            values.append(cell.robust)
    ranked = [(ap_key, fmean(values) if values else None, len(values)) for ap_key, values in by_ap.items()]
    return sorted(ranked, key=lambda row: (row[1] is None, -(row[1] or 0.0), labels[row[0]].name, row[0]))


def best_per_column(cells: Mapping[tuple[str, Column], Cell], columns: Sequence[Column]) -> dict[Column, str]:
    """The best displayed robust accuracy of each column that has one."""
    best: dict[Column, str] = {}
    for column in columns:
        values = [cell.robust for (_, col), cell in cells.items() if col == column and cell.robust is not None]
        if values:
            best[column] = percent(max(values))
    return best


def leaderboard_table(cells: Mapping[tuple[str, Column], Cell], labels: Mapping[str, ApLabel],
                      columns: Sequence[Column], ranking_title: str, page: PurePosixPath) -> str:
    """The Markdown table of *cells* keyed ``(ap_key, (architecture, sparsity))``, for the file *page*."""
    dagger = has_dagger(cells)
    best = best_per_column(cells, columns)
    rows = []
    for ap_key, mean, count in rank_rows(cells, labels):
        row = {"AP": labels[ap_key].markdown(page)}
        for column in columns:
            cell = cells.get((ap_key, column))
            bold = cell is not None and cell.robust is not None and percent(cell.robust) == best.get(column)
            row[column_title(column)] = cell_markdown(cell, bold, dagger)
        row[ranking_title] = f"{percent(mean)} ({count})"
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["AP", *map(column_title, columns), ranking_title])
    return pipe_table(frame, ["left", *["center"] * len(columns), "right"])


def has_dagger(cells: Mapping[tuple[str, Column], Cell]) -> bool:
    """Whether the table mixes evaluated and published-only cells (and so needs the dagger footnote)."""
    return any(cell.published_only for cell in cells.values()) and any(
        not cell.published_only for cell in cells.values())

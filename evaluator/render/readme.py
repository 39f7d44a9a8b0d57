"""``leaderboard/README.md``: per dataset and structure, the evaluated tables of each leaderboard protocol
(AutoAttack with published numbers filling the gaps, HO-FMN, worst case, efficiency) with their security
curves inline, and the published table; the efficiency trade-off per dataset; links to the analysis page.

Each table shows its first ``README_ROWS`` rows; a group with a longer table gets pages of its own
(``leaderboard/groups/<dataset>_<US|S>.md``, then ``..._2.md``, ...) with every row, ``GROUP_PAGE_ROWS`` ranks
of each table per page, so that every page stays one a reader can scroll and GitHub renders (it shows
Markdown files up to about 512 KB; a group of 1,000 APs on one page is about 3 MB).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import PurePosixPath
from statistics import fmean
from typing import Callable, Collection, Iterable, Mapping, Protocol, Sequence

from evaluator.protocol import list_protocols
from evaluator.record.records import metric_label, metrics_in
from evaluator.registry.home import home
from evaluator.render.catalog import Catalog, last_updated
from evaluator.render.curve_set import TOP_K, TableOrder
from evaluator.render.layout import (ANALYSIS_PAGE, LEADERBOARD_README, Group, curve_file,
                                     group_page, group_title, model_link, relative_link)
from evaluator.render.markdown import GENERATED_NOTE, github_anchor, simple_table
from evaluator.render.pages import protocol_anchor
from evaluator.render.rows import Row
from evaluator.render.significance import paired_test
from evaluator.render.svg import si_label
from evaluator.render.threats import faces_published, threat_of
from evaluator.render.tables import (DAGGER, FLAG, RANKING_RULE, ApLabel, Cell, Cells, Column, RankedRow,
                                     column_title, interval_spread, leaderboard_table, percent, rank_summaries)

README_ROWS = 25
GROUP_PAGE_ROWS = 100
Window = tuple[int, int]  # the ranks [start, stop) of each table that a page shows


@dataclass(frozen=True)
class TableKind:
    """A robust-accuracy metric shown as one table."""

    title: str
    metric: str
    ranking_title: str


EVALUATED_TABLES = tuple(TableKind(metric_label(metric, "readme"), metric, metric_label(metric, "ranking"))
                         for metric in metrics_in("readme"))  # metrics.yaml's views.readme
AUTOATTACK = EVALUATED_TABLES[0]  # the headline table: published numbers fill its models without a record
CLEAN = "clean_accuracy"
FIGURE_TABLE = AUTOATTACK  # the evaluated table each protocol's curve figures illustrate (the published: its table)


def published_cells(rows: Iterable[Row]) -> dict[tuple[str, Column], Cell]:
    """The published AutoAttack cells, each with its interval: a published number is a proportion of its
    protocol's samples too, so its 95% interval follows from the number and ``n_samples`` alone."""
    return {(r.ap_key, r.column): Cell(r.metric(CLEAN), robust, spread=interval_spread(robust, r.n_samples))
            for r in rows if r.published for robust in (r.metric(AUTOATTACK.metric),)}


def evaluated_cells(rows: Sequence[Row], protocol: str, kind: TableKind, page: PurePosixPath,
                    fill_with_published: bool) -> dict[tuple[str, Column], Cell]:
    """Cells of *protocol*'s records for one metric, linked to their model pages (from *page*) and marked when
    flagged; published numbers fill the models without an evaluated record when asked (marked
    published-only)."""
    cells = {}
    if fill_with_published:
        cells = {k: Cell(c.clean, c.robust, published_only=True, spread=c.spread)
                 for k, c in published_cells(rows).items()}
    anchor = protocol_anchor(protocol)
    for r in rows:
        if not r.published and r.protocol == protocol:
            target = model_link(page, r.model_key, anchor)
            robust = r.metric(kind.metric)
            cells[(r.ap_key, r.column)] = Cell(r.metric(CLEAN), robust, target, flagged=bool(r.flags),
                                               spread=interval_spread(robust, r.n_samples))
    return cells


def _legend(dagger: bool, flagged: bool, linked: bool) -> str:
    """The line under a table: what its cells hold and which marks it uses."""
    marks = ([f"{DAGGER} published only"] if dagger else []) + ([f"{FLAG} flagged (see the model page)"]
                                                                 if flagged else [])
    return ("Cells: clean/robust accuracy (%)" + (", linked to the model page where evaluated" if linked else "")
            + ", with ± half the width of the robust accuracy's 95% interval over the protocol's test samples"
            + (f"; {', '.join(marks)}" if marks else "") + ". "
            "#: rank by the mean over the ranked columns (see *Ranking* above); (k/n): the row's cells of the "
            "n ranked columns.")


def row_anchor(ap_key: str, group: Group) -> str:
    """The anchor of an AP's first row in a group's tables (the taxonomy entries link to it)."""
    return github_anchor(f"ap-{ap_key}-{group[0]}-{group[1]}")


class Anchors:
    """Which (AP, group) rows got an anchor on which page: the first table row of each on each page."""

    def __init__(self) -> None:
        self.placed: dict[tuple[str, Group], list[PurePosixPath]] = {}

    def taker(self, group: Group, page: PurePosixPath):
        def take(ap_key: str) -> str | None:
            pages = self.placed.setdefault((ap_key, group), [])
            if page in pages:
                return None
            pages.append(page)
            return row_anchor(ap_key, group)
        return take


def _window_note(window: Window, total: int, more: str | None) -> list[str]:
    """What a table cut to *window* says below it: where its other rows are (*more*: a link to them)."""
    start, stop = window
    if total <= stop and start == 0:
        return []
    if more is not None:
        return ["", f"Showing {min(stop, total) - start} of {total} rows: [every row]({more}), and the site's "
                    "searchable tables."]
    if start >= total:
        return ["", f"All {total} rows of this table are on the earlier pages."]
    return ["", f"Rows {start + 1}–{min(stop, total)} of {total}."]


def efficiency_rows(rows: Iterable[Row], protocol: str, labels: Mapping[str, ApLabel], columns: list[Column],
                    page: PurePosixPath, order: Sequence[str] = ()) -> list[list[str]]:
    """Rows of the efficiency table: effective MACs per input (and share of dense) of each evaluated model, a
    column per architecture and sparsity, the APs in *order* (the AutoAttack table's; others after, by name);
    empty when no model of the protocol has efficiency figures."""
    measured = [r for r in rows if not r.published and r.protocol == protocol and r.efficiency]
    anchor = protocol_anchor(protocol)
    by_ap: dict[str, dict[Column, Row]] = {}
    for r in measured:
        by_ap.setdefault(r.ap_key, {})[r.column] = r
    position = {ap_key: index for index, ap_key in enumerate(order)}
    lines = []
    for ap_key in sorted(by_ap, key=lambda k: (position.get(k, len(position)), labels[k].name, k)):
        cells = []
        for column in columns:
            row = by_ap[ap_key].get(column)
            if row is None or not row.efficiency:
                cells.append("-")
                continue
            dense = row.macs_dense
            share = f" ({100.0 * row.macs_effective / dense:.0f}%)" if dense else ""  # type: ignore[operator]
            cells.append(f"[{si_label(row.macs_effective)}{share}]"  # type: ignore[arg-type]
                         f"({model_link(page, row.model_key, anchor)})")
        lines.append([labels[ap_key].markdown(page), *cells])
    return lines


class CellsOf(Protocol):
    """The cells of a table for some of its APs' rows, linked from *page*."""

    def __call__(self, rows: list[Row], page: PurePosixPath) -> Cells: ...


@dataclass
class RankedTable:
    """One leaderboard table of a group: its ranking and table-wide facts, made once; its cells are made
    again for each window of rows that a page shows (from those rows only), so no page holds the whole group."""

    title: str
    cells_of: CellsOf
    ranking: str
    ranked: list[RankedRow] = field(default_factory=list)
    best: dict[Column, str] = field(default_factory=dict)
    footnote: list[str] = field(default_factory=list)
    summaries: dict[str, tuple[float | None, int]] = field(default_factory=dict)  # ap_key -> (mean, own cells)
    highest: dict[Column, float] = field(default_factory=dict)  # the best robust accuracy of each column
    columns: set[Column] = field(default_factory=set)  # the ranked columns
    dagger: bool = False
    own_protocol: bool = False  # the table has a cell of its own protocol (else it is not shown)
    flagged: bool = False
    linked: bool = False
    protocol: str = ""  # the protocol the table ranks
    metric: str = ""  # the metric it ranks by

    def add(self, ap_key: str, cells: Cells) -> None:
        """Take one AP's cells into the ranking and the table-wide facts."""
        if not cells:
            return
        values = []
        for (_, column), cell in cells.items():
            self.dagger |= cell.published_only
            self.own_protocol |= not cell.published_only
            self.flagged |= cell.flagged
            self.linked |= cell.link is not None
            if cell.own:
                values.append(float(cell.robust))  # type: ignore[arg-type]
                self.columns.add(column)
                if not cell.flagged and (column not in self.highest or cell.robust > self.highest[column]):  # type: ignore[operator]
                    self.highest[column] = cell.robust  # type: ignore[assignment]
        self.summaries[ap_key] = (fmean(values) if values else None, len(values))

    def finish(self, labels: Mapping[str, ApLabel], paired: Callable[[str, str], float | None] | None = None) -> None:
        """Rank the APs taken in (in groups by *paired*, the paired test of two rows, where given) and fix the
        best value of each column."""
        self.ranked = rank_summaries(self.summaries, len(self.columns), labels, paired)
        self.best = {column: percent(value) for column, value in self.highest.items()}
        self.summaries, self.highest = {}, {}

    def legend(self) -> str:
        return _legend(self.dagger and self.own_protocol, self.flagged, self.linked)


@dataclass
class EfficiencyTable:
    """A group's efficiency table: the APs with efficiency figures, in the AutoAttack table's order."""

    title: str
    header: list[str]
    protocol: str
    ap_keys: list[str]


@dataclass
class CurveFigures:
    """The security-curve figures of a protocol in a group, under a line that says what they show."""

    text: str
    protocol: str


Piece = RankedTable | EfficiencyTable | CurveFigures


class GroupTables:
    """The tables and figures of one group. Made from one pass over the group's rows, one AP at a time; the
    rows of a page's window are read again when the page is rendered (cell links are relative to it)."""

    def __init__(self, catalog: Catalog, group: Group, labels: Mapping[str, ApLabel],
                 curves: Collection[tuple[str, Group, Column]]) -> None:
        self.catalog, self.group, self.labels = catalog, group, labels
        self.columns = catalog.columns(group)
        cited = ", ".join(catalog.references()) or "the original benchmark"
        published = ", ".join(f"`{p}`" for p in catalog.published_protocols())
        protocols = [p for p in catalog.evaluated_protocols() if catalog.has_evaluated(group, p)]
        settings = {p.id: p for p in list_protocols()}
        tables: dict[str, list[RankedTable]] = {}
        measured: dict[str, set[str]] = {}
        for protocol in protocols:
            tables[protocol] = [RankedTable(f"{kind.title}, protocol `{protocol}`",
                                            _cells_of(protocol, kind, faces_published(threat_of(settings[protocol]))),
                                            f"{kind.ranking_title} (k/n)",
                                            footnote=["", f"{DAGGER} Published only: no `{protocol}` record of this "
                                                          f"model yet; the {published} number ({cited}) is shown "
                                                          "instead."], protocol=protocol, metric=kind.metric)
                                for kind in EVALUATED_TABLES]
            measured[protocol] = set()
        published_table = RankedTable(f"Published ({cited})", _published_cells_of, "mean AA (k/n)",
                                      protocol=", ".join(catalog.published_protocols()), metric=AUTOATTACK.metric)
        for ap_key, rows in catalog.group_rows_by_ap(group):
            for protocol in protocols:
                for table in tables[protocol]:
                    table.add(ap_key, table.cells_of(rows, LEADERBOARD_README))
                if any(not r.published and r.protocol == protocol and r.efficiency for r in rows):
                    measured[protocol].add(ap_key)
            published_table.add(ap_key, published_table.cells_of(rows, LEADERBOARD_README))
        self.pieces: list[Piece] = []
        self.figure_orders: dict[str, TableOrder] = {}  # protocol -> the order of the table its figures illustrate
        for protocol in protocols:
            order: list[str] = []
            for kind, table in zip(EVALUATED_TABLES, tables[protocol]):
                if not table.own_protocol:
                    continue
                table.finish(labels, paired_test(catalog, group, protocol, kind.metric, table.columns))
                if not (table.dagger and table.own_protocol):
                    table.footnote = []
                if kind is AUTOATTACK:
                    order = [row.ap_key for row in table.ranked]
                if kind is FIGURE_TABLE:
                    self.figure_orders[protocol] = TableOrder.of(f"{kind.title} table", table.ranked)
                self.pieces.append(table)
            if measured[protocol]:
                position = {ap_key: index for index, ap_key in enumerate(order)}
                self.pieces.append(EfficiencyTable(
                    f"Efficiency, protocol `{protocol}`", ["AP", *map(column_title, self.columns)], protocol,
                    sorted(measured[protocol], key=lambda k: (position.get(k, len(position)), labels[k].name, k))))
            if curve_images(curves, protocol, group, self.columns, LEADERBOARD_README):
                self.pieces.append(CurveFigures(
                    f"Security curves (HO-FMN, `{protocol}`; in each column, the models of the top "
                    f"{TOP_K} APs of the {FIGURE_TABLE.title} table above, in its order, # its rank; all on the "
                    "site):", protocol))
        if published_table.summaries:
            published_table.finish(labels)
            self.pieces.append(published_table)
            for protocol in catalog.published_protocols():
                self.figure_orders[protocol] = TableOrder.of("published table", published_table.ranked)
                if curve_images(curves, protocol, group, self.columns, LEADERBOARD_README):
                    self.pieces.append(CurveFigures("Security curves (HO-FMN distances published with the "
                                                    "original benchmark, on the samples each figure names; "
                                                    f"`{protocol}`; in each column, the models of the top {TOP_K} "
                                                    "APs of the published table above, in its order, # its rank):",
                                                    protocol))
        self.curves = curves

    def rows(self) -> int:
        """The number of rows of the longest table."""
        return max([len(p.ranked) for p in self.pieces if isinstance(p, RankedTable)]
                   + [len(p.ap_keys) for p in self.pieces if isinstance(p, EfficiencyTable)] + [0])

    def render(self, page: PurePosixPath, window: Window, anchors: Anchors, more: str | None = None) -> list[str]:
        """The lines of *page*: each table's ranks in *window*; *more* links to every row (the README's tables)."""
        take = anchors.taker(self.group, page)
        wanted = {row.ap_key for piece in self.pieces if isinstance(piece, RankedTable)
                  for row in piece.ranked[window[0]:window[1]]}
        wanted.update(key for piece in self.pieces if isinstance(piece, EfficiencyTable)
                      for key in piece.ap_keys[window[0]:window[1]])
        rows_of: dict[str, list[Row]] = {}
        for row in self.catalog.rows_of_aps(self.group, sorted(wanted)):  # the window's rows, read once per page
            rows_of.setdefault(row.ap_key, []).append(row)
        lines: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, RankedTable):
                shown = piece.ranked[window[0]:window[1]]
                rows = [row for ranked in shown for row in rows_of.get(ranked.ap_key, [])]
                table, _ = leaderboard_table(piece.cells_of(rows, page), self.labels, self.columns, piece.ranking,
                                             page, ranked=shown, best=piece.best, anchor=take)
                lines += ["", f"### {piece.title}", "", table, "", piece.legend(),
                          *_window_note(window, len(piece.ranked), more), *piece.footnote]
            elif isinstance(piece, EfficiencyTable):
                shown_keys = piece.ap_keys[window[0]:window[1]]
                rows = [row for key in shown_keys for row in rows_of.get(key, [])]
                lines += ["", f"### {piece.title}", "",
                          simple_table(piece.header, efficiency_rows(rows, piece.protocol, self.labels, self.columns,
                                                                     page, shown_keys)),
                          "", "Effective multiply-accumulates per input (share of the dense architecture's): "
                              "non-zero weights for unstructured pruning, all-zero filters and channels removed "
                              "for structured pruning (measured by `apb check`). APs in the order of the "
                              "AutoAttack table.", *_window_note(window, len(piece.ap_keys), more)]
            else:
                lines += ["", piece.text, "", curve_images(self.curves, piece.protocol, self.group, self.columns,
                                                             page)]
        return lines


def _cells_of(protocol: str, kind: TableKind, with_published: bool) -> CellsOf:
    def cells(rows: list[Row], page: PurePosixPath) -> Cells:
        return evaluated_cells(rows, protocol, kind, page, fill_with_published=with_published and kind is AUTOATTACK)
    return cells


def _published_cells_of(rows: list[Row], page: PurePosixPath) -> Cells:
    return published_cells(rows)


def curve_images(catalog_curves: Collection[tuple[str, Group, Column]], protocol: str, group: Group,
                 columns: list[Column],
                 page: PurePosixPath) -> str:
    """The curve figures of a protocol and group, two to a line."""
    return half_width_figures([(relative_link(page, curve_file(protocol, group, *column)),
                                f"security curves, {group_title(group)}, {column_title(column)}, {protocol}")
                               for column in columns if (protocol, group, column) in catalog_curves])


def half_width_figures(figures: Sequence[tuple[str, str]]) -> str:
    """Figures ``(src, alt)`` each half the page wide, two to a line, so that a legend stays legible: one line of
    Markdown with nothing between the images (a space between two halves would not fit, and each would take a
    line of its own)."""
    return "".join(f'<img src="{src}" width="50%" alt="{escape(alt)}">' for src, alt in figures)


def render_readme(catalog: Catalog, labels: Mapping[str, ApLabel], curves: Collection[tuple[str, Group, Column]],
                  efficiency: Mapping[PurePosixPath, str], descriptions: Mapping[str, str], anchors: Anchors,
                  emit_page: Callable[[PurePosixPath, str], None],
                  on_order: Callable[[str, Group, TableOrder], None] = lambda protocol, group, order: None) -> str:
    """The leaderboard README; the pages of each group whose tables it cuts go to *emit_page* (path, text) as
    soon as each is made. *curves* holds the curve columns that have figures, *efficiency* the efficiency figure files
    with their alt text;
    *anchors* records where each AP's rows got their anchor; *on_order* receives, as each group's tables are
    ranked, the order of the table each protocol's figures of the group illustrate."""
    cited = ", ".join(catalog.references()) or "the original benchmark"
    protocols = catalog.evaluated_protocols()
    groups = catalog.groups()
    lines = ["# Leaderboard", "", GENERATED_NOTE, "", last_updated(catalog, cited), "",
             "Clean and robust accuracy (%) of adversarially pruned models: one table per dataset and pruning "
             "structure, one row per adversarial pruning (AP) method, one column per architecture and sparsity. "
             "AP names link to their taxonomy entry, `code` to the authors' code, the venue to the paper. "
             f"[Analysis by taxonomy dimension]({relative_link(LEADERBOARD_README, ANALYSIS_PAGE)}). Rankings, every "
             f"record searchable, security curves to compare: the site, **[{home().pages_url}]({home().pages_url})** "
             "([docs/site.md](../docs/site.md)).", ""]
    for protocol in catalog.published_protocols():
        text = descriptions.get(protocol, "").strip()
        lines.append(f"- **Published**, `{protocol}`" + (f": {text}" if text else "") + " Shown exactly as published.")
    if protocols:
        for protocol in protocols:
            text = descriptions.get(protocol, "").strip()
            lines.append(f"- **Evaluated**, `{protocol}`" + (f": {text}" if text else ""))
        lines += ["", "Evaluated cells link to the model's page: metrics with 95% intervals, efficiency, flags, "
                      "its security curve, then the check and the provenance (protocol, samples, checkpoint "
                      "sha256, date, evaluator version and commit). Where a model has both, the evaluated tables "
                      "show the evaluated record and the published table keeps the published one; in the "
                      f"AutoAttack table, models without an evaluated record show their published numbers, marked "
                      f"{DAGGER}."]
    else:
        lines.append("- **Evaluated**: no model has been evaluated under a leaderboard protocol yet; HO-FMN and "
                     "worst-case tables, efficiency and security curves appear here once `apb evaluate` records "
                     "exist.")
    lines += ["", RANKING_RULE, "", "## Contents", ""]
    lines += [f"- [{group_title(g)}](#{github_anchor(group_title(g))})" for g in groups]
    if efficiency:
        lines.append("- [Efficiency](#efficiency)")
    for group in groups:
        tables = GroupTables(catalog, group, labels, curves)
        for protocol, order in tables.figure_orders.items():
            on_order(protocol, group, order)
        more = relative_link(LEADERBOARD_README, group_page(group))
        lines += ["", f"## {group_title(group)}", *tables.render(LEADERBOARD_README, (0, README_ROWS), anchors, more)]
        if tables.rows() > README_ROWS:
            emit_group_pages(tables, anchors, emit_page)
    if efficiency:
        lines += ["", "## Efficiency", "",
                  "Robust accuracy (AutoAttack) against effective multiply-accumulates per input, every evaluated "
                  "model with efficiency figures, a figure per dataset and structure; the solid staircase is the "
                  "Pareto front (the best accuracy at each cost), its APs named:", ""]
        lines.append(half_width_figures([(relative_link(LEADERBOARD_README, path), alt)
                                         for path, alt in sorted(efficiency.items())]))
    return "\n".join(lines) + "\n"


def emit_group_pages(tables: GroupTables, anchors: Anchors, emit_page: Callable[[PurePosixPath, str], None]) -> None:
    """Every row of a group's tables, ``GROUP_PAGE_ROWS`` ranks per page, each page handed on as it is made."""
    group = tables.group
    count = -(-tables.rows() // GROUP_PAGE_ROWS)
    for number in range(1, count + 1):
        page = group_page(group, number)
        links = " · ".join(f"**{n}**" if n == number else f"[{n}]({relative_link(page, group_page(group, n))})"
                           for n in range(1, count + 1))
        navigation = [] if count == 1 else ["", f"Page {number} of {count} (ranks {GROUP_PAGE_ROWS} per page): "
                                                f"{links}"]
        start = (number - 1) * GROUP_PAGE_ROWS
        body = tables.render(page, (start, start + GROUP_PAGE_ROWS), anchors)
        emit_page(page, "\n".join([f"# {group_title(group)}", "", GENERATED_NOTE, "",
                                   f"Every row of the [leaderboard]({relative_link(page, LEADERBOARD_README)})'s "
                                   f"{group_title(group)} tables.", "", RANKING_RULE, *navigation, *body,
                                   *navigation]) + "\n")


def taxonomy_links(anchors: Anchors, from_page: PurePosixPath) -> dict[str, list[tuple[str, str]]]:
    """ap_key -> ``(group title, link)`` to its rows, for each group it has rows in (the README where they are
    shown there, else the group's full page)."""
    from evaluator.render.layout import group_sort_key

    links: dict[str, list[tuple[str, str]]] = {}
    for (ap_key, group), pages in sorted(anchors.placed.items(), key=lambda item: (item[0][0],
                                                                                   group_sort_key(item[0][1]))):
        page = LEADERBOARD_README if LEADERBOARD_README in pages else pages[0]
        links.setdefault(ap_key, []).append((group_title(group), relative_link(from_page, page,
                                                                               row_anchor(ap_key, group))))
    return links

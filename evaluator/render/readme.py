"""``leaderboard/README.md``: per dataset and structure, the evaluated tables of each leaderboard protocol
(AutoAttack with published numbers filling the gaps, HO-FMN, worst case, efficiency) with their security
curves inline, and the published table; the efficiency trade-off per dataset; links to the analysis page.

Each table shows its first ``README_ROWS`` rows; a group with a longer table gets a page of its own
(``leaderboard/groups/<dataset>_<US|S>.md``) with every row, so the README stays a page a reader can scroll.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Collection, Mapping, Sequence

from evaluator.render.catalog import Catalog, last_updated
from evaluator.render.layout import (ANALYSIS_PAGE, LEADERBOARD_README, Group, curve_file,
                                     group_page, group_title, model_link, relative_link)
from evaluator.render.markdown import GENERATED_NOTE, github_anchor, simple_table
from evaluator.render.pages import protocol_anchor
from evaluator.render.rows import Row
from evaluator.render.svg import si_label
from evaluator.render.tables import (DAGGER, FLAG, RANKING_RULE, ApLabel, Cell, Column, column_title, has_dagger,
                                     leaderboard_table, rank_rows)

README_ROWS = 25


@dataclass(frozen=True)
class TableKind:
    """A robust-accuracy metric shown as one table."""

    title: str
    metric: str
    ranking_title: str


AUTOATTACK = TableKind("AutoAttack", "aa_robust_accuracy", "mean AA")
EVALUATED_TABLES = (
    AUTOATTACK,
    TableKind("HO-FMN", "hofmn_robust_accuracy", "mean HO-FMN"),
    TableKind("Worst case (AutoAttack and HO-FMN)", "worst_case_robust_accuracy", "mean worst case"),
)
CLEAN = "clean_accuracy"


def published_cells(rows: list[Row]) -> dict[tuple[str, Column], Cell]:
    return {(r.ap_key, r.column): Cell(r.metric(CLEAN), r.metric(AUTOATTACK.metric)) for r in rows if r.published}


def evaluated_cells(rows: list[Row], protocol: str, kind: TableKind, page: PurePosixPath,
                    fill_with_published: bool) -> dict[tuple[str, Column], Cell]:
    """Cells of *protocol*'s records for one metric, linked to their model pages and marked when flagged;
    published numbers fill the models without an evaluated record when asked (marked published-only)."""
    cells = {}
    if fill_with_published:
        cells = {k: Cell(c.clean, c.robust, published_only=True) for k, c in published_cells(rows).items()}
    anchor = protocol_anchor(protocol)
    for r in rows:
        if not r.published and r.protocol == protocol:
            target = model_link(page, r.model_key, anchor)
            cells[(r.ap_key, r.column)] = Cell(r.metric(CLEAN), r.metric(kind.metric), target, flagged=bool(r.flags))
    return cells


def _legend(cells: dict) -> str:
    marks = ([f"{DAGGER} published only"] if has_dagger(cells) else []) + (
        [f"{FLAG} flagged (see the model page)"] if any(c.flagged for c in cells.values()) else [])
    linked = ", linked to the model page where evaluated" if any(c.link for c in cells.values()) else ""
    return (f"Cells: clean/robust accuracy (%){linked}" + (f"; {', '.join(marks)}" if marks else "") + ". "
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


def _table_lines(title: str, cells: dict, labels: Mapping[str, ApLabel], columns: list[Column], ranking: str,
                 page: PurePosixPath, limit: int | None, full_page: PurePosixPath,
                 anchor=None) -> tuple[list[str], bool]:
    table, total = leaderboard_table(cells, labels, columns, ranking, page, limit, anchor)
    lines = ["", f"### {title}", "", table, "", _legend(cells)]
    cut = limit is not None and total > limit
    if cut:
        lines += ["", f"Showing {limit} of {total} rows: [every row]({relative_link(page, full_page)}), and the "
                      "site's searchable tables."]
    return lines, cut


def efficiency_table(rows: list[Row], protocol: str, labels: Mapping[str, ApLabel], columns: list[Column],
                     page: PurePosixPath, order: Sequence[str] = (), limit: int | None = None) -> tuple[str, int] | None:
    """Effective MACs per input (and share of dense) of each evaluated model, a column per architecture and
    sparsity, the APs in *order* (the AutoAttack table's; others after, by name), the first *limit* of them;
    with the number of rows in all. None when no model of the protocol has efficiency figures."""
    measured = [r for r in rows if not r.published and r.protocol == protocol and r.efficiency]
    if not measured:
        return None
    anchor = protocol_anchor(protocol)
    by_ap: dict[str, dict[Column, Row]] = {}
    for r in measured:
        by_ap.setdefault(r.ap_key, {})[r.column] = r
    position = {ap_key: index for index, ap_key in enumerate(order)}
    ordered = sorted(by_ap, key=lambda k: (position.get(k, len(position)), labels[k].name, k))
    lines = []
    for ap_key in ordered[:limit]:
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
    return simple_table(["AP", *map(column_title, columns)], lines), len(ordered)


def curve_images(catalog_curves: Collection[tuple[str, Group, Column]], protocol: str, group: Group,
                 columns: list[Column],
                 page: PurePosixPath) -> str:
    """The curve figures of a protocol and group, three to a line."""
    images = [f'<img src="{relative_link(page, curve_file(protocol, group, *column))}" width="32%" '
              f'alt="security curves, {group_title(group)}, {column_title(column)}, {protocol}">'
              for column in columns if (protocol, group, column) in catalog_curves]
    return "\n".join(images)


def group_sections(catalog: Catalog, group: Group, labels: Mapping[str, ApLabel],
                   curves: Collection[tuple[str, Group, Column]],
                   page: PurePosixPath, limit: int | None, anchors: Anchors) -> tuple[list[str], bool]:
    """The tables and figures of one group, for *page*; whether a table was cut at *limit* rows."""
    take = anchors.taker(group, page)
    rows = catalog.in_group(group)
    columns = catalog.columns(group)
    cited = ", ".join(catalog.references()) or "the original benchmark"
    lines: list[str] = []
    cut = False
    for protocol in catalog.evaluated_protocols():
        if not any(not r.published and r.protocol == protocol for r in rows):
            continue  # this group has no evaluated record under this protocol: its published table suffices
        order: list[str] = []
        for kind in EVALUATED_TABLES:
            cells = evaluated_cells(rows, protocol, kind, page, fill_with_published=kind is AUTOATTACK)
            if not any(not cell.published_only for cell in cells.values()):
                continue
            if kind is AUTOATTACK:
                order = [ranked.ap_key for ranked in rank_rows(cells, labels)]
            more, was_cut = _table_lines(f"{kind.title}, protocol `{protocol}`", cells, labels, columns,
                                         f"{kind.ranking_title} (k/n)", page, limit, group_page(group), take)
            lines += more
            cut = cut or was_cut
            if has_dagger(cells):
                published = ", ".join(f"`{p}`" for p in catalog.published_protocols())
                lines += ["", f"{DAGGER} Published only: no `{protocol}` record of this model yet; the "
                              f"{published} number ({cited}) is shown instead."]
        efficiency = efficiency_table(rows, protocol, labels, columns, page, order, limit)
        if efficiency:
            table, total = efficiency
            lines += ["", f"### Efficiency, protocol `{protocol}`", "", table, "",
                      "Effective multiply-accumulates per input (share of the dense architecture's): non-zero "
                      "weights for unstructured pruning, all-zero filters and channels removed for structured "
                      "pruning (measured by `apb check`). APs in the order of the AutoAttack table."]
            if limit is not None and total > limit:
                lines += ["", f"Showing {limit} of {total} rows: [every row]({relative_link(page, group_page(group))})."]
                cut = True
        images = curve_images(curves, protocol, group, columns, page)
        if images:
            lines += ["", f"Security curves (HO-FMN, `{protocol}`; top models of each column, all on the site):",
                      "", images]
    cells = published_cells(rows)
    if cells:
        more, was_cut = _table_lines(f"Published ({cited})", cells, labels, columns, "mean AA (k/n)", page, limit,
                                     group_page(group), take)
        lines += more
        cut = cut or was_cut
        for protocol in catalog.published_protocols():
            images = curve_images(curves, protocol, group, columns, page)
            if images:
                lines += ["", f"Security curves (HO-FMN distances published with the original benchmark, on the "
                              f"samples each figure names; `{protocol}`):", "", images]
    return lines, cut


def render_readme(catalog: Catalog, labels: Mapping[str, ApLabel], curves: Collection[tuple[str, Group, Column]],
                  efficiency: set, descriptions: Mapping[str, str], anchors: Anchors,
                  emit_page: Callable[[Group, str], None]) -> str:
    """The leaderboard README; the full page of each group whose tables it cuts goes to *emit_page* as soon as
    it is made. *curves* holds the curve columns that have figures, *efficiency* the efficiency figure files;
    *anchors* records where each AP's rows got their anchor."""
    cited = ", ".join(catalog.references()) or "the original benchmark"
    protocols = catalog.evaluated_protocols()
    groups = catalog.groups()
    lines = ["# Leaderboard", "", GENERATED_NOTE, "", last_updated(catalog, cited), "",
             "Clean and robust accuracy (%) of adversarially pruned models: one table per dataset and pruning "
             "structure, one row per adversarial pruning (AP) method, one column per architecture and sparsity. "
             "AP names link to their taxonomy entry, `code` to the authors' code, the venue to the paper. "
             f"[Analysis by taxonomy dimension]({relative_link(LEADERBOARD_README, ANALYSIS_PAGE)}).", ""]
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
        section, cut = group_sections(catalog, group, labels, curves, LEADERBOARD_README, README_ROWS, anchors)
        if cut:
            page = group_page(group)
            full, _ = group_sections(catalog, group, labels, curves, page, None, anchors)
            emit_page(group, "\n".join([f"# {group_title(group)}", "", GENERATED_NOTE, "",
                                      f"Every row of the [leaderboard]({relative_link(page, LEADERBOARD_README)})'s "
                                      f"{group_title(group)} tables.", "", RANKING_RULE, *full]) + "\n")
        lines += ["", f"## {group_title(group)}", *section]
    if efficiency:
        lines += ["", "## Efficiency", "",
                  "Robust accuracy (AutoAttack) against effective multiply-accumulates per input, every evaluated "
                  "model with efficiency figures:", ""]
        lines += [f'<img src="{relative_link(LEADERBOARD_README, path)}" width="49%" alt="{path.stem}">'
                  for path in sorted(efficiency)]
    return "\n".join(lines) + "\n"


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

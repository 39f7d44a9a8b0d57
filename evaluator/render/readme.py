"""``leaderboard/README.md``: per dataset and structure, the evaluated tables of each leaderboard protocol
(AutoAttack with published numbers filling the gaps, HO-FMN, worst case, security curves) and the
published table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from evaluator.keys import ARCHITECTURE_CODES, ModelKey
from evaluator.render.inputs import Result, Results
from evaluator.render.layout import (LEADERBOARD_README, Group, architecture_sort_key, curve_file, group_of,
                                     group_sort_key, group_title, model_page, relative_link)
from evaluator.render.markdown import GENERATED_NOTE, github_anchor
from evaluator.render.tables import DAGGER, ApLabel, Cell, Column, column_title, has_dagger, leaderboard_table


@dataclass(frozen=True)
class TableKind:
    """A robust-accuracy metric shown as one table."""

    title: str
    metric: str
    ranking_title: str


AUTOATTACK = TableKind("AutoAttack", "aa_robust_accuracy", "mean AA (cells)")
EVALUATED_TABLES = (
    AUTOATTACK,
    TableKind("HO-FMN", "hofmn_robust_accuracy", "mean HO-FMN (cells)"),
    TableKind("Worst case (AutoAttack and HO-FMN)", "worst_case_robust_accuracy", "mean worst case (cells)"),
)
CLEAN = "clean_accuracy"


def protocol_anchor(protocol: str) -> str:
    """The anchor of a protocol's section on a model page."""
    return github_anchor(protocol_heading(protocol))


def protocol_heading(protocol: str) -> str:
    return f"Evaluated: {protocol}"


def results_in_group(results: Results, group: Group) -> list[Result]:
    return [r for r in results.all() if group_of(r.key) == group]


def published_protocols(results: Results) -> list[str]:
    return sorted({r.protocol for r in results.published.values()})


def groups_of(results: Results) -> list[Group]:
    return sorted({group_of(r.key) for r in results.all()}, key=group_sort_key)


def columns_of(results: Results, group: Group) -> list[Column]:
    """Both architectures, each with every sparsity any record of the group has."""
    keys = [r.key for r in results_in_group(results, group)]
    architectures = sorted({k.architecture for k in keys} | set(ARCHITECTURE_CODES), key=architecture_sort_key)
    sparsities = sorted({k.sparsity for k in keys})
    return [(architecture, sparsity) for architecture in architectures for sparsity in sparsities]


def _column(key: ModelKey) -> Column:
    return (key.architecture, key.sparsity)


def published_cells(results: Results, group: Group) -> dict[tuple[str, Column], Cell]:
    return {(r.key.ap_key, _column(r.key)): Cell(r.metric(CLEAN), r.metric(AUTOATTACK.metric))
            for r in results.published.values() if group_of(r.key) == group}


def evaluated_cells(results: Results, protocol: str, group: Group, kind: TableKind,
                    fill_with_published: bool) -> dict[tuple[str, Column], Cell]:
    """Cells of *protocol*'s records for one metric, linked to their model pages; published numbers fill
    the models without an evaluated record when asked (they are marked published-only)."""
    cells = {}
    if fill_with_published:
        cells = {k: Cell(c.clean, c.robust, published_only=True) for k, c in published_cells(results, group).items()}
    for r in results.evaluated.get(protocol, {}).values():
        if group_of(r.key) == group:
            target = relative_link(LEADERBOARD_README, model_page(r.model_key), protocol_anchor(protocol))
            cells[(r.key.ap_key, _column(r.key))] = Cell(r.metric(CLEAN), r.metric(kind.metric), target)
    return cells


def references(results: Results) -> list[str]:
    """The sources named by the published records (e.g. ``arXiv:2409.01249``)."""
    return sorted({str((r.record.get("provenance") or {}).get("reference")) for r in results.published.values()
                   if (r.record.get("provenance") or {}).get("reference")})


def _legend(ranking: str) -> str:
    return (f"Cells: clean/robust accuracy (%). Rows: by {ranking.replace(' (cells)', '')} robust accuracy "
            "over the cells the AP has (their number in brackets), ties by name. "
            "Bold: the best robust accuracy of each column (ties all bold).")


def _curve_links(results: Results, protocol: str, group: Group, curves: set) -> str:
    links = []
    for architecture, sparsity in columns_of(results, group):
        path = curve_file(protocol, group, architecture, sparsity)
        if path in curves:
            links.append(f"[{column_title((architecture, sparsity))}]({relative_link(LEADERBOARD_README, path)})")
    return " · ".join(links)


def _protocol_line(protocol: str, descriptions: Mapping[str, str]) -> str:
    text = descriptions.get(protocol, "").strip()
    return f"`{protocol}`" + (f": {text}" if text else "")


def render_readme(results: Results, labels: Mapping[str, ApLabel], curves: set,
                  descriptions: Mapping[str, str]) -> str:
    """The whole leaderboard README; *curves* is the set of curve files that are rendered, *descriptions*
    the description of each protocol (from its file)."""
    cited = ", ".join(references(results)) or "the original benchmark"
    protocols = sorted(results.evaluated)
    groups = groups_of(results)
    lines = [
        "# Leaderboard", "", GENERATED_NOTE, "",
        "Clean and robust accuracy (%) of adversarially pruned models: one table per dataset and pruning "
        "structure, one row per adversarial pruning (AP) method, one column per architecture and sparsity. "
        "AP names link to their taxonomy entry, `code` to the authors' code.",
        "",
    ]
    for protocol in published_protocols(results):
        lines.append(f"- **Published**, {_protocol_line(protocol, descriptions)} Shown exactly as published.")
    if protocols:
        lines += [f"- **Evaluated**, {_protocol_line(protocol, descriptions)}" for protocol in protocols]
        lines += [
            "", "Evaluated cells link to the model's page with its provenance (protocol, samples, checkpoint "
            "sha256, date, evaluator version and commit, flags, 95% intervals, sparsity check). Where a model has "
            "both, the evaluated tables show the evaluated record and the published table keeps the published "
            f"one; in the AutoAttack table, models without an evaluated record show their published numbers, "
            f"marked {DAGGER}."]
    else:
        lines.append("- **Evaluated**: no model has been evaluated under a leaderboard protocol yet; HO-FMN and "
                     "worst-case tables and security curves appear here once `apb evaluate` records exist.")
    lines += ["", "## Contents", ""]
    lines += [f"- [{group_title(g)}](#{github_anchor(group_title(g))})" for g in groups]
    for group in groups:
        lines += ["", f"## {group_title(group)}"]
        columns = columns_of(results, group)
        for protocol in protocols:
            if not any(group_of(r.key) == group for r in results.evaluated[protocol].values()):
                continue  # this group has no evaluated record under this protocol: its published table suffices
            for kind in EVALUATED_TABLES:
                cells = evaluated_cells(results, protocol, group, kind, fill_with_published=kind is AUTOATTACK)
                if not cells:
                    continue
                table = leaderboard_table(cells, labels, columns, kind.ranking_title, LEADERBOARD_README)
                lines += ["", f"### {kind.title}, protocol `{protocol}`", "", table, "", _legend(kind.ranking_title)]
                if has_dagger(cells):
                    published = ", ".join(f"`{p}`" for p in published_protocols(results))
                    lines += ["", f"{DAGGER} Published only: no `{protocol}` record of this model yet; the "
                                  f"{published} number ({cited}) is shown instead."]
            links = _curve_links(results, protocol, group, curves)
            if links:
                lines += ["", f"Security curves (HO-FMN, `{protocol}`): {links}"]
        cells = published_cells(results, group)
        if cells:
            lines += ["", f"### Published ({cited})", "",
                      leaderboard_table(cells, labels, columns, AUTOATTACK.ranking_title, LEADERBOARD_README), "",
                      _legend(AUTOATTACK.ranking_title)]
    return "\n".join(lines) + "\n"

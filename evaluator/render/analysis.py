"""``leaderboard/analysis.md``: robust accuracy grouped by each taxonomy dimension (``analysis.yaml``), the
comparison the paper makes by hand, from the same rows as the tables. One table per protocol and dimension
(protocols are never pooled): for each value, the APs that have it and, per dataset, the number of cells and
the median and range of their AutoAttack robust accuracy."""
from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any, Iterable, Mapping, Sequence

from evaluator.registry.norms import ThreatModel
from evaluator.render.catalog import Catalog
from evaluator.render.layout import ANALYSIS_PAGE, LEADERBOARD_README, relative_link
from evaluator.render.markdown import GENERATED_NOTE, inline, simple_table
from evaluator.render.tables import percent
from evaluator.render.taxonomy_tables import value_text

DIMENSIONS_FILE = Path(__file__).with_name("analysis.yaml")
METRIC = "aa_robust_accuracy"
NOT_APPLICABLE = "n/a"


def load_dimensions() -> list[dict]:
    from evaluator.untrusted.safeio import load_yaml

    data, _ = load_yaml(DIMENSIONS_FILE)
    return list(data["dimensions"])


def field_value(entry: dict, dotted: str) -> Any:
    value: Any = entry
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def dimension_values(entry: dict, dimension: dict) -> list[str]:
    """The values an entry has in one dimension (``n/a`` where none of its fields is set)."""
    for dotted in dimension["fields"]:
        value = field_value(entry, dotted)
        if value is None:
            continue
        if isinstance(value, list):
            return [str(item) for item in value]
        return [value_text(value)]
    return [NOT_APPLICABLE]


def grouped(catalog: Catalog, entries: Iterable[dict], dimension: dict) -> dict[str, dict[tuple[str, str], list[float]]]:
    """protocol -> (value, dataset) -> robust accuracies of that protocol's cells of APs with that value."""
    values = {entry["ap_key"]: dimension_values(entry, dimension) for entry in entries}
    found: dict[str, dict[tuple[str, str], list[float]]] = {}
    for protocol, ap_key, dataset, accuracy in catalog.metric_values(METRIC):
        for value in values.get(ap_key, ()):
            found.setdefault(protocol, {}).setdefault((value, dataset), []).append(float(accuracy))
    return found


def analysis_tables(catalog: Catalog, entries: list[dict]) -> Iterable[tuple[str, str, list[str], list[list[str]]]]:
    """``(protocol, dimension title, headers, rows)`` of every analysis table."""
    datasets = catalog.datasets()
    aps_of = catalog.aps_by_protocol()
    for dimension in load_dimensions():
        by_protocol = grouped(catalog, entries, dimension)
        for protocol in sorted(by_protocol):
            cells = by_protocol[protocol]
            names = sorted({value for value, _ in cells})
            headers = ["value", "APs"] + [f"{d} {what}" for d in datasets for what in ("cells", "median", "range")]
            rows = []
            for value in names:
                members = {e["ap_key"] for e in entries if value in dimension_values(e, dimension)} & aps_of[protocol]
                line = [value, str(len(members))]
                for dataset in datasets:
                    numbers = cells.get((value, dataset), [])
                    line += ([str(len(numbers)), percent(median(numbers)),
                              f"{percent(min(numbers))}–{percent(max(numbers))}"] if numbers else ["0", "-", "-"])
                rows.append(line)
            yield protocol, dimension["title"], headers, rows


def render_analysis(catalog: Catalog, entries: list[dict], descriptions: Mapping[str, str],
                    threats: Mapping[str, ThreatModel], labels: Mapping[str, Any] | None = None,
                    compared: Sequence[Any] = ()) -> str:
    """The analysis page: the dimension tables, rank stability across ε and, for each *compared* protocol
    (:class:`~evaluator.render.reevaluation.Comparison`), the published vs re-evaluated figure."""
    lines = ["# Robust accuracy by taxonomy dimension", "", GENERATED_NOTE, "",
             f"AutoAttack robust accuracy (%) of the [leaderboard]({relative_link(ANALYSIS_PAGE, LEADERBOARD_README)})'s "
             "cells, grouped by each dimension of the taxonomy: per value, the APs that have it and, per dataset, "
             "the number of cells (architectures, structures and sparsities together), their median and range. "
             "An AP with several values of a dimension counts in each. Each protocol has its own tables: "
             "numbers of different protocols are never pooled. The site shows the same data as box plots."]
    current = None
    for protocol, title, headers, rows in analysis_tables(catalog, entries):
        if protocol != current:
            text = descriptions.get(protocol, "").strip()
            lines += ["", f"## Protocol `{protocol}`"] + (["", text] if text else [])
            current = protocol
        lines += ["", f"### {title}", "", simple_table(headers, rows)]
    if current is None:
        lines += ["", "No records yet."]
    lines += stability_section(catalog, threats, labels)
    if compared:
        from evaluator.render.layout import reevaluation_file

        lines += ["", "## Published vs re-evaluated", "",
                  "Each model with a published record and an evaluated one: its published AutoAttack robust accuracy "
                  "(x) against the re-evaluated one (y, with its 95% interval); on the dashed diagonal they agree."]
        for comparison in compared:
            lines += ["", f"### `{comparison.protocol}`", "", comparison.summary(), "",
                      f'<img src="{relative_link(ANALYSIS_PAGE, reevaluation_file(comparison.protocol))}" '
                      f'width="70%" alt="published against re-evaluated AutoAttack robust accuracy, '
                      f'{comparison.protocol}: {comparison.summary()}">']
    return "\n".join(lines) + "\n"


STABILITY_ROWS = 25  # rows of each stability table (the best at the protocol's ε); τ covers every complete row


def stability_section(catalog: Catalog, threats: Mapping[str, ThreatModel],
                      labels: Mapping[str, Any] | None) -> list[str]:
    """Rank stability across ε and the ranking by area under the curve (:mod:`evaluator.render.stability`)."""
    from evaluator.render.layout import group_title
    from evaluator.render.curves import eps_label
    from evaluator.render.stability import REFERENCE, budgets, measures, stability_tables

    lines: list[str] = []
    for found in stability_tables(catalog, threats.__getitem__):
        names = measures(found.threat)
        at, up_to = (eps_label(eps) for eps in budgets(found.threat)[REFERENCE:])
        if not lines:
            lines = ["", "## Rank stability across ε", "",
                     "From the HO-FMN security curves: each group's complete rows (a curve in every column) ranked by "
                     "their mean robust accuracy at three budgets and by the mean area under their curves up to "
                     f"{up_to}, beside the rank at {at}. Kendall's τ compares each order with the {at} one (1: the "
                     "same order, -1: reversed). Ranks here share only equal values: the paired tests of the "
                     "leaderboard tables are made at the protocol's ε."]
        taus = ", ".join(f"{measure}: {tau:.2f}" for measure, tau in zip(names, found.taus)
                         if measure != names[REFERENCE])
        shown = found.rows[:STABILITY_ROWS]
        rows = [[inline(labels[ap].name) if labels and ap in labels else inline(ap),
                 *(f"{rank} ({value:.2f})" for rank, value in values)] for ap, values in shown]
        lines += ["", f"### `{found.protocol}` · {group_title(found.group)}", "",
                  f"{len(found.rows)} complete rows over {found.columns} columns; Kendall's τ with the {at} order: "
                  f"{taus}." + (f" The best {len(shown)} at {at}:" if len(found.rows) > len(shown) else ""), "",
                  simple_table(["AP", *(f"rank ({m}, %)" for m in names)], rows,
                               ["left", *["right"] * len(names)])]
    return lines

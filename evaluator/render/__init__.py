"""Everything ``apb leaderboard`` generates, rendered from the repository's data as a stream of files.

:func:`render_into` hands each generated file (path relative to the root, bytes) to a sink as soon as it is
made: ``leaderboard/README.md`` (and ``leaderboard/groups/*.md`` where its tables are cut), the per-model pages
``leaderboard/models/<ap_key>/<model_key>.md``, the figures ``leaderboard/curves/...svg``, ``leaderboard/analysis.md``
and ``taxonomy/README.md``. Records are read one model at a time; what is kept is a compact row per record
(:mod:`evaluator.render.rows`), on disk (:mod:`evaluator.render.catalog`), so memory does not grow with the
number of records nor with their sidecars' size.
:func:`render_all` collects the stream into a dict (for tests and the demo).
Same data, same bytes: iteration is sorted everywhere and nothing reads the clock.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Collection, Mapping

from evaluator import paths
from evaluator.errors import APBError, Problem

if TYPE_CHECKING:
    from evaluator.registry.norms import ThreatModel
    from evaluator.render.catalog import Catalog, CurveColumn
    from evaluator.render.curve_set import TableOrder
    from evaluator.render.layout import Group
    from evaluator.render.tables import ApLabel

GENERATED_DIRS = (paths.LEADERBOARD_DIR,)  # every file under these is generated (and removed when no longer rendered)

Sink = Callable[[PurePosixPath, bytes], None]


def render_into(root: Path, emit: Sink, *, protocols: Collection[str] | None = None,
                on_model: Callable[[list], None] | None = None) -> None:
    """Render every generated file of the repository at *root* into *emit*.

    Evaluated records are shown for protocols marked ``leaderboard: true``; *protocols* overrides that
    choice (the demo renders its ``smoke-v1`` records this way). Published records are always shown.
    *on_model* receives each model's records (a list of :class:`~evaluator.render.inputs.Result`) as they
    stream by (the site writes its downloads this way)."""
    from tqdm import tqdm

    from evaluator.protocol import list_protocols
    from evaluator.render.analysis import render_analysis
    from evaluator.render.catalog import Catalog
    from evaluator.render.inputs import EVALUATED, iter_model_records
    from evaluator.render.labels import ap_labels
    from evaluator.render.layout import (ANALYSIS_PAGE, LEADERBOARD_README, TAXONOMY_README, efficiency_file, model_page,
                                         reevaluation_file, relative_link, taxonomy_page)
    from evaluator.render.pages import render_model_page
    from evaluator.render.reevaluation import comparisons
    from evaluator.render.readme import Anchors, render_readme, taxonomy_links
    from evaluator.render.rows import row_of
    from evaluator.render.threats import faces_published, threat_of
    from evaluator.render.taxonomy_tables import render_taxonomy_entries, render_taxonomy_readme
    from evaluator.repository.submissions import iter_taxonomies
    from evaluator.repository.taxonomy import load_vocabulary

    root = Path(root)
    settings = {protocol.id: protocol for protocol in list_protocols()}
    if protocols is not None:
        unknown = sorted(set(protocols) - set(settings))
        if unknown:
            raise APBError(Problem("apb leaderboard", f"unknown protocol(s) {', '.join(unknown)}; choose from "
                                                      f"{', '.join(sorted(settings))}", field="protocols"))

    def shown(protocol: str) -> bool:
        if protocol not in settings:
            raise APBError(Problem("evaluator/protocols", f"records name protocol {protocol!r}, which has no "
                                                          f"evaluator/protocols/{protocol}.yaml; fix the records' "
                                                          "protocol field", field="protocol"))
        return settings[protocol].leaderboard


    entries, vocabulary = list(iter_taxonomies(root)), load_vocabulary(root)
    labels = ap_labels(entries)
    descriptions = {protocol.id: protocol.description for protocol in settings.values()}
    with Catalog() as catalog:
        for results in tqdm(iter_model_records(root, shown, protocols), desc="records", unit=" models",
                            disable=None):
            ap_key = results[0].key.ap_key
            if ap_key not in labels:
                raise APBError(Problem("submissions", f"records of {ap_key} but no taxonomy.json for it; add "
                                                      f"submissions/{ap_key}/taxonomy.json", field="ap_key"))
            rows = [row_of(root, result, threat_of(settings[result.protocol])) for result in results]
            catalog.add(rows)
            if any(result.record["source"] == EVALUATED for result in results):
                emit(model_page(results[0].model_key),
                     render_model_page(results, rows, labels, descriptions).encode("utf-8"))
            if on_model is not None:
                on_model(results)
        curves = catalog.curve_columns()
        drawn: set[CurveColumn] = set()

        def draw(protocol: str, group: Group, order: TableOrder) -> None:
            """A group's curve figures of *protocol*, once its tables are ranked (*order*: the illustrated one's)."""
            for key in curves:
                if key[:2] == (protocol, group):
                    emit_column_curves(catalog, key, labels, threat_of(settings[protocol]), order, emit)
                    drawn.add(key)

        efficiency: dict[PurePosixPath, str] = {}  # figure -> its alt text
        for protocol in catalog.evaluated_protocols():
            for group in catalog.groups():
                alt = emit_efficiency(catalog, protocol, group, labels, emit)
                if alt is not None:
                    efficiency[efficiency_file(protocol, group)] = alt
        anchors = Anchors()
        readme = render_readme(catalog, labels, set(curves), efficiency, descriptions, anchors,
                               lambda page, text: emit(page, text.encode("utf-8")), draw)
        if set(curves) - drawn:
            raise AssertionError(f"curve columns without a table to follow: {sorted(set(curves) - drawn)}")
        emit(LEADERBOARD_README, readme.encode("utf-8"))
        compared = comparisons(catalog, {p for p, s in settings.items() if faces_published(threat_of(s))})
        for comparison in compared:
            emit(reevaluation_file(comparison.protocol), comparison.svg.encode("utf-8"))
        threats = {protocol: threat_of(setting) for protocol, setting in settings.items()}
        emit(ANALYSIS_PAGE, render_analysis(catalog, entries, descriptions, threats, labels, compared).encode("utf-8"))
    stages = [stage for stage in vocabulary["pipelines"] if any(e["pipeline"]["stage"] == stage for e in entries)]
    for stage in stages:  # the entries, a page per stage (taxonomy/README.md keeps the tables)
        emit(taxonomy_page(stage), render_taxonomy_entries(entries, stage, vocabulary,
                                                           taxonomy_links(anchors, taxonomy_page(stage)),
                                                           relative_link(taxonomy_page(stage), TAXONOMY_README))
             .encode("utf-8"))
    pages = {stage: relative_link(TAXONOMY_README, taxonomy_page(stage)) for stage in stages}
    emit(TAXONOMY_README, render_taxonomy_readme(entries, vocabulary, taxonomy_links(anchors, TAXONOMY_README), pages)
         .encode("utf-8"))


def emit_column_curves(catalog: Catalog, key: CurveColumn, labels: Mapping[str, ApLabel], threat: ThreatModel,
                       order: TableOrder, emit: Sink) -> None:
    """One curve column's figure and the curve of each evaluated model in it (only this column's rows read), its
    models chosen and ordered by *order*, the table the figure illustrates."""
    from evaluator.render.curve_set import CONTEXT_K, context_series, group_curve_svg, model_curve_svg, top_rows
    from evaluator.render.layout import curve_file, model_curve_file

    protocol, group, column = key
    rows = catalog.column_rows(key)
    emit(curve_file(protocol, group, *column), group_curve_svg(rows, labels, protocol, threat, order).encode("utf-8"))
    context = context_series(top_rows(rows, order, labels, CONTEXT_K), labels, threat, order)
    for row in rows:
        if not row.published:
            emit(model_curve_file(row.model_key, protocol),
                 model_curve_svg(row, context, labels, protocol, threat, order).encode("utf-8"))


def emit_efficiency(catalog: Catalog, protocol: str, group: tuple[str, str], labels: Mapping[str, ApLabel],
                    emit: Sink) -> str | None:
    """The robust-accuracy-vs-MACs figure of a protocol, dataset and structure, if any model has efficiency
    figures; returns its alt text (None: no figure)."""
    from evaluator.render.curve_set import efficiency_svg
    from evaluator.render.layout import efficiency_file

    points = catalog.efficiency_points(protocol, group, "aa_robust_accuracy")
    if not points:
        return None
    figure, alt = efficiency_svg(points, protocol, group, "AutoAttack", labels)
    emit(efficiency_file(protocol, group), figure.encode("utf-8"))
    return alt


def render_all(root: Path, *, protocols: Collection[str] | None = None) -> dict[Path, bytes]:
    """Every generated file of the repository at *root*, as ``{path relative to the root: bytes}``, sorted."""
    from evaluator.render.layout import as_path

    files: dict[PurePosixPath, bytes] = {}

    def collect(path: PurePosixPath, data: bytes) -> None:
        if path in files:
            raise AssertionError(f"{path} rendered twice")
        files[path] = data

    render_into(root, collect, protocols=protocols)
    return {as_path(path): data for path, data in sorted(files.items())}

"""``apb site --out DIR``: a static, self-contained site from the same data as the leaderboard.

- ``index.html``: every record in one sortable, searchable table with filters (dataset, structure,
  architecture, sparsity, protocol and each taxonomy dimension), and the downloads;
- ``compare.html``: pick models, see their security curves and their robust accuracy at any budget of the
  curve grid (the original benchmark's Colab, in the browser);
- ``analysis.html``: robust accuracy by taxonomy dimension, as box plots;
- ``data/records.json`` and ``data/records.csv``: every record (JSON: the records themselves);
- ``data/rows.js``, ``data/analysis.js``, ``data/curves/*.js``: what the pages draw (curves are loaded per
  column when a model of that column is picked, so the pages stay small at any number of APs);
- ``assets/``: the site's script and style, and plotly.js copied from the plotly Python package.

Nothing is fetched from elsewhere at view time (a Content-Security-Policy of ``'self'`` says so to the
browser) and the pages work from ``file://`` too: data is loaded with ``<script>`` elements, not ``fetch``.
Records are streamed: the JSON and CSV downloads are written as the records are read.
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from evaluator.errors import APBError, Problem
from evaluator.record.records import METRIC_TABLE, METRICS, count_of_percent, metric_label, metrics_in, percent_interval
from evaluator.record.types import Record

if TYPE_CHECKING:
    from evaluator.registry.norms import ThreatModel
    from evaluator.render.catalog import Catalog, CurveColumn

ASSETS = Path(__file__).parent
MARKER = ".apb-site"  # a folder holding this file was written by apb site and may be replaced
CSV_FIELDS = ("model_key", "ap_key", "ap_name", "dataset", "structure_kind", "architecture", "sparsity", "source",
              "protocol", "n_samples", *METRICS, *(f"{metric}_{end}" for metric in METRICS for end in ("low", "high")),
              "flags", "params_total", "params_nonzero", "macs_dense", "macs_effective", "date", "git_commit",
              "checkpoint_sha256", "record")  # <metric>_low/_high: the metric's 95% interval (the record's, if it has one)
SITE_METRIC_FIELDS = tuple(METRIC_TABLE[m].views.get("site") or m for m in METRICS)  # metrics.yaml's views.site
ROW_FIELDS = ("model_key", "ap_key", "dataset", "structure_kind", "architecture", "sparsity", "protocol", "source",
              *SITE_METRIC_FIELDS, "flags", "macs_effective", "macs_dense", "params_nonzero",
              "params_total", "curve", "date", "aa_spread")  # aa_spread: ± half the headline metric's 95% interval
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")
POINTS_CAP = 1000  # an analysis panel with more cells than this is sent as box statistics, not its points
PAGES = {"index.html": "Leaderboard", "compare.html": "Compare security curves", "analysis.html": "Analysis"}


def plotly_js() -> bytes:
    """plotly.js as shipped by the plotly Python package (no network)."""
    try:
        import plotly
    except ImportError:
        raise APBError(Problem("apb site", "the plotly package is missing; install the project again "
                                           "(`make install`) or `pip install plotly`")) from None
    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def js_value(value: Any) -> str:
    """JSON of *value* safe inside a script file (no ``</script>``, no line separators)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def js_data(name: str, value: Any) -> str:
    """``window.NAME = <json>;``, safe inside a script file."""
    return f"window.{name} = {js_value(value)};\n"


def prepare_out(out: Path) -> None:
    """An empty folder at *out*: created, or emptied if an earlier ``apb site`` wrote it; anything else there is
    refused so that no user files are deleted."""
    if out.exists():
        if not out.is_dir():
            raise APBError(Problem(str(out), "exists and is not a folder; choose another --out"))
        if any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise APBError(Problem(str(out), f"is not empty and holds no {MARKER} (it was not written by apb "
                                                 "site); choose an empty or new folder"))
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by apb site; the whole folder is replaced by the next run\n")


def footer(source_url: str | None) -> str:
    """Links back: the paper, and where the repository's files are browsable (*source_url*, ``.../blob/COMMIT``)
    its repository, ranking rule, contributing guide and citation."""
    from evaluator.registry.home import home

    links = [(f"Paper ({home().paper_label})", home().paper_url)]
    if source_url:
        links = [("Repository", source_url.split("/blob/")[0]), *links,
                 ("Citation", f"{source_url}/README.md#citation"),
                 ("How ranks and flags are made", f"{source_url}/docs/leaderboard.md#tables"),
                 ("Contributing", f"{source_url}/CONTRIBUTING.md")]
    return " · ".join(f'<a href="{escape(url)}" rel="noopener">{escape(text)}</a>' for text, url in links)


def page(title: str, current: str, body: str, scripts: Iterable[str], last_updated: str,
         source_url: str | None = None) -> str:
    nav = " ".join(f'<a href="{name}"{" aria-current=page" if name == current else ""}>{escape(text)}</a>'
                   for name, text in PAGES.items())
    tags = "\n".join(f'<script src="{escape(src)}"></script>' for src in scripts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(title)} · Adversarial Pruning Benchmark</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/site.css">
</head>
<body data-page="{escape(current)}">
<header><strong>Adversarial Pruning Benchmark</strong> <nav>{nav}</nav></header>
<main>
<h1>{escape(title)}</h1>
<p class="updated">{escape(last_updated)}</p>
{body}
</main>
<footer>{footer(source_url)}</footer>
{tags}
</body>
</html>
"""


INDEX_BODY = """<section aria-labelledby="rankings-title"><h2 id="rankings-title">Rankings</h2>
<p>One table per dataset and pruning structure, in the leaderboard's order; pick the protocol and metric of
each. <strong>#</strong> is a rank group: rows not significantly different from the row above share its rank
(exact paired test on the per-sample results, α = 0.05, Holm's correction; published numbers have no
per-sample results and are ranked by their means). <em>p</em>: the test against the row above. The rule, with a
worked example: <em>Rank groups</em> in docs/leaderboard.md (linked at the foot of the page).</p>
<div id="ranks"></div></section>
<h2>Every record</h2>
<p>Every record of the benchmark: one row per model and protocol. Sort with the column buttons, type to search,
narrow with the filters (the address keeps them: share it). Published numbers are shown as published (protocol
<code>published-2024</code>); ⚠ marks records with a sanity flag, with its reason. Downloads:
<a href="data/records.csv" download>CSV</a> · <a href="data/records.json" download>JSON</a> (every record, as
committed).</p>
<div id="filters" class="filters"><input id="search" type="search" placeholder="search AP, model key, venue" aria-label="search"></div>
<p id="count" class="count"></p>
<div class="scroll"><table id="leaderboard"><thead></thead><tbody></tbody></table></div>
<div class="pager"><button id="previous" type="button">previous</button> <span id="page"></span>
<button id="next" type="button">next</button></div>"""

COMPARE_BODY = """<p>Pick models (those with per-sample distances: evaluated records, and published records with the
original benchmark's distances) of one threat model, then read their robust accuracy at any budget ε of its
grid (Linf: steps of 1/1020, so every k/255 is on it).</p>
<div class="picker"><input id="model-search" type="search" placeholder="filter models" aria-label="filter models">
<select id="models" size="10" aria-label="models"></select>
<button id="add" type="button">add to the plot</button></div>
<p id="picker-note" class="count"></p>
<div id="plot" class="plot"></div>
<label for="eps">ε = <span id="eps-label"></span></label>
<input id="eps" type="range" min="0" max="0" value="0" step="1">
<p id="picked-empty">No model picked yet: choose one above and press "add to the plot" (the address keeps the
picked models: share it).</p>
<div class="scroll"><table id="picked"><thead><tr><th>model</th><th>protocol</th><th>samples</th>
<th>robust accuracy at ε (%)</th><th></th></tr></thead><tbody></tbody></table></div>"""

ANALYSIS_BODY = """<p>AutoAttack robust accuracy (%) of every cell, grouped by each taxonomy dimension: one panel per
dimension and protocol (protocols are never pooled), a box per value and dataset. An AP with several values of
a dimension counts in each.</p>
<div id="analysis"></div>"""


@dataclass
class Downloads:
    """The streamed ``records.json`` and ``records.csv``."""

    json_file: Any
    csv_writer: Any
    first: bool = True

    def add(self, record: Record, name: str, path: str) -> None:
        self.json_file.write(("\n" if self.first else ",\n") + json.dumps(record, ensure_ascii=False, sort_keys=False))
        self.first = False
        metrics, intervals = record.get("metrics") or {}, dict(record.get("intervals") or {})
        n_samples = record.get("n_samples")
        for metric, value in metrics.items():  # a published number: its interval follows from it and n_samples
            if metric not in intervals and value is not None and n_samples:
                intervals[metric] = percent_interval(count_of_percent(value, n_samples), n_samples)
        efficiency = (record.get("check") or {}).get("efficiency") or {}
        provenance = record.get("provenance") or {}
        self.csv_writer.writerow([record.get("model_key"), record.get("ap_key"), name, record.get("dataset"),
                                  record.get("structure_kind"), record.get("architecture"), record.get("sparsity"),
                                  record.get("source"), record.get("protocol"), record.get("n_samples"),
                                  *(metrics.get(m) for m in METRICS),
                                  *(bound for m in METRICS for bound in (list(intervals.get(m) or []) + [None, None])[:2]),
                                  " ".join(f.get("code", "") for f in record.get("flags") or []),
                                  *(efficiency.get(f) for f in ("params_total", "params_nonzero", "macs_dense",
                                                                "macs_effective")),
                                  provenance.get("date"), provenance.get("git_commit"),
                                  record.get("checkpoint_sha256"), path])


def site_metrics() -> list[list[str]]:
    """[metric, row field, label] of each metric the site shows as a column (``metrics.yaml``'s views.site), in
    display order."""
    return [[metric, field, metric_label(metric, "short")] for metric, field in zip(METRICS, SITE_METRIC_FIELDS)
            if metric in metrics_in("site")]


def headline_field() -> str:
    """The row field of the headline metric (the README's first table): the column with the ± spread."""
    from evaluator.render.readme import AUTOATTACK

    return SITE_METRIC_FIELDS[METRICS.index(AUTOATTACK.metric)]


def curve_key(row: Any) -> str:
    from evaluator.registry.variants import architectures

    return f"{row.protocol}/{row.dataset}_{row.structure_kind}_{architectures()[row.architecture].code}_{row.sparsity}"


def row_values(row: Any) -> list:
    from evaluator.render.readme import AUTOATTACK
    from evaluator.render.tables import interval_spread

    total, nonzero = row.params or (None, None)
    spread = interval_spread(row.metric(AUTOATTACK.metric), row.n_samples)
    return [row.model_key, row.ap_key, row.dataset, row.structure_kind, row.architecture, row.sparsity, row.protocol,
            row.source, *row.metrics, list(row.flags), row.macs_effective, row.macs_dense, nonzero, total,
            curve_key(row) if row.curve is not None else None, row.date,
            None if spread is None else round(spread, 2)]


def ap_facts(entries: list[dict], labels: Mapping[str, Any]) -> dict[str, dict]:
    """ap_key -> name, venue, year, links and its value in each analysis dimension."""
    from evaluator.render.analysis import dimension_values, load_dimensions

    dimensions = load_dimensions()
    return {entry["ap_key"]: {"name": labels[entry["ap_key"]].name, "venue": entry.get("venue"),
                              "year": entry.get("year"), "paper": entry.get("paper_url"), "code": entry.get("code_url"),
                              "taxonomy": {d["title"]: dimension_values(entry, d) for d in dimensions}}
            for entry in entries}


def analysis_panel(dimension: str, protocol: str, cells: Mapping[tuple[str, str], list[float]]) -> dict:
    """One panel of ``data/analysis.js``: every cell's value per (taxonomy value, dataset), or, above
    ``POINTS_CAP`` cells, each box's statistics only (so the file and the drawing stay small at any scale)."""
    panel: dict[str, Any] = {"dimension": dimension, "protocol": protocol}
    if sum(map(len, cells.values())) > POINTS_CAP:
        panel["summary"] = [[value, dataset, box_statistics(numbers)] for (value, dataset), numbers in sorted(cells.items())]
    else:
        panel["values"] = [[value, dataset, numbers] for (value, dataset), numbers in sorted(cells.items())]
    return panel


def box_statistics(numbers: list[float]) -> dict[str, float]:
    """What plotly draws a box from, computed as plotly does by default: quartiles by linear interpolation,
    whiskers to the furthest value within 1.5 IQR of the box; with the count and mean."""
    import numpy as np

    values = np.sort(np.asarray(numbers, dtype=np.float64))
    q1, median, q3 = (float(np.percentile(values, q)) for q in (25, 50, 75))
    reach = 1.5 * (q3 - q1)
    inside = values[(values >= q1 - reach) & (values <= q3 + reach)]
    return {"n": int(values.size), "q1": round(q1, 4), "median": round(median, 4), "q3": round(q3, 4),
            "lowerfence": round(float(inside[0]), 4), "upperfence": round(float(inside[-1]), 4),
            "mean": round(float(values.mean()), 4)}


def write_column_curves(catalog: Catalog, column: CurveColumn, folder: Path) -> int:
    """The curve file of one column (every model's curve summary in it); returns how many curves it holds."""
    members = catalog.column_rows(column)
    key = curve_key(members[0])
    with open(folder / f"{key.replace('/', '__')}.js", "w", encoding="utf-8") as handle:
        handle.write(f"window.APB_CURVES = window.APB_CURVES || {{}};\nwindow.APB_CURVES[{json.dumps(key)}] = {{")
        handle.write(",".join(f"{json.dumps(r.model_key)}:[{','.join(map(str, r.curve.tolist()))}]"  # type: ignore[union-attr]
                              for r in members))  # (a column's rows all have a curve)
        handle.write("};\n")
    return len(members)


def write_ranks(catalog: Catalog, labels: Mapping[str, Any], handle: Any) -> int:
    """``window.APB_RANKS``: every ranked table of the leaderboard (the README's, with the same rank groups), a
    group's tables in the protocol's order, groups in the README's order; returns how many tables."""
    from evaluator.render.readme import GroupTables, RankedTable
    from evaluator.render.tables import column_title

    handle.write("window.APB_RANKS = [")
    count = 0
    for group in catalog.groups():
        tables = GroupTables(catalog, group, labels, ())
        for piece in tables.pieces:
            if not isinstance(piece, RankedTable):
                continue
            ranked = [[row.ap_key, row.rank, None if row.mean is None else round(row.mean, 2), row.covered, row.of,
                       None if row.p_above is None else float(f"{row.p_above:.3g}")] for row in piece.ranked]
            table = {"dataset": group[0], "structure": group[1], "title": piece.title.replace("`", ""),
                     "protocol": piece.protocol, "metric": piece.metric,
                     "columns": [column_title(c) for c in tables.columns if c in piece.columns], "rows": ranked}
            handle.write(("," if count else "") + "\n" + js_value(table))
            count += 1
    handle.write("\n];\n")
    return count


def threat_facts(threat: ThreatModel) -> dict[str, Any]:
    """What the compare page needs of a protocol's threat model: its eps, a name (models are compared only
    within one), the axis title, each grid budget with its label, and the ticks."""
    from evaluator.render.curves import axis_title, eps_label

    curve = threat.curve
    return {"eps": threat.eps, "threat": f"{threat.norm.name} ε = {eps_label(threat.eps)}", "axis": axis_title(threat),
            "grid": [[float(value), curve.point_label(k)] for k, value in enumerate(curve.budgets)],
            "ticks": curve.ticks()}


def build_site(root: Path, out: Path, *, source_url: str | None = None) -> dict[str, int]:
    """Write the site of the repository at *root* into *out*; returns counts of what it holds. Rows are kept
    on disk (:class:`~evaluator.render.catalog.Catalog`) and every data file is written a piece at a time, so
    memory does not grow with the number of records."""
    from tqdm import tqdm

    from evaluator.protocol import list_protocols
    from evaluator.render.threats import threat_of
    from evaluator.render.analysis import analysis_tables, grouped, load_dimensions
    from evaluator.render.catalog import Catalog, last_updated
    from evaluator.render.inputs import iter_model_records
    from evaluator.render.labels import ap_labels
    from evaluator.render.rows import row_of
    from evaluator.repository.submissions import iter_taxonomies

    root, out = Path(root), Path(out)
    settings = {p.id: p for p in list_protocols()}

    def shown(protocol: str) -> bool:
        if protocol not in settings:
            raise APBError(Problem("evaluator/protocols", f"records name protocol {protocol!r}, which has no "
                                                          f"evaluator/protocols/{protocol}.yaml", field="protocol"))
        return settings[protocol].leaderboard


    entries = list(iter_taxonomies(root))
    labels = ap_labels(entries)
    prepare_out(out)
    (out / "data" / "curves").mkdir(parents=True)
    (out / "assets").mkdir()
    with Catalog() as catalog:
        with open(out / "data" / "records.json", "w", encoding="utf-8") as json_file, \
                open(out / "data" / "records.csv", "w", encoding="utf-8", newline="") as csv_file:
            writer = csv.writer(csv_file, lineterminator="\n")
            writer.writerow(CSV_FIELDS)
            json_file.write("[")
            downloads = Downloads(json_file, writer)
            for results in tqdm(iter_model_records(root, shown), desc="records", unit=" models", disable=None):
                ap_key = results[0].key.ap_key
                if ap_key not in labels:
                    raise APBError(Problem("submissions", f"records of {ap_key} but no taxonomy.json for it; add "
                                                          f"submissions/{ap_key}/taxonomy.json", field="ap_key"))
                catalog.add(row_of(root, result, threat_of(settings[result.protocol])) for result in results)
                for result in results:
                    downloads.add(result.record, labels[ap_key].name, result.path.as_posix())
            json_file.write("\n]\n")
        curves = sum(write_column_curves(catalog, column, out / "data" / "curves")
                     for column in catalog.curve_columns())  # one column's rows at a time
        cited = ", ".join(catalog.references()) or "the original benchmark"
        updated = last_updated(catalog, cited).replace("`", "")
        protocols = {p: {"description": settings[p].description.strip(), **threat_facts(threat_of(settings[p]))}
                     for p in catalog.protocols()}
        data = {"fields": list(ROW_FIELDS), "metrics": site_metrics(), "headline": headline_field(),
                "aps": ap_facts(entries, labels), "protocols": protocols,
                "source_url": source_url, "dimensions": [d["title"] for d in load_dimensions()]}
        with open(out / "data" / "rows.js", "w", encoding="utf-8") as handle:  # the rows one at a time
            handle.write(js_data("APB", data))
            handle.write("window.APB.rows = [\n")
            for number, row in enumerate(catalog.iter_rows(curves=True)):
                handle.write((",\n" if number else "") + js_value(row_values(row)))
            handle.write("\n];\n")
        with open(out / "data" / "analysis.js", "w", encoding="utf-8") as handle:  # one panel at a time
            handle.write(f'window.APB_ANALYSIS = {{"datasets":{js_value(catalog.datasets())},"panels":[')
            number = 0
            for dimension in load_dimensions():
                for protocol, cells in sorted(grouped(catalog, entries, dimension).items()):
                    handle.write(("," if number else "") + js_value(analysis_panel(dimension["title"], protocol, cells)))
                    number += 1
            tables = [{"protocol": p, "dimension": t, "headers": h, "rows": r}
                      for p, t, h, r in analysis_tables(catalog, entries)]
            handle.write(f'],"tables":{js_value(tables)}}};\n')
        with open(out / "data" / "ranks.js", "w", encoding="utf-8") as handle:  # one group's tables at a time
            ranks = write_ranks(catalog, labels, handle)
        records = len(catalog)
    (out / "assets" / "plotly.min.js").write_bytes(plotly_js())
    for name in ("site.js", "site.css"):
        shutil.copyfile(ASSETS / name, out / "assets" / name)
    common = ["data/rows.js"]
    bodies = {"index.html": (INDEX_BODY, [*common, "data/ranks.js", "assets/site.js"]),
              "compare.html": (COMPARE_BODY, [*common, "assets/plotly.min.js", "assets/site.js"]),
              "analysis.html": (ANALYSIS_BODY, ["data/analysis.js", "assets/plotly.min.js", "assets/site.js"])}
    for name, (body, scripts) in bodies.items():
        (out / name).write_text(page(PAGES[name], name, body, scripts, updated, source_url), encoding="utf-8")
    return {"records": records, "curves": curves, "aps": len(entries), "ranked_tables": ranks}

"""``leaderboard/models/<ap_key>/<model_key>.md``: one page per evaluated model. First what a reader came for: the
metrics with 95% intervals and counts, efficiency, flags and the model's security curve; then, folded in
``<details>``, the compliance and sparsity check and the provenance (date, evaluator version and commit,
package versions, device, wall times); and the published record beside it, if there is one."""
from __future__ import annotations

import json
import json.encoder
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping, Sequence

from evaluator.record.records import COUNT_FIELDS  # metric -> its field in ``counts``
from evaluator.record.records import METRICS, metric_label
from evaluator.record.types import Record
from evaluator.render.inputs import EVALUATED, Result
from evaluator.registry.model_keys import STRUCTURE_KIND_TITLES
from evaluator.render.layout import (LEADERBOARD_README, group_of, group_title, model_curve_file,
                                     model_page, relative_link)
from evaluator.untrusted.markdown_text import bidi_as_json_escapes, code_span
from evaluator.render.markdown import GENERATED_NOTE, github_anchor, inline, simple_table
from evaluator.render.rows import Row
from evaluator.render.svg import si_label
from evaluator.render.tables import FLAG, ApLabel, column_title, percent



def protocol_heading(protocol: str) -> str:
    return f"Evaluated: {protocol}"


def protocol_anchor(protocol: str) -> str:
    """The anchor of a protocol's section on a model page."""
    return github_anchor(protocol_heading(protocol))


def metrics_table(record: Record) -> str:
    """Metric, accuracy, 95% Wilson interval and count of one record (intervals and counts where present)."""
    metrics, intervals, counts = record.get("metrics") or {}, record.get("intervals") or {}, record.get("counts") or {}
    rows = []
    for metric in METRICS:
        interval = intervals.get(metric)
        count = counts.get(COUNT_FIELDS[metric])
        rows.append([metric_label(metric, "title"), percent(metrics.get(metric)),
                     f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "-",
                     f"{count} / {record.get('n_samples')}" if count is not None else "-"])
    return simple_table(["metric", "accuracy (%)", "95% interval (%)", "samples"], rows)


def efficiency_line(figures: dict | None) -> str:
    """Parameters and MACs per input in one sentence (or why there are none)."""
    if not figures:
        return "Efficiency: not measured (the record predates efficiency figures in `apb check`)."
    dense, effective = figures["macs_dense"], figures.get("macs_effective", figures["macs_dense"])
    rule = {"US": "non-zero weights", "S": "all-zero filters and channels removed"}.get(
        figures.get("structure_kind", ""), "")
    share = f"{100.0 * effective / dense:.1f}% of {si_label(dense)} dense" if dense else "dense 0"
    return (f"Efficiency: {si_label(figures['params_nonzero'])} of {si_label(figures['params_total'])} parameters "
            f"non-zero; {si_label(effective)} effective multiply-accumulates per input ({share}"
            + (f"; {rule}" if rule else "") + ").")


def attack_agreement(row: Row) -> list[str]:
    """Where AutoAttack and HO-FMN agree at the protocol's ε, sample by sample (a 2 x 2 table of counts), and the
    samples they disagree on: a measured check of either attack's misses. Empty without per-sample flags."""
    if row.agreement is None or row.distance_counts is None:
        return []
    (both, aa_only, hofmn_only), n = row.agreement, row.distance_counts[0]
    neither = n - both - aa_only - hofmn_only
    disagree = aa_only + hofmn_only
    table = simple_table(["samples", "HO-FMN: robust", "HO-FMN: broken"],
                         [["AutoAttack: robust", str(both), str(aa_only)],
                          ["AutoAttack: broken", str(hofmn_only), str(neither)]], ["left", "right", "right"])
    return ["", "**Attack agreement** at the protocol's ε (broken: an adversarial example found, or "
                "misclassified clean):", "", table, "",
            f"The attacks disagree on {disagree} of {n} samples ({100.0 * disagree / n:.2f}%): HO-FMN found an "
            f"adversarial example AutoAttack missed on {aa_only}, AutoAttack one HO-FMN missed on {hofmn_only}. "
            "The worst case counts a sample robust only where both failed."]


def distance_summary(row: Row) -> str:
    """How many HO-FMN distances are 0 (misclassified clean) and inf (no adversarial found)."""
    if row.distance_counts is None:
        return ""
    n, zero, unbroken = row.distance_counts
    text = (f"HO-FMN distances: {n} samples, {zero} misclassified clean (distance 0), {unbroken} with no "
            "adversarial found (distance inf, counted robust at every ε)")
    return text + ("; see the flags." if unbroken else ".")


def _evaluated_section(page: PurePosixPath, result: Result, row: Row, description: str) -> list[str]:
    record = result.record
    flags = record.get("flags") or []
    lines = ["", f"## {protocol_heading(result.protocol)}", "", metrics_table(record), "",
             efficiency_line((record.get("check") or {}).get("efficiency")), ""]
    lines += [f"- {FLAG} {code_span(flag.get('code'))}: {inline(flag.get('message'))}" for flag in flags] or \
        ["Flags: none."]
    lines += attack_agreement(row)
    if row.curve is not None:
        lines += ["", f"![security curve of {result.model_key} under {result.protocol}]"
                      f"({relative_link(page, model_curve_file(result.model_key, result.protocol))})"]
    sidecar = record.get("per_sample")
    about = [f"- protocol: `{result.protocol}`" + (f": {description}" if description else ""),
             f"- samples: {record.get('n_samples')}",
             f"- checkpoint sha256: {code_span(record.get('checkpoint_sha256'))}", f"- record: `{result.path.as_posix()}`"]
    if sidecar:
        about.append(f"- per-sample results: {code_span(sidecar.get('file'))} (sha256 {code_span(sidecar.get('sha256'))}); "
                     + distance_summary(row))
    lines += ["", *about]
    lines += ["", "<details><summary>Check (compliance, sparsity, outputs, efficiency)</summary>", ""]
    lines.append(json_block(record["check"]) if record.get("check") else "No check summary in the record.")
    lines += ["", "</details>", "", "<details><summary>Provenance</summary>", ""]
    lines.append(json_block(record["provenance"]) if record.get("provenance") else "No provenance in the record.")
    lines += ["", "</details>"]
    return lines


def json_block(value: object) -> str:
    """A JSON value as the record holds it, in a fenced block (any fence inside is broken by an escape)."""
    text = bidi_as_json_escapes(indented_json(value)).replace("```", "\\u0060``")
    return f"```json\n{text}\n```"


def indented_json(value: object, indent: str = "") -> str:
    """``json.dumps(value, indent=2, ensure_ascii=False)``, byte for byte, with every scalar written as json's C
    encoder writes it (``indent`` makes json fall back to its pure-Python encoder for the whole value, which
    costs a model page more than the rest of its rendering)."""
    inner = indent + "  "
    if isinstance(value, dict) and value and not all(isinstance(key, str) for key in value):
        return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)  # json's key rules
    if isinstance(value, dict) and value:
        items = [f"{inner}{_STRING(key)}: {_leaf_or_nested(item, inner)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, (list, tuple)) and value:
        return "[\n" + ",\n".join([f"{inner}{_leaf_or_nested(item, inner)}" for item in value]) + f"\n{indent}]"
    return _SCALAR(value)


def _leaf_or_nested(value: object, indent: str) -> str:
    encode = _LEAVES.get(type(value))
    return encode(value) if encode is not None else indented_json(value, indent)


def _float_text(value: float) -> str:
    """A float as json writes it (``repr``; ``NaN``, ``Infinity``, ``-Infinity`` where not finite)."""
    if value != value:
        return "NaN"
    if value in (_INFINITY, -_INFINITY):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


_INFINITY = float("inf")
_SCALAR = json.JSONEncoder(ensure_ascii=False).encode  # any other value: empty containers, subclasses
_STRING = json.encoder.encode_basestring  # the C encoder's, where there is one (ensure_ascii=False)
# the exact types json encodes without recursion, each by json's own rule (one encoder per value costs more)
_LEAVES: dict[type, Callable[[Any], str]] = {str: _STRING, int: int.__repr__, float: _float_text,
                                             bool: lambda flag: "true" if flag else "false",
                                             type(None): lambda _: "null"}


def _published_section(result: Result) -> list[str]:
    record = result.record
    reference = (record.get("provenance") or {}).get("reference")
    metrics = record.get("metrics") or {}
    return ["", f"## Published: {result.protocol}", "",
            f"Clean accuracy {percent(metrics.get('clean_accuracy'))}%, AutoAttack robust accuracy "
            f"{percent(metrics.get('aa_robust_accuracy'))}% on {record.get('n_samples')} samples"
            + (f", as reported in {inline(reference)}" if reference else "") + f" (record `{result.path.as_posix()}`)."]


def render_model_page(results: Sequence[Result], rows: Sequence[Row], labels: Mapping[str, ApLabel],
                      descriptions: Mapping[str, str]) -> str:
    """The page of one model (*results*: its records, *rows*: their rows, in the same order; at least one
    evaluated); *descriptions*: protocol id -> text."""
    key = results[0].key
    model_key = results[0].model_key
    page = model_page(model_key)
    label = labels[key.ap_key]
    group = group_of(key)
    paper = f" · {label.paper_markdown()}" + (f" ({label.year})" if label.year else "")
    header = (f"{label.markdown(page)}{paper} · {column_title((key.architecture, key.sparsity))} sparsity · "
              f"{key.dataset} · {STRUCTURE_KIND_TITLES.get(key.structure_kind, key.structure_kind)} · "
              f"[leaderboard]({relative_link(page, LEADERBOARD_README, github_anchor(group_title(group)))})")
    lines = [f"# {model_key}", "", GENERATED_NOTE, "", header]
    for result, row in zip(results, rows):
        if result.record["source"] == EVALUATED:
            lines += _evaluated_section(page, result, row, descriptions.get(result.protocol, ""))
    for result in results:
        if result.record["source"] != EVALUATED:
            lines += _published_section(result)
    return "\n".join(lines) + "\n"

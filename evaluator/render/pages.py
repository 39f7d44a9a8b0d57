"""``leaderboard/models/<model_key>.md``: one page per evaluated model with everything behind its cells —
metrics with 95% intervals and counts, protocol, samples, checkpoint sha256, provenance (date, evaluator
version and commit, package versions, device, wall times), flags, the compliance and sparsity check, the
per-sample sidecar, its security curve and, when there is one, the published record beside it."""
from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Iterator, Mapping

import numpy as np
import pandas as pd

from evaluator.records import COUNT_FIELDS  # metric -> its field in ``counts``
from evaluator.records import METRICS
from evaluator.render.inputs import Result, Results
from evaluator.render.layout import (LEADERBOARD_README, STRUCTURE_KIND_TITLES, curve_file, group_of,
                                     group_title, model_page, relative_link)
from evaluator.render.markdown import GENERATED_NOTE, github_anchor, pipe_table
from evaluator.render.readme import protocol_heading
from evaluator.render.tables import ApLabel, column_title, percent

METRIC_TITLES = {"clean_accuracy": "clean", "aa_robust_accuracy": "AutoAttack",
                 "hofmn_robust_accuracy": "HO-FMN", "worst_case_robust_accuracy": "worst case (AA and HO-FMN)"}


def _is_table(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and not any(isinstance(item, (dict, list)) for item in value):
        return ", ".join(_text(item) for item in value)
    return json.dumps(value, ensure_ascii=False)


def flatten(value: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    """``(dotted.field, value)`` pairs of a JSON value in the record's own order; a list of mappings (such as
    per-layer sparsity) stays whole, to be shown as a table of its own."""
    if isinstance(value, dict) and value:
        for name, item in value.items():
            yield from flatten(item, f"{prefix}.{name}" if prefix else str(name))
    elif isinstance(value, list) and any(isinstance(item, list) for item in value):
        for i, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def field_table(value: object) -> str:
    """A ``field | value`` table of a JSON value; each list of mappings follows as a collapsed table."""
    pairs = list(flatten(value))
    scalars = [(name, _text(item)) for name, item in pairs if not _is_table(item)]
    parts = [pipe_table(pd.DataFrame(scalars, columns=["field", "value"]), ["left", "left"])] if scalars else []
    for name, rows in pairs:
        if _is_table(rows):
            columns = list(dict.fromkeys(key for row in rows for key in row))
            frame = pd.DataFrame([[_text(row.get(c)) for c in columns] for row in rows], columns=columns)
            parts.append(f"<details><summary>{name} ({len(rows)} {'row' if len(rows) == 1 else 'rows'})</summary>\n\n"
                         f"{pipe_table(frame, ['left'] * len(columns))}\n\n</details>")
    return "\n\n".join(parts)


def metrics_table(record: dict) -> str:
    """Metric, accuracy, 95% Wilson interval and count of one record (intervals and counts where present)."""
    metrics, intervals, counts = record.get("metrics") or {}, record.get("intervals") or {}, record.get("counts") or {}
    rows = []
    for metric in METRICS:
        interval = intervals.get(metric)
        count = counts.get(COUNT_FIELDS[metric])
        rows.append({"metric": METRIC_TITLES[metric], "accuracy (%)": percent(metrics.get(metric)),
                     "95% interval (%)": f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "-",
                     "samples": f"{count} / {record.get('n_samples')}" if count is not None else "-"})
    return pipe_table(pd.DataFrame(rows), ["left", "right", "right", "right"])


def distance_summary(distances: np.ndarray) -> str:
    """How many HO-FMN distances are 0 (misclassified clean) and inf (no adversarial found)."""
    unbroken = int(np.isinf(distances).sum())
    text = (f"HO-FMN distances: {distances.size} samples, {int((distances == 0).sum())} misclassified clean "
            f"(distance 0), {unbroken} with no adversarial found (distance inf, counted robust at every ε)")
    if unbroken:
        text += "; see the flags"
    return text + "."


def _evaluated_section(page: PurePosixPath, result: Result, results: Results, curves: set,
                       description: str) -> list[str]:
    record = result.record
    lines = ["", f"## {protocol_heading(result.protocol)}", "", metrics_table(record), "",
             f"- protocol: `{result.protocol}`" + (f": {description}" if description else ""),
             f"- samples: {record.get('n_samples')}",
             f"- checkpoint sha256: `{record.get('checkpoint_sha256')}`", f"- record: `{result.path.as_posix()}`"]
    sidecar = record.get("per_sample")
    if sidecar:
        lines.append(f"- per-sample results: `{sidecar.get('file')}` (sha256 `{sidecar.get('sha256')}`)")
        per_sample = results.per_sample(result)
        lines.append(f"- {distance_summary(per_sample.hofmn_distance)}")
    flags = record.get("flags") or []
    lines += ["", "### Flags", ""]
    lines += [f"- `{flag.get('code')}`: {flag.get('message')}" for flag in flags] or ["None."]
    lines += ["", "### Check (compliance and sparsity)", ""]
    lines.append(field_table(record["check"]) if record.get("check") else "No check summary in the record.")
    lines += ["", "### Provenance", ""]
    lines.append(field_table(record["provenance"]) if record.get("provenance") else "No provenance in the record.")
    curve = curve_file(result.protocol, group_of(result.key), result.key.architecture, result.key.sparsity)
    if curve in curves:
        lines += ["", "### Security curve", "",
                  f"![security curve of {column_title((result.key.architecture, result.key.sparsity))}, "
                  f"{group_title(group_of(result.key))}]({relative_link(page, curve)})"]
    return lines


def _published_section(result: Result) -> list[str]:
    record = result.record
    reference = (record.get("provenance") or {}).get("reference")
    return ["", f"## Published: {result.protocol}", "",
            f"Clean accuracy {percent(result.metric('clean_accuracy'))}%, AutoAttack robust accuracy "
            f"{percent(result.metric('aa_robust_accuracy'))}% on {record.get('n_samples')} samples"
            + (f", as reported in {reference}" if reference else "") + f" (record `{result.path.as_posix()}`)."]


def render_model_page(model_key: str, results: Results, labels: Mapping[str, ApLabel], curves: set,
                      descriptions: Mapping[str, str]) -> str:
    """The page of one model that has at least one evaluated record (*descriptions*: protocol id -> text)."""
    page = model_page(model_key)
    evaluated = [by_key[model_key] for _, by_key in sorted(results.evaluated.items()) if model_key in by_key]
    key = evaluated[0].key
    label = labels[key.ap_key]
    group = group_of(key)
    header = (f"{label.markdown(page)} · {column_title((key.architecture, key.sparsity))} sparsity · "
              f"{key.dataset} · "
              f"{STRUCTURE_KIND_TITLES.get(key.structure_kind, key.structure_kind)} · "
              f"[leaderboard]({relative_link(page, LEADERBOARD_README, github_anchor(group_title(group)))})")
    lines = [f"# {model_key}", "", GENERATED_NOTE, "", header]
    for result in evaluated:
        lines += _evaluated_section(page, result, results, curves, descriptions.get(result.protocol, ""))
    if model_key in results.published:
        lines += _published_section(results.published[model_key])
    return "\n".join(lines) + "\n"


def pages_to_render(results: Results) -> list[str]:
    """Model keys with at least one evaluated record, sorted."""
    return sorted({key for by_key in results.evaluated.values() for key in by_key})

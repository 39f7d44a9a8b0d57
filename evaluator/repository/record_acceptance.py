"""The one acceptance rule for a record (:func:`check_record_data`), wherever a record enters: ``apb validate``,
``apb ci collect`` / ``ingest`` / ``report`` and the renderer. The schema and single-file rules
(:func:`record_problems`), a known protocol, and the per-sample sidecar the numbers come from. Record files and
sidecars under submissions/ are read by :func:`read_record_file` and :func:`read_sidecar_file`, by ``apb
validate`` and the renderer alike: no links, no file over the size cap, strict JSON."""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evaluator.errors import APBError, Problem
from evaluator.record.records import (COUNT_FIELDS, LINK_REFUSED, METRIC_TABLE, METRICS, WORST_CASE_PARTS, PerSample,
                                      count_results, load_sidecar, protocol_samples, record_stem, sidecar_member_bound)
from evaluator.registry.model_keys import parse_model_key
from evaluator.registry.norms import ThreatModel
from evaluator.repository.manifest import sparsities_by_kind
from evaluator.repository.schema import load_schema, schema_problems
from evaluator.untrusted.npz_reader import read_npz
from evaluator.untrusted.safeio import LineMap, format_field, parse_json_text, read_limited_bytes

_PROTOCOL_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}\Z")


def read_record_file(path: Path, name: str) -> tuple[Any, LineMap]:
    """A record file's data and lines as ``apb validate`` reads them: not a link, at most ``MAX_BYTES``, strict
    JSON (no duplicate keys, no NaN); an ``APBError`` naming *name* (the path shown) otherwise."""
    if path.is_symlink():
        raise APBError(Problem(name, LINK_REFUSED))
    try:
        return parse_json_text(read_limited_bytes(path), name)
    except APBError as error:
        raise APBError([Problem(name, p.message, p.line, p.field) for p in error.problems]) from None


def read_sidecar_file(path: Path) -> bytes | APBError | None:
    """The bytes of a sidecar under submissions/ (None if there is none; a link or an oversized file is an
    error the acceptance rule reports)."""
    if path.is_symlink():
        return APBError(Problem(str(path), "is a symbolic link"))
    if not path.is_file():
        return None
    try:
        return read_limited_bytes(path)
    except APBError as error:
        return error


def record_problems(data: Any, lines: LineMap, file: str) -> list[Problem]:
    """The schema and single-file rules of one record: its key agrees with its fields, its numbers agree."""
    problems = schema_problems(data, load_schema("record"), lines, file)
    if problems or not isinstance(data, dict):
        return problems

    def problem(path: tuple, message: str) -> None:
        problems.append(Problem(file, message, lines.line(path), format_field(path)))

    parsed = parse_model_key(data["model_key"])
    for name, expected in (("ap_key", parsed.ap_key), ("architecture", parsed.architecture),
                           ("dataset", parsed.dataset), ("structure_kind", parsed.structure_kind),
                           ("sparsity", parsed.sparsity)):
        if data[name] != expected:
            problem((name,), f"is {data[name]!r} but the model key {data['model_key']} says {expected!r}")
    allowed = sparsities_by_kind().get(data["structure_kind"], ())
    if data["sparsity"] not in allowed:
        problem(("sparsity",), f"{data['structure_kind']} models use sparsity {', '.join(map(str, allowed))}")
    metrics = data["metrics"]
    for robust in METRICS[1:]:  # a metric of an attack added after the record was written may be absent
        if None not in (metrics[METRICS[0]], metrics.get(robust)) and metrics[robust] > metrics[METRICS[0]]:
            problem(("metrics", robust), "robust accuracy cannot exceed clean accuracy")
    if data["counts"] is not None:
        problems.extend(_count_problems(data, lines, file))
    return problems


def _count_problems(data: dict, lines: LineMap, file: str) -> list[Problem]:
    """Counts within n_samples, nested as attacks imply, and metrics/intervals equal to what they give."""
    problems: list[Problem] = []
    n, counts, metrics = data["n_samples"], data["counts"], data["metrics"]
    intervals = data.get("intervals") or {}

    def problem(path: tuple, message: str) -> None:
        problems.append(Problem(file, message, lines.line(path), format_field(path)))

    for name, value in counts.items():
        if value > n:
            problem(("counts", name), f"{value} is more than n_samples ({n})")
    # The schema requires every metric but those of attacks added after the first records (optional arrays).
    measured = [metric for metric in METRICS if COUNT_FIELDS[metric] in counts]
    for metric in METRICS:
        if (metric in metrics) != (COUNT_FIELDS[metric] in counts):
            problem(("metrics", metric) if metric in metrics else ("counts", COUNT_FIELDS[metric]),
                    f"metrics.{metric} and counts.{COUNT_FIELDS[metric]} are written together or not at all")
    clean = COUNT_FIELDS[METRICS[0]]
    parts = [COUNT_FIELDS[metric] for metric in WORST_CASE_PARTS if metric in measured]
    for metric in measured[1:]:  # metrics.yaml: the first metric is clean accuracy, the others robust accuracies
        if counts[COUNT_FIELDS[metric]] > counts[clean]:
            problem(("counts", COUNT_FIELDS[metric]), f"cannot exceed {clean}")
        if METRIC_TABLE[metric].rule == "worst_case" and counts[COUNT_FIELDS[metric]] > min(counts[p] for p in parts):
            problem(("counts", COUNT_FIELDS[metric]), f"cannot exceed {' or '.join(parts)}")
    for metric in measured:
        count_name = COUNT_FIELDS[metric]
        expected = round(100.0 * counts[count_name] / n, 4)
        if metrics.get(metric) is not None and abs(metrics[metric] - expected) > 1e-9:
            problem(("metrics", metric), f"is {metrics[metric]} but counts.{count_name}/n_samples gives {expected}; "
                                         "records are written by apb, do not edit their numbers")
        interval = intervals.get(metric)
        if interval is not None and metrics.get(metric) is not None and \
                not interval[0] - 1e-9 <= metrics[metric] <= interval[1] + 1e-9:
            problem(("intervals", metric), f"{interval} does not contain the metric {metrics[metric]}")
    return problems


@dataclass(frozen=True)
class RecordCheck:
    """What the acceptance rule found: the problems, the protocol the record names (when it is known) and the
    per-sample results of an evaluated record (when its sidecar passed)."""

    problems: list[Problem]
    well_formed: bool = True  # the record passed its schema and single-file rules (its fields can be read)
    protocol: Any = None
    per_sample: PerSample | None = None
    distances: Any = None  # a published record's imported HO-FMN distances (float32 array), when they passed


@functools.lru_cache(maxsize=None)
def _protocol_or_reason(protocol_id: str) -> tuple[Any, str]:
    """(the shipped protocol, "") or (None, why there is none)."""
    from evaluator.protocol import load_protocol

    if not _PROTOCOL_ID.match(protocol_id):
        return None, "not a protocol id"
    try:
        return load_protocol(protocol_id), ""
    except APBError as error:
        return None, error.problems[0].message


def check_record_data(data: Any, file: str, *, read_sidecar: Callable[[str], bytes | None],
                      lines: LineMap | None = None) -> RecordCheck:
    """The one acceptance rule for a record, wherever it enters (``apb validate``, ``apb ci collect`` / ``ingest``
    / ``report``, the renderer): the record schema; its key agrees with its fields; robust <= clean; metrics =
    counts / n_samples and inside their intervals; a known protocol whose ``n_samples`` it has; for an evaluated
    record, the sidecar ``<model_key>__<protocol>.npz`` with the recorded sha256, ``n_samples`` samples and
    per-sample arrays that sum to the counts. *read_sidecar* gives the bytes of a sidecar file name next to the
    record (None if there is none; each caller applies its own reading rules: links, size caps)."""
    lines = lines or LineMap({})
    problems = record_problems(data, lines, file)
    if problems or not isinstance(data, dict):
        return RecordCheck(problems, well_formed=False)

    def problem(path: tuple, message: str) -> None:
        problems.append(Problem(file, message, lines.line(path), format_field(path)))

    spec, reason = _protocol_or_reason(data["protocol"])
    if spec is None:
        problem(("protocol",), f"unknown protocol {data['protocol']!r} ({reason})")
        return RecordCheck(problems)
    if spec.evaluable and spec.n_samples != data["n_samples"]:
        problem(("n_samples",), f"n_samples is {data['n_samples']} but protocol {spec.id} evaluates {spec.n_samples}")
    if data["source"] != "evaluated":
        distances = _checked_distances(data, read_sidecar, problem) if data["per_sample"] else None
        return RecordCheck(problems, protocol=spec, distances=distances if not problems else None)
    if not spec.evaluable:
        problem(("protocol",), f"protocol {spec.id} is not evaluable: an evaluated record needs one that is")
        return RecordCheck(problems, protocol=spec)
    per_sample = _checked_sidecar(data, read_sidecar, problem)
    if per_sample is not None:
        _sidecar_count_problems(data, per_sample, spec.threat_model, problem)
    return RecordCheck(problems, protocol=spec, per_sample=per_sample if not problems else None)


def _sidecar_bytes(data: dict, read_sidecar: Callable[[str], bytes | None],
                   problem: Callable[[tuple, str], None]) -> tuple[str, bytes] | None:
    """(file name, bytes) of the sidecar a record names, after checking its name; None after reporting why not."""
    expected = f"{record_stem(data['model_key'], data['protocol'])}.npz"
    if data["per_sample"]["file"] != expected:
        problem(("per_sample", "file"), f"per_sample.file must be {expected}")
        return None
    try:
        raw = read_sidecar(expected)
    except APBError as error:
        problem(("per_sample", "file"), f"the per-sample sidecar {expected} is refused: {error.problems[0].message}")
        return None
    if raw is None:
        problem(("per_sample", "file"), f"the per-sample sidecar {expected} is missing; commit it beside the record")
        return None
    return expected, raw


def _checked_sidecar(data: dict, read_sidecar: Callable[[str], bytes | None],
                     problem: Callable[[tuple, str], None]) -> PerSample | None:
    import numpy as np

    found = _sidecar_bytes(data, read_sidecar, problem)
    if found is None:
        return None
    expected, raw = found
    entry = data["per_sample"]
    try:
        per_sample = load_sidecar(raw, entry["sha256"], expected, data["n_samples"])
    except APBError as error:
        inner = error.problems[0]
        problem(tuple((inner.field or "per_sample.sha256").split(".")), f"{expected}: {inner.message}")
        return None
    if len(per_sample) != data["n_samples"]:
        problem(("n_samples",), f"is {data['n_samples']} but the sidecar {expected} holds {len(per_sample)} samples")
        return None
    if not np.array_equal(per_sample.sample_index, protocol_samples(len(per_sample))):
        problem(("per_sample", "file"), f"{expected} holds other samples than the protocol's: its sample_index must "
                                        f"be 0, 1, ..., {len(per_sample) - 1} in order (the first n_samples test "
                                        "samples); evaluate the model again with apb evaluate")
        return None
    return per_sample


def _checked_distances(data: dict, read_sidecar: Callable[[str], bytes | None],
                       problem: Callable[[tuple, str], None]) -> Any:
    """The distances of a published record's imported sidecar (``apb import-distances``): the expected name,
    the recorded sha256, ``sample_index`` equal to its ``sample_range`` and distances >= 0 (inf allowed)."""
    import numpy as np

    found = _sidecar_bytes(data, read_sidecar, problem)
    if found is None:
        return None
    expected, raw = found
    entry = data["per_sample"]
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        problem(("per_sample", "sha256"), f"the sha256 of {expected} differs from per_sample.sha256; the sidecar "
                                          "was changed")
        return None
    try:
        first, stop = entry["sample_range"]
        arrays = read_npz(raw, ("sample_index", "hofmn_distance"), max_member_bytes=sidecar_member_bound(stop - first))
        index, distances = arrays["sample_index"], arrays["hofmn_distance"].astype(np.float32)
    except (ValueError, KeyError, OSError, EOFError) as error:
        problem(("per_sample", "file"), f"{expected} is not a distance sidecar ({error})")
        return None
    first, stop = entry["sample_range"]
    if index.shape != distances.shape or not np.array_equal(index, np.arange(first, stop)):
        problem(("per_sample", "sample_range"), f"{expected} holds samples other than [{first}, {stop})")
        return None
    if np.isnan(distances).any() or (distances < 0).any():
        problem(("per_sample", "file"), f"{expected} holds NaN or negative distances")
        return None
    return distances


def _sidecar_count_problems(data: dict, per_sample: PerSample, threat: ThreatModel,
                            problem: Callable[[tuple, str], None]) -> None:
    """The counts must be the sums of the per-sample arrays (the record's numbers come from its sidecar)."""
    for name, total in count_results(per_sample, threat).items():
        if data["counts"][name] != total:
            problem(("counts", name), f"is {data['counts'][name]} but the sidecar's per-sample results give {total}; "
                                      "records are written by apb, do not edit their numbers")

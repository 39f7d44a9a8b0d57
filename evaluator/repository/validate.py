"""``apb validate``: every schema of the repository plus the rules no schema can express.

Each problem names the file, line and field and says what to do. Nothing is written. Rules beyond the schemas:
submissions/ holds only AP directories (no symbolic links, no unexpected or oversized files); a directory's
name is its ``ap_key``, in its taxonomy entry, manifest and records; a manifest needs a taxonomy entry, at
least one complete (architecture, dataset, structure) triple with its three sparsities and structures its
taxonomy allows; URLs are https://, gdrive:// or hf:// (file:// only with ``--allow-file-urls``); no two
entries share a model key; a record's file name, fields and directory agree, its protocol is a leaderboard
protocol, an evaluated record matches a manifest entry (and its checkpoint's sha256). Whether a record itself
is acceptable (schema, numbers, protocol size, sidecar) is ``check_record_data``: the one rule every reader of
records applies, here and in ``apb ci`` and the renderer.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evaluator.errors import APBError, Problem
from evaluator.registry.model_keys import is_ap_key, parse_model_key
from evaluator.repository.manifest import ModelEntry, manifest_entries, sparsities_by_kind, sparsities_for
from evaluator.untrusted.npz_reader import read_npz
from evaluator.record.records import (COUNT_FIELDS, METRICS, PerSample, count_results, load_sidecar, protocol_samples,
                               record_stem, sha256_hex, sidecar_member_bound)
from evaluator.untrusted.safeio import MAX_BYTES, LineMap, format_field, parse_json_text, parse_yaml_text, read_limited_bytes
from evaluator.repository.schema import load_schema, schema_problems, schema_validator, short_repr, unique_problems
from evaluator.paths import MANIFEST, RECORDS, SUBMISSIONS, TAXONOMY

AP_DIR_ENTRIES = {TAXONOMY: "file", MANIFEST: "file", RECORDS: "dir"}
SUBMISSIONS_TOP_FILES = {"README.md"}
_PROTOCOL_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}\Z")
_RECORD_NAME = re.compile(r"^(?P<key>[A-Za-z0-9_]+)__(?P<protocol>[a-z0-9][a-z0-9.-]*)\.(?P<ext>json|npz)\Z")


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
    for robust in METRICS[1:]:
        if None not in (metrics["clean_accuracy"], metrics[robust]) and metrics[robust] > metrics["clean_accuracy"]:
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
    for robust in ("aa_robust", "hofmn_robust", "worst_case_robust"):
        if counts[robust] > counts["clean_correct"]:
            problem(("counts", robust), "cannot exceed clean_correct")
    if counts["worst_case_robust"] > min(counts["aa_robust"], counts["hofmn_robust"]):
        problem(("counts", "worst_case_robust"), "cannot exceed aa_robust or hofmn_robust")
    for metric, count_name in COUNT_FIELDS.items():
        expected = round(100.0 * counts[count_name] / n, 4)
        if metrics[metric] is not None and abs(metrics[metric] - expected) > 1e-9:
            problem(("metrics", metric), f"is {metrics[metric]} but counts.{count_name}/n_samples gives {expected}; "
                                         "records are written by apb, do not edit their numbers")
        interval = intervals.get(metric)
        if interval is not None and metrics[metric] is not None and \
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
        _sidecar_count_problems(data, per_sample, spec.eps, problem)
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


def _sidecar_count_problems(data: dict, per_sample: PerSample, eps: float,
                            problem: Callable[[tuple, str], None]) -> None:
    """The counts must be the sums of the per-sample arrays (the record's numbers come from its sidecar)."""
    for name, total in count_results(per_sample, eps).items():
        if data["counts"][name] != total:
            problem(("counts", name), f"is {data['counts'][name]} but the sidecar's per-sample results give {total}; "
                                      "records are written by apb, do not edit their numbers")


def taxonomy_problems(data: Any, lines: LineMap, file: str, schema: dict) -> list[Problem]:
    """The schema (vocabulary filled in) of one taxonomy entry."""
    return schema_problems(data, schema, lines, file)


# ------------------------------------------------------------------------------------------- the repository


@dataclass
class Report:
    """The outcome of validating a repository."""

    problems: list[Problem] = field(default_factory=list)
    aps: int = 0
    manifests: int = 0
    checkpoints: int = 0
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, int]:
        return {"aps": self.aps, "manifests": self.manifests, "checkpoints": self.checkpoints, "records": self.records}

    def summary_line(self, problems: int | None = None) -> str:
        """``26 APs, 10 manifests, 83 checkpoints, 154 records: OK`` (or the number of problems)."""
        count = len(self.problems) if problems is None else problems
        return (f"{self.aps} APs, {self.manifests} manifests, {self.checkpoints} checkpoints, {self.records} records: "
                + ("OK" if count == 0 else f"{count} problem(s)"))


_RECORD_CHECKS: dict[tuple[str, bytes, str | None], RecordCheck] = {}  # (file, sha256 of record, of sidecar)


def _read_sidecar_file(path: Path) -> bytes | APBError | None:
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


class _Repository:
    """One validation run over a repository root; collects problems with file names relative to the root."""

    def __init__(self, root: Path, allow_file_urls: bool) -> None:
        self.root = root
        self.prefix = str(root).rstrip("/") + "/"
        self.allow_file_urls = allow_file_urls
        self.report = Report()
        self.vocabulary: dict | None = None
        self.taxonomy_schema: dict | None = None
        self.taxonomies: dict[str, dict] = {}  # ap_key (directory) -> entry
        self.taxonomy_lines: dict[str, LineMap] = {}
        self.entries_by_key: dict[str, list[tuple[str, Any]]] = defaultdict(list)  # model key -> [(file, entry)]
        self.entries_by_dir: dict[str, dict[str, Any]] = {}  # ap dir -> model key -> entry
        self.raw = b""  # the bytes of the file parse() read last

    # -- helpers
    def rel(self, path: Path) -> str:
        text = str(path)
        if text.startswith(self.prefix):  # what relative_to gives for a path built under the root
            return text[len(self.prefix):]
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def add(self, file: str, message: str, line: int | None = None, field_name: str | None = None) -> None:
        self.report.problems.append(Problem(file, message, line, field_name))

    def parse(self, path: Path, parser: Callable[[bytes, str], tuple[Any, LineMap]]) -> tuple[Any, LineMap] | None:
        name = self.rel(path)
        try:
            self.raw = read_limited_bytes(path)
            return parser(self.raw, name)
        except APBError as error:
            self.report.problems.extend(Problem(name, p.message, p.line, p.field) for p in error.problems)
            return None

    # -- the run
    def run(self) -> Report:
        self.check_taxonomy_dir()
        base = self.root / SUBMISSIONS
        if not base.is_dir() or base.is_symlink():
            self.add(SUBMISSIONS, "no submissions/ directory; run apb validate in the benchmark repository or "
                                  "pass --root")
            return self.finish()
        directories = self.scan_top(base)
        for directory in directories:
            self.check_ap_dir(directory)
        self.check_across_aps()
        return self.finish()

    def finish(self) -> Report:
        self.report.problems = sorted(unique_problems(self.report.problems),
                                      key=lambda p: (p.file, p.line or 0, p.field or "", p.message))
        return self.report

    def check_taxonomy_dir(self) -> None:
        from evaluator.repository.taxonomy import SCHEMA_FILE, VOCABULARY_FILE, fill_vocabulary, vocabulary_problems

        parsed = self.parse(self.root / VOCABULARY_FILE, parse_yaml_text) \
            if (self.root / VOCABULARY_FILE).is_file() else None
        if parsed is None:
            if not (self.root / VOCABULARY_FILE).is_file():
                self.add(VOCABULARY_FILE.as_posix(), "missing: the taxonomy vocabulary is needed to check taxonomy "
                                                     "entries")
            return
        data, lines = parsed
        problems = vocabulary_problems(data, lines, VOCABULARY_FILE.as_posix())
        if problems:
            self.report.problems.extend(problems)
            return
        self.vocabulary = data
        schema = self.parse(self.root / SCHEMA_FILE, parse_json_text) if (self.root / SCHEMA_FILE).is_file() else None
        if schema is None:
            if not (self.root / SCHEMA_FILE).is_file():
                self.add(SCHEMA_FILE.as_posix(), "missing: the taxonomy schema is needed to check taxonomy entries")
            return
        try:
            self.taxonomy_schema = fill_vocabulary(schema[0], data, SCHEMA_FILE.as_posix())
            schema_validator(self.taxonomy_schema)
        except APBError as error:
            self.report.problems.extend(error.problems)
            self.taxonomy_schema = None

    def scan_top(self, base: Path) -> list[Path]:
        """The AP directories of submissions/; anything else there is a problem."""
        directories = []
        seen_lower: dict[str, str] = {}
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            path = Path(entry.path)
            name = self.rel(path)
            if entry.is_symlink():
                self.add(name, "symbolic links are not allowed in submissions/; commit the real directory or file")
            elif entry.is_dir():
                if not is_ap_key(entry.name):
                    self.add(name, f"directory name {entry.name!r} is not a valid ap_key: use ASCII "
                                   "<Name>_<FirstAuthor><Year><FirstTitleWord>, e.g. HYDRA_Sehwag2020Hydra")
                lower = entry.name.lower()
                if lower in seen_lower:
                    self.add(name, f"differs from {seen_lower[lower]!r} only in letter case; AP directories must "
                                   "differ on case-insensitive file systems")
                seen_lower[lower] = entry.name
                directories.append(path)
            elif entry.name not in SUBMISSIONS_TOP_FILES:
                self.add(name, "unexpected file: submissions/ holds one directory per AP")
        return directories

    def check_ap_dir(self, directory: Path) -> None:
        ap = directory.name
        kinds = self.scan_entries(directory)
        has_taxonomy = kinds.get(TAXONOMY) == "file"
        if has_taxonomy:
            self.report.aps += 1
            self.check_taxonomy(directory / TAXONOMY, ap)
        else:
            self.add(self.rel(directory / TAXONOMY), "missing: every AP directory needs its taxonomy.json entry")
        if kinds.get(MANIFEST) == "file":
            if not has_taxonomy:
                self.add(self.rel(directory / MANIFEST), "this manifest has no taxonomy.json beside it; add the AP's "
                                                         "taxonomy entry", 1)
            self.check_manifest(directory / MANIFEST, ap)
        if kinds.get(RECORDS) == "dir":
            self.check_records(directory / RECORDS, ap)

    def scan_entries(self, directory: Path) -> dict[str, str]:
        """Names of the AP directory's entries -> "file"/"dir"; reports links and unexpected entries."""
        kinds: dict[str, str] = {}
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            name = self.rel(Path(entry.path))
            if entry.is_symlink():
                self.add(name, "symbolic links are not allowed in submissions/; commit the real file")
                continue
            kind = "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
            if AP_DIR_ENTRIES.get(entry.name) != kind:
                self.add(name, "unexpected entry: an AP directory holds taxonomy.json, manifest.yaml and records/ "
                               "only (checkpoints belong behind a URL in the manifest)")
                continue
            kinds[entry.name] = kind
        return kinds

    def check_taxonomy(self, path: Path, ap: str) -> None:
        parsed = self.parse(path, parse_json_text)
        if parsed is None:
            return
        data, lines = parsed
        name = self.rel(path)
        if not isinstance(data, dict):
            self.add(name, "a taxonomy entry must be a JSON object", 1)
            return
        if self.taxonomy_schema is not None:
            problems = taxonomy_problems(data, lines, name, self.taxonomy_schema)
            self.report.problems.extend(problems)
        self.check_ap_key(data, lines, name, ap)
        self.taxonomies[ap] = data
        self.taxonomy_lines[ap] = lines

    def check_ap_key(self, data: dict, lines: LineMap, name: str, ap: str) -> None:
        if data.get("ap_key") != ap:
            self.add(name, f"ap_key {short_repr(data.get('ap_key'))} differs from the directory name {ap!r}; they must "
                           "be equal", lines.line(("ap_key",)), "ap_key")

    def check_manifest(self, path: Path, ap: str) -> None:
        parsed = self.parse(path, parse_yaml_text)
        if parsed is None:
            return
        data, lines = parsed
        name = self.rel(path)
        self.report.manifests += 1
        entry_list, problems = manifest_entries(data, lines, path, allow_file_urls=self.allow_file_urls, name=name)
        self.report.problems.extend(problems)
        if not isinstance(data, dict):
            return
        self.check_ap_key(data, lines, name, ap)
        if not isinstance(data.get("models"), list):
            return
        models = data["models"]
        self.report.checkpoints += len(models)
        if problems:
            return
        entries = {}
        for entry in entry_list:
            entries[entry.model_key] = entry
            self.entries_by_key[entry.model_key].append((name, entry))
            self.check_structure_allowed(entry, ap, name, lines)
        self.entries_by_dir[ap] = entries
        self.check_complete_triple(list(entries.values()), name, lines)

    def check_structure_allowed(self, entry: ModelEntry, ap: str, name: str, lines: LineMap) -> None:
        taxonomy = self.taxonomies.get(ap)
        if not isinstance(taxonomy, dict) or not isinstance(taxonomy.get("structure"), list):
            return
        where = ("models", entry.index, "structure")
        if entry.structure_kind not in taxonomy["structure"]:
            self.add(name, f"{entry.structure} pruning is {entry.structure_kind} but the taxonomy entry lists "
                           f"structure {taxonomy['structure']}; fix the entry or the taxonomy",
                     lines.line(where), format_field(where))
        granularity = taxonomy.get("granularity")
        if entry.structure_kind == "S" and granularity and granularity != entry.structure:
            self.add(name, f"structure {entry.structure} differs from the taxonomy's granularity {granularity!r}",
                     lines.line(where), format_field(where))

    def check_complete_triple(self, entries: list[ModelEntry], name: str, lines: LineMap) -> None:
        groups: dict[tuple, set[int]] = defaultdict(set)
        for entry in entries:
            groups[(entry.architecture, entry.dataset, entry.structure)].add(entry.sparsity)
        if any(set(sparsities_for(triple[2])) <= found for triple, found in groups.items()):
            return
        have = "; ".join(f"{a} {d} {s}: {', '.join(map(str, sorted(found)))}"
                         for (a, d, s), found in sorted(groups.items()))
        self.add(name, "no complete (architecture, dataset, structure) triple: submit at least one with all three "
                       f"sparsities (weights: 90, 95, 99; filters/channels: 50, 75, 90); found {have}",
                 lines.line(("models",)), "models")

    def check_records(self, directory: Path, ap: str) -> None:
        sidecars: dict[str, Path] = {}
        referenced: set[str] = set()
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = Path(entry.path)
            name = self.rel(path)
            if entry.is_symlink():
                self.add(name, "symbolic links are not allowed in submissions/; commit the real file")
                continue
            match = _RECORD_NAME.match(entry.name)
            if not entry.is_file() or not match:
                self.add(name, "unexpected entry: records/ holds <model_key>__<protocol>.json records and their "
                               ".npz sidecars only")
                continue
            if match["ext"] == "npz":
                if entry.stat().st_size > MAX_BYTES:
                    self.add(name, f"larger than the {MAX_BYTES:,}-byte limit")
                sidecars[entry.name] = path
                continue
            self.report.records += 1
            sidecar = self.check_record(path, ap, match["key"], match["protocol"])
            if sidecar:
                referenced.add(sidecar)
        for file_name, path in sidecars.items():
            if file_name not in referenced:
                self.add(self.rel(path), "no record refers to this sidecar; remove it or its record is missing")

    def check_record(self, path: Path, ap: str, file_key: str, file_protocol: str) -> str | None:
        parsed = self.parse(path, parse_json_text)
        if parsed is None:
            return None
        data, lines = parsed
        name = self.rel(path)
        sidecar = path.with_suffix(".npz")
        sidecar_raw = _read_sidecar_file(sidecar)
        key = (name, hashlib.sha256(self.raw).digest(),
               sha256_hex(sidecar_raw) if isinstance(sidecar_raw, bytes) else None)
        if key not in _RECORD_CHECKS:  # records rarely change between runs in one process (tests)
            if len(_RECORD_CHECKS) >= 4096:
                _RECORD_CHECKS.clear()

            def read_sidecar(file_name: str) -> bytes | None:
                found = sidecar_raw if file_name == sidecar.name else _read_sidecar_file(path.parent / file_name)
                if isinstance(found, APBError):
                    raise found
                return found

            full = check_record_data(data, name, read_sidecar=read_sidecar, lines=lines)
            _RECORD_CHECKS[key] = RecordCheck(full.problems, full.well_formed, full.protocol)  # not the arrays
        checked = _RECORD_CHECKS[key]
        self.report.problems.extend(checked.problems)
        if not checked.well_formed:
            return None
        key, protocol = data["model_key"], data["protocol"]
        if record_stem(key, protocol) != record_stem(file_key, file_protocol):
            self.add(name, f"the file name says {file_key}__{file_protocol} but the record holds {key}__{protocol}; "
                           f"name it {record_stem(key, protocol)}.json", 1)
        if data["ap_key"] != ap:
            self.add(name, f"ap_key {data['ap_key']!r} differs from the directory name {ap!r}; the record belongs in "
                           f"submissions/{data['ap_key']}/records/", lines.line(("ap_key",)), "ap_key")
        if checked.protocol is not None and not checked.protocol.leaderboard:
            self.add(name, f"protocol {protocol!r} is not a leaderboard protocol (leaderboard: false); its records "
                           "are for demos and tests and are not accepted under submissions/",
                     lines.line(("protocol",)), "protocol")
        if data["source"] == "evaluated":
            self.check_evaluated(data, lines, name, ap)
            return f"{record_stem(key, protocol)}.npz"
        if data["per_sample"]:  # published distances imported with apb import-distances
            return f"{record_stem(key, protocol)}.npz"
        return None

    def check_evaluated(self, data: dict, lines: LineMap, name: str, ap: str) -> None:
        entry = self.entries_by_dir.get(ap, {}).get(data["model_key"])
        if entry is None:
            self.add(name, f"model key {data['model_key']} matches no entry of submissions/{ap}/manifest.yaml (nor "
                           "a published cell); add the checkpoint to the manifest", lines.line(("model_key",)),
                     "model_key")
            return
        if entry.sha256 is not None and entry.sha256 != data["checkpoint_sha256"]:
            self.add(name, f"checkpoint_sha256 differs from the manifest's sha256 {entry.sha256}: this record was "
                           "made from another file; evaluate the manifest's checkpoint again",
                     lines.line(("checkpoint_sha256",)), "checkpoint_sha256")

    def check_across_aps(self) -> None:
        for key, holders in self.entries_by_key.items():
            if len(holders) > 1:
                for file, entry in holders:
                    others = ", ".join(f for f, _ in holders if f != file) or file
                    self.add(file, f"model key {key} is also declared in {others}; model keys must be unique",
                             entry.line, f"models[{entry.index}]")
        names: dict[str, str] = {}
        for ap, taxonomy in sorted(self.taxonomies.items()):
            display = taxonomy.get("name")
            if not isinstance(display, str):
                continue
            if display in names:
                self.add(f"{SUBMISSIONS}/{ap}/{TAXONOMY}", f"name {display!r} is already the name of "
                                                           f"{names[display]}; display names must be unique",
                         self.taxonomy_lines[ap].line(("name",)), "name")
            names.setdefault(display, ap)


def validate_repository(root: Path, *, allow_file_urls: bool = False) -> Report:
    """Validate the whole repository at *root*."""
    return _Repository(Path(root).resolve(), allow_file_urls).run()


def _within(problem: Problem, targets: list[str]) -> bool:
    return any(target == "" or problem.file == target or problem.file.startswith(target + "/") for target in targets)


def select_problems(root: Path, problems: list[Problem], paths: list[Path]) -> list[Problem]:
    """The *problems* that concern the given files or directories, plus one for each path that does not exist
    or lies outside *root*."""
    root = Path(root).resolve()
    targets, selected = [], []
    for path in paths:
        absolute = Path(path).resolve()
        if not absolute.exists():
            selected.append(Problem(str(path), "no such file or directory"))
            continue
        try:
            relative = absolute.relative_to(root).as_posix()
        except ValueError:
            selected.append(Problem(str(path), f"outside the repository {root}; pass --root or a path inside it"))
            continue
        targets.append("" if relative == "." else relative.rstrip("/"))
    return selected + [problem for problem in problems if _within(problem, targets)]


def validate_paths(root: Path, paths: list[Path] | None = None, *, allow_file_urls: bool = False) -> list[Problem]:
    """Every problem of the repository at *root* (sorted by file and line), or of the given files/directories
    only (the whole repository is still read, so cross-file rules apply)."""
    report = validate_repository(root, allow_file_urls=allow_file_urls)
    return report.problems if paths is None else select_problems(root, report.problems, paths)

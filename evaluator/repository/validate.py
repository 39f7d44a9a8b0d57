"""``apb validate``: every schema of the repository plus the rules no schema can express.

Each problem names the file, line and field and says what to do. Nothing is written. Rules beyond the schemas:
submissions/ holds only AP directories (no symbolic links, no unexpected or oversized files); a directory's
name is its ``ap_key``, in its taxonomy entry, manifest and records; a manifest needs a taxonomy entry, at
least one complete (architecture, dataset, structure) triple with its three sparsities and structures its
taxonomy allows; URLs take a form that ``evaluator/registry/url_schemes.yaml`` accepts (file:// only with
``--allow-file-urls``); no two entries share a model key; a record's file name, fields and directory agree,
its protocol is a leaderboard protocol, an evaluated record matches a manifest entry (and its checkpoint's
sha256). Whether a record itself is acceptable (schema, numbers, protocol size, sidecar) is
:func:`evaluator.repository.record_acceptance.check_record_data`: the one rule every reader of records
applies, here and in ``apb ci`` and the renderer.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evaluator.errors import APBError, Problem
from evaluator.paths import MANIFEST, RECORDS, SUBMISSIONS, TAXONOMY
from evaluator.repository.record_acceptance import RecordCheck, check_record_data, read_sidecar_file
from evaluator.record.records import LINK_REFUSED, record_stem, sha256_hex
from evaluator.registry.model_keys import is_ap_key
from evaluator.repository.manifest import ModelEntry, manifest_entries, sparsities_for
from evaluator.repository.schema import schema_problems, schema_validator, short_repr, unique_problems
from evaluator.untrusted.safeio import MAX_BYTES, LineMap, format_field, parse_json_text, parse_yaml_text, read_limited_bytes

AP_DIR_ENTRIES = {TAXONOMY: "file", MANIFEST: "file", RECORDS: "dir"}
SUBMISSIONS_TOP_FILES = {"README.md"}
_RECORD_NAME = re.compile(r"^(?P<key>[A-Za-z0-9_]+)__(?P<protocol>[a-z0-9][a-z0-9.-]*)\.(?P<ext>json|npz)\Z")


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
                self.add(name, LINK_REFUSED)
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
                self.add(name, LINK_REFUSED)
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
                self.add(name, LINK_REFUSED)
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
        sidecar_raw = read_sidecar_file(sidecar)
        key = (name, hashlib.sha256(self.raw).digest(),
               sha256_hex(sidecar_raw) if isinstance(sidecar_raw, bytes) else None)
        if key not in _RECORD_CHECKS:  # records rarely change between runs in one process (tests)
            if len(_RECORD_CHECKS) >= 4096:
                _RECORD_CHECKS.clear()

            def read_sidecar(file_name: str) -> bytes | None:
                found = sidecar_raw if file_name == sidecar.name else read_sidecar_file(path.parent / file_name)
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

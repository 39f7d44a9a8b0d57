"""What the leaderboard shows, read from the records: published cells, evaluated cells of leaderboard
protocols (with their per-sample sidecars), grouped by dataset and structure. Records of protocols marked
``leaderboard: false`` (the smoke protocol) are left out here, so no renderer can show them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection

from evaluator.errors import APBError, Problem
from evaluator.keys import ModelKey, parse_model_key
from evaluator.records import PerSample, iter_record_paths, load_sidecar, read_record

PUBLISHED, EVALUATED = "published", "evaluated"


@dataclass(frozen=True)
class Result:
    """One record to render: where it lives (relative to the root), its content and its parsed key."""

    path: Path
    record: dict
    key: ModelKey

    @property
    def model_key(self) -> str:
        return self.record["model_key"]

    @property
    def protocol(self) -> str:
        return self.record["protocol"]

    def metric(self, name: str) -> float | None:
        return (self.record.get("metrics") or {}).get(name)


@dataclass
class Results:
    """Every renderable record: ``published`` by model key, ``evaluated`` by protocol then model key, and the
    per-sample sidecars of evaluated records (loaded lazily, checked against their sha256)."""

    root: Path
    published: dict[str, Result] = field(default_factory=dict)
    evaluated: dict[str, dict[str, Result]] = field(default_factory=dict)
    _per_sample: dict[Path, PerSample] = field(default_factory=dict, repr=False)

    def all(self) -> list[Result]:
        rows = list(self.published.values())
        for by_key in self.evaluated.values():
            rows.extend(by_key.values())
        return sorted(rows, key=lambda r: str(r.path))

    def per_sample(self, result: Result) -> PerSample | None:
        """The sidecar of an evaluated record, or ``None`` if the record names none."""
        entry = result.record.get("per_sample")
        if not entry:
            return None
        name = str(entry.get("file", ""))
        if not name or Path(name).name != name or name.startswith("."):
            raise APBError(Problem(str(result.path), f"sidecar name {name!r} must be a plain file name next to the "
                                                     "record (<model_key>__<protocol>.npz)", field="per_sample.file"))
        path = self.root / result.path.parent / name
        if path not in self._per_sample:
            self._per_sample[path] = accepted_per_sample(result.record, self.root / result.path, result.path)
        return self._per_sample[path]


def accepted_per_sample(record: dict, record_path: Path, shown_as: Path) -> PerSample:
    """The per-sample results of an evaluated record that passes ``apb validate``'s acceptance rule
    (``check_record_data``: numbers, protocol size, sidecar sha256 and sums); ``APBError`` naming the record."""
    from evaluator.validate import check_record_data

    def read_sidecar(file_name: str) -> bytes | None:
        sidecar = record_path.parent / file_name
        if not sidecar.is_file():
            return None
        return sidecar.read_bytes()

    checked = check_record_data(record, str(shown_as), read_sidecar=read_sidecar)
    if checked.problems or checked.per_sample is None:
        raise APBError([Problem(p.file, p.message, None, p.field) for p in checked.problems]
                       or Problem(str(shown_as), "has no per-sample results"))
    return checked.per_sample


def load_checked_sidecar(path: Path, sha256: str | None, record_path: Path) -> PerSample:
    """Load a per-sample sidecar after checking that it exists and has the sha256 its record names."""
    if not path.is_file():
        raise APBError(Problem(str(record_path), f"names the sidecar {path.name}, which does not exist; "
                                                 "restore it or evaluate the model again", field="per_sample.file"))
    try:
        return load_sidecar(path.read_bytes(), sha256, path.name)
    except APBError as error:
        raise APBError(Problem(str(record_path), error.problems[0].message, field=error.problems[0].field)) from None


def load_results(root: Path, is_rendered_protocol: Callable[[str], bool],
                 protocols: Collection[str] | None = None) -> Results:
    """Read every record under ``root/submissions``. Published records are always shown; evaluated records
    only where ``is_rendered_protocol(protocol)`` holds (or, if *protocols* is given, where the protocol is
    listed there)."""
    results = Results(root)
    for path in iter_record_paths(root):
        relative = path.relative_to(root)
        try:
            record = read_record(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise APBError(Problem(str(relative), f"cannot read this record ({error}); run `apb validate`")) from None
        if not isinstance(record, dict):
            raise APBError(Problem(str(relative), "a record must be a JSON object; run `apb validate`"))
        try:
            key = parse_model_key(record["model_key"])
        except (KeyError, ValueError) as error:
            raise APBError(Problem(str(relative), f"{error}; run `apb validate`", field="model_key")) from None
        result = Result(relative, record, key)
        source = record.get("source")
        if source == PUBLISHED:
            _put(results.published, result)
        elif source == EVALUATED:
            shown = result.protocol in protocols if protocols is not None else is_rendered_protocol(result.protocol)
            if shown:
                _put(results.evaluated.setdefault(result.protocol, {}), result)
        else:
            raise APBError(Problem(str(relative), f"unknown source {source!r}; use 'published' or 'evaluated'",
                                   field="source"))
    return results


def _put(by_key: dict[str, Result], result: Result) -> None:
    other = by_key.get(result.model_key)
    if other is not None:
        raise APBError(Problem(str(result.path), f"a second {result.record['source']} record of "
                                                 f"{result.model_key} (the other is {other.path}); keep one",
                               field="model_key"))
    by_key[result.model_key] = result

"""What the leaderboard shows, read from the records one model at a time: published cells, evaluated cells of
leaderboard protocols and their per-sample sidecars. Records of protocols marked ``leaderboard: false`` (the
smoke protocol) are left out here, so no renderer can show them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, cast

import numpy as np

from evaluator.errors import APBError, Problem
from evaluator.registry.model_keys import ModelKey, parse_model_key
from evaluator.record.records import PerSample, iter_record_paths, load_sidecar
from evaluator.record.types import Record

PUBLISHED, EVALUATED = "published", "evaluated"


@dataclass(frozen=True)
class Result:
    """One record to render: where it lives (relative to the root), its content and its parsed key."""

    path: Path
    record: Record
    key: ModelKey

    @property
    def model_key(self) -> str:
        return self.record["model_key"]

    @property
    def protocol(self) -> str:
        return self.record["protocol"]

    def metric(self, name: str) -> float | None:
        return (self.record.get("metrics") or {}).get(name)


def sidecar_path(root: Path, result: Result) -> Path | None:
    """The sidecar a record names (a plain file name next to the record), or ``None`` if it names none."""
    entry = result.record.get("per_sample")
    if not entry:
        return None
    name = str(entry.get("file", ""))
    if not name or Path(name).name != name or name.startswith("."):
        raise APBError(Problem(str(result.path), f"sidecar name {name!r} must be a plain file name next to the "
                                                 "record (<model_key>__<protocol>.npz)", field="per_sample.file"))
    return root / result.path.parent / name


def load_distances(root: Path, result: Result) -> np.ndarray | None:
    """The HO-FMN distances of a record's sidecar, or ``None`` if it names none. The record and its sidecar
    pass the one acceptance rule first (``record_acceptance.check_record_data``, through :func:`accepted_per_sample`
    for evaluated records): the renderer shows nothing ``apb validate`` would refuse."""
    if sidecar_path(root, result) is None:
        return None
    if result.record["source"] == EVALUATED:
        return accepted_per_sample(result.record, root / result.path, result.path).hofmn_distance
    return accepted_distances(result.record, root / result.path, result.path)


def load_per_sample(root: Path, result: Result) -> PerSample | None:
    """The per-sample results of an evaluated record (checked as :func:`load_distances` checks them), or None
    for a published record or one that names no sidecar."""
    if result.record["source"] != EVALUATED or sidecar_path(root, result) is None:
        return None
    return accepted_per_sample(result.record, root / result.path, result.path)


def _checked(record: Record, record_path: Path, shown_as: Path) -> Any:
    from evaluator.repository.record_acceptance import check_record_data, read_sidecar_file

    def read_sidecar(file_name: str) -> bytes | None:
        found = read_sidecar_file(record_path.parent / file_name)  # as apb validate reads it: no link, capped
        if isinstance(found, APBError):
            raise found
        return found

    checked = check_record_data(record, str(shown_as), read_sidecar=read_sidecar)
    if checked.problems:
        raise APBError([Problem(p.file, p.message, None, p.field) for p in checked.problems])
    return checked


def accepted_per_sample(record: Record, record_path: Path, shown_as: Path) -> PerSample:
    """The per-sample results of an evaluated record that passes ``apb validate``'s acceptance rule
    (``check_record_data``: numbers, protocol size, sidecar sha256 and sums); ``APBError`` naming the record."""
    checked = _checked(record, record_path, shown_as)
    if checked.per_sample is None:
        raise APBError(Problem(str(shown_as), "has no per-sample results"))
    return checked.per_sample


def accepted_distances(record: Record, record_path: Path, shown_as: Path) -> np.ndarray:
    """The imported distances of a published record that passes the acceptance rule."""
    checked = _checked(record, record_path, shown_as)
    if checked.distances is None:
        raise APBError(Problem(str(shown_as), "has no imported distances"))
    return checked.distances


def load_checked_sidecar(path: Path, sha256: str | None, record_path: Path) -> PerSample:
    """Load a per-sample sidecar after checking that it exists and has the sha256 its record names."""
    if not path.is_file():
        raise APBError(Problem(str(record_path), f"names the sidecar {path.name}, which does not exist; "
                                                 "restore it or evaluate the model again", field="per_sample.file"))
    try:
        return load_sidecar(path.read_bytes(), sha256, path.name)
    except APBError as error:
        raise APBError(Problem(str(record_path), error.problems[0].message, field=error.problems[0].field)) from None


def iter_model_records(root: Path, is_rendered_protocol: Callable[[str], bool],
                       protocols: Collection[str] | None = None) -> Iterator[list[Result]]:
    """The records under ``root/submissions``, one model at a time (its records sorted by path), read as they
    are needed: nothing of a model is kept once the next one is read. Published records are always shown;
    evaluated records only where ``is_rendered_protocol(protocol)`` holds (or, if *protocols* is given, where
    the protocol is listed there)."""
    group: list[Result] = []
    done: set[str] = set()
    for path in iter_record_paths(root):
        result = read_result(root, path)
        if not is_shown(result, is_rendered_protocol, protocols):
            continue
        if group and group[0].model_key != result.model_key:
            done.add(group[0].model_key)
            yield group
            group = []
        if result.model_key in done:
            raise APBError(Problem(str(result.path), f"holds model key {result.model_key}, which belongs to another "
                                                     "file name; run `apb validate`", field="model_key"))
        for other in group:
            if (other.record["source"], other.protocol) == (result.record["source"], result.protocol):
                raise APBError(Problem(str(result.path), f"a second {result.record['source']} record of "
                                                         f"{result.model_key} (the other is {other.path}); keep one",
                                       field="model_key"))
        group.append(result)
    if group:
        yield group


def read_result(root: Path, path: Path) -> Result:
    """One record file as a :class:`Result`, with errors that name the file."""
    from evaluator.repository.record_acceptance import read_record_file

    relative = path.relative_to(root)
    try:
        record, _ = read_record_file(path, str(relative))  # as apb validate reads it: no link, capped, strict JSON
    except OSError as error:
        raise APBError(Problem(str(relative), f"cannot read this record ({error}); run `apb validate`")) from None
    except APBError as error:
        raise APBError([Problem(p.file, f"cannot read this record ({p.message}); run `apb validate`", p.line, p.field)
                        for p in error.problems]) from None
    if not isinstance(record, dict):
        raise APBError(Problem(str(relative), "a record must be a JSON object; run `apb validate`"))
    try:
        key = parse_model_key(record["model_key"])
    except (KeyError, ValueError) as error:
        raise APBError(Problem(str(relative), f"{error}; run `apb validate`", field="model_key")) from None
    source = record.get("source")
    if source not in (PUBLISHED, EVALUATED):
        raise APBError(Problem(str(relative), f"unknown source {source!r}; use 'published' or 'evaluated'",
                               field="source"))
    return Result(relative, cast(Record, record), key)


def is_shown(result: Result, is_rendered_protocol: Callable[[str], bool], protocols: Collection[str] | None) -> bool:
    if result.record["source"] == PUBLISHED:
        return True
    return result.protocol in protocols if protocols is not None else is_rendered_protocol(result.protocol)

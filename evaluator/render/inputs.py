"""What the leaderboard shows, read from the records one model at a time: published cells, evaluated cells of
leaderboard protocols and their per-sample sidecars. Records of protocols marked ``leaderboard: false`` (the
smoke protocol) are left out here, so no renderer can show them."""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator

import numpy as np

from evaluator.errors import APBError, Problem
from evaluator.keys import ModelKey, parse_model_key
from evaluator.records import PerSample, iter_record_paths, read_record, sha256_file

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
    """The HO-FMN distances of a record's sidecar (checked like :func:`load_checked_sidecar`), or ``None``.

    Only the ``hofmn_distance`` array is read: the curves need nothing else, and imported distance sidecars
    (``apb import-distances``) hold nothing else."""
    path = sidecar_path(root, result)
    if path is None:
        return None
    data = checked_sidecar_bytes(path, result.record["per_sample"].get("sha256"), result.path)
    return npz_member(data, "hofmn_distance").astype(np.float32, copy=False)


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=][a-z][0-9]+)', 'fortran_order': False, 'shape': \(([0-9]+),\), \} *\n")


def npz_member(data: bytes, name: str) -> np.ndarray:
    """One 1-D array of an ``.npz`` file's bytes (no pickles). The common header (``np.savez`` of a 1-D array)
    is read directly; anything else goes through ``np.load``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = archive.read(f"{name}.npy")
    if member[:8] in (b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00"):
        start = 10 if member[6] == 1 else 12
        match = _NPY_HEADER.fullmatch(member[start:member.index(b"\n", start) + 1])
        if match:
            dtype, count = np.dtype(match.group(1).decode()), int(match.group(2))
            body = member[member.index(b"\n", start) + 1:]
            if len(body) == dtype.itemsize * count:
                return np.frombuffer(body, dtype=dtype)
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return np.asarray(arrays[name])


def load_checked_sidecar(path: Path, sha256: str | None, record_path: Path) -> PerSample:
    """Load a per-sample sidecar after checking that it exists and has the sha256 its record names."""
    check_sidecar_file(path, sha256, record_path)
    return PerSample.load(path)


def checked_sidecar_bytes(path: Path, sha256: str | None, record_path: Path) -> bytes:
    """The sidecar's bytes, read once and checked against the sha256 its record names (``APBError`` if not)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = None
    if data is None or not path.is_file():
        check_sidecar_file(path, sha256, record_path)  # names the missing file
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:  # type: ignore[arg-type]
        check_sidecar_file(path, sha256, record_path)  # names the mismatch
    return data  # type: ignore[return-value]


def check_sidecar_file(path: Path, sha256: str | None, record_path: Path) -> None:
    """Raise ``APBError`` unless the sidecar exists and has the sha256 its record names."""
    if not path.is_file():
        raise APBError(Problem(str(record_path), f"names the sidecar {path.name}, which does not exist; "
                                                 "restore it or evaluate the model again", field="per_sample.file"))
    if sha256 and sha256_file(path) != sha256:
        raise APBError(Problem(str(record_path), f"the sidecar {path.name} does not have the sha256 the record "
                                                 "names; restore the sidecar that belongs to this record",
                               field="per_sample.sha256"))


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
    source = record.get("source")
    if source not in (PUBLISHED, EVALUATED):
        raise APBError(Problem(str(relative), f"unknown source {source!r}; use 'published' or 'evaluated'",
                               field="source"))
    return Result(relative, record, key)


def is_shown(result: Result, is_rendered_protocol: Callable[[str], bool], protocols: Collection[str] | None) -> bool:
    if result.record["source"] == PUBLISHED:
        return True
    return result.protocol in protocols if protocols is not None else is_rendered_protocol(result.protocol)

"""Reading workflow artifacts as untrusted data.

An artifact made on the GPU runner (or by a PR's own validate workflow) may hold anything: the privileged
jobs read it only through here. A file is used only if it is a regular file (no symlink, device or fifo;
nothing is followed), sits at most ``MAX_DEPTH`` folders deep, has a plain name and is under its size cap;
JSON is parsed strictly (``evaluator.untrusted.safeio``) and checked against its JSON Schema. Everything refused is
returned as a ``Problem`` naming the file, so the report can say what was dropped and why.
"""
from __future__ import annotations

import functools
import io
import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from evaluator.errors import APBError, Problem
from evaluator.record.records import record_stem
from evaluator.record.types import Record
from evaluator.untrusted.safeio import MAX_BYTES, LineMap, parse_json_text

MAX_JSON_BYTES = MAX_BYTES  # 1 MB, as for every data file of the repository
MAX_SIDECAR_BYTES = 4 << 20  # a sidecar of 10,000 samples is ~60 KB
MAX_LOG_BYTES = 1 << 20
MAX_FILES = 4096
MAX_TOTAL_BYTES = 256 << 20
MAX_DEPTH = 4
MAX_ZIP_BYTES = 64 << 20  # an artifact's zip as downloaded (a leg's output is well under 1 MB)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\Z")
CI_SCHEMAS = Path(__file__).resolve().parent / "schemas"


@dataclass(frozen=True)
class Scan:
    files: dict[str, Path]  # path relative to the scanned folder (POSIX) -> path
    problems: list[Problem]


def scan(directory: Path) -> Scan:
    """The regular files under *directory*, without following any link; everything else is a problem."""
    files: dict[str, Path] = {}
    problems: list[Problem] = []
    total = 0
    if not directory.is_dir() or directory.is_symlink():
        return Scan({}, [Problem(str(directory), "missing, or not a plain folder")] if directory.exists() or
                    directory.is_symlink() else [])
    pending = [(directory, 0)]
    while pending:
        folder, depth = pending.pop()
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                path = Path(entry.path)
                if not SAFE_NAME.match(entry.name):
                    problems.append(Problem(str(path), "refused: not a plain name (letters, digits, '_', '.' "
                                                       "and '-', not starting with '.')"))
                elif entry.is_symlink():
                    problems.append(Problem(str(path), "refused: a symbolic link"))
                elif entry.is_dir(follow_symlinks=False):
                    if depth + 1 > MAX_DEPTH:
                        problems.append(Problem(str(path), f"refused: more than {MAX_DEPTH} folders deep"))
                    else:
                        pending.append((path, depth + 1))
                elif not entry.is_file(follow_symlinks=False):
                    problems.append(Problem(str(path), "refused: not a regular file"))
                elif len(files) >= MAX_FILES:
                    problems.append(Problem(str(path), f"refused: more than {MAX_FILES} files"))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
                    if total > MAX_TOTAL_BYTES:
                        problems.append(Problem(str(path), f"refused: the files exceed {MAX_TOTAL_BYTES:,} bytes"))
                        continue
                    files[path.relative_to(directory).as_posix()] = path
    return Scan(dict(sorted(files.items())), problems)


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a regular file (never through a link), refusing more than *limit*."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise APBError(Problem(str(path), f"cannot be read: {error.strerror}")) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise APBError(Problem(str(path), "refused: not a regular file"))
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise APBError(Problem(str(path), f"refused: larger than {limit:,} bytes"))
    return data


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    return parse_json_text(read_bytes(path, limit), str(path))[0]


@functools.lru_cache(maxsize=None)
def _schema(schema_path: Path) -> dict:
    from evaluator.repository.schema import with_vocabularies

    return with_vocabularies(json.loads(schema_path.read_text(encoding="utf-8")))


def schema_problems(data: Any, schema_path: Path, name: str) -> list[Problem]:
    """Every place *data* breaks the JSON Schema at *schema_path* (at most 20), in ``apb validate``'s words.

    Artifacts carry no line numbers worth citing, so the problems name the field only."""
    from evaluator.repository.schema import schema_problems as validate_schema_problems

    problems = validate_schema_problems(data, _schema(schema_path), LineMap({}), name)
    return [Problem(p.file, p.message[:300], None, p.field) for p in problems[:20]]


def load_checked_json(path: Path, schema_name: str) -> Any:
    """A JSON file checked against ``evaluator/ci/schemas/<schema_name>``; ``APBError`` if it is not valid."""
    data = read_json(path)
    problems = schema_problems(data, CI_SCHEMAS / schema_name, str(path))
    if problems:
        raise APBError(problems)
    return data


@dataclass(frozen=True)
class Expected:
    """What a record must be: the plan says which model, checkpoint and protocol were asked for."""

    model_key: str
    sha256: str
    protocol: str


@dataclass(frozen=True)
class AcceptedRecord:
    record: Record  # passed the acceptance rule, so it holds the schema's keys
    json_bytes: bytes
    sidecar_bytes: bytes

    @property
    def stem(self) -> str:
        return record_stem(self.record["model_key"], self.record["protocol"])


def accept_record(json_path: Path, expected: Expected) -> AcceptedRecord:
    """Check one evaluated record and its sidecar as untrusted input: strict JSON, the model / checkpoint /
    protocol the plan asked for, and ``apb validate``'s acceptance rule (``check_record_data``: schema, numbers,
    protocol size, sidecar sha256 and per-sample sums). The sidecar is read only as a plain file under its cap."""
    from evaluator.repository.record_acceptance import check_record_data

    stem = record_stem(expected.model_key, expected.protocol)
    name = str(json_path)
    if json_path.name != f"{stem}.json":
        raise APBError(Problem(name, f"refused: expected the record {stem}.json"))
    json_bytes = read_bytes(json_path, MAX_JSON_BYTES)
    record = parse_json_text(json_bytes, name)[0]
    sidecars: dict[str, bytes] = {}

    def read_sidecar(file_name: str) -> bytes | None:
        path = json_path.with_name(file_name)
        if not os.path.lexists(path):
            return None
        sidecars[file_name] = read_bytes(path, MAX_SIDECAR_BYTES)
        return sidecars[file_name]

    checked = check_record_data(record, name, read_sidecar=read_sidecar)
    if checked.problems:
        raise APBError([Problem(p.file, f"refused: {p.message}"[:300], None, p.field) for p in checked.problems[:20]])
    wanted = {"model_key": expected.model_key, "protocol": expected.protocol,
              "checkpoint_sha256": expected.sha256, "source": "evaluated"}
    for field, value in wanted.items():
        if record.get(field) != value:
            raise APBError(Problem(name, f"refused: is {record.get(field)!r}, the plan asked for {value!r}",
                                   field=field))
    return AcceptedRecord(cast(Record, record), json_bytes, sidecars[f"{stem}.npz"])


def log_tail(path: Path, *, max_lines: int = 40, max_chars: int = 4000) -> str:
    """The last lines of a log as plain text: progress-bar rewrites collapsed, control characters dropped."""
    data = read_bytes(path, MAX_LOG_BYTES)
    text = data.decode("utf-8", "replace")
    lines = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]
    lines = ["".join(ch for ch in line if ch == "\t" or ch >= " ") for line in lines]
    tail = "\n".join(line for line in lines if line.strip())
    tail = "\n".join(tail.splitlines()[-max_lines:])
    return tail[-max_chars:]


def unzip_artifact(data: bytes, into: Path) -> list[Problem]:
    """Extract an artifact's zip (bytes downloaded through the API) into the empty folder *into*, under the same
    rules as ``scan``: plain names at most ``MAX_DEPTH`` folders deep, regular files only (a member marked as a
    link or anything else is refused), at most ``MAX_FILES`` files and ``MAX_TOTAL_BYTES`` in all, each member
    read with its declared size as the cap (a member that inflates past it is refused). Returns the problems;
    a refused member is not written, the others are."""
    if len(data) > MAX_ZIP_BYTES:
        return [Problem(str(into), f"refused: the artifact is {len(data):,} bytes, over {MAX_ZIP_BYTES:,}")]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as error:
        return [Problem(str(into), f"refused: not a zip archive ({error})")]
    problems: list[Problem] = []
    total = 0
    written = 0
    for member in members:
        parts = member.filename.rstrip("/").split("/")
        where = str(into.joinpath(*[p for p in parts if p not in ("", ".", "..")]) if parts else into)
        kind = stat.S_IFMT(member.external_attr >> 16)
        if not all(SAFE_NAME.match(part) for part in parts) or "\\" in member.filename:
            problems.append(Problem(where, f"refused: {member.filename[:200]!r} is not a plain relative name"))
        elif len(parts) - (0 if member.is_dir() else 1) > MAX_DEPTH:
            problems.append(Problem(where, f"refused: more than {MAX_DEPTH} folders deep"))
        elif member.is_dir():
            into.joinpath(*parts).mkdir(parents=True, exist_ok=True)
        elif kind not in (0, stat.S_IFREG):
            problems.append(Problem(where, "refused: not a regular file (a link or a special file)"))
        elif written >= MAX_FILES:
            problems.append(Problem(where, f"refused: more than {MAX_FILES} files"))
        elif total + member.file_size > MAX_TOTAL_BYTES:
            problems.append(Problem(where, f"refused: the files exceed {MAX_TOTAL_BYTES:,} bytes"))
        else:
            try:
                with archive.open(member) as handle:
                    content = handle.read(member.file_size + 1)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as error:
                problems.append(Problem(where, f"refused: cannot be read from the zip ({error})"))
                continue
            if len(content) != member.file_size:
                problems.append(Problem(where, "refused: its size differs from the size the zip declares"))
                continue
            target = into.joinpath(*parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as out:
                    out.write(content)
            except OSError as error:  # a name twice, or a file where a folder is
                problems.append(Problem(where, f"refused: cannot be written ({error.strerror})"))
                continue
            total += len(content)
            written += 1
    return problems

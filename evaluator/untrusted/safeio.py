"""Safe reading of the repository's YAML and JSON files, with the line of every value.

Every file an author can change goes through here. A file is refused, as an ``APBError`` naming the file and
line, when it is larger than ``MAX_BYTES``, is not UTF-8, is not valid YAML/JSON, holds a key twice, or (YAML)
uses anchors, aliases, explicit tags, merge keys, several documents or non-string keys, or (both) non-finite
numbers or lists and mappings nested more than ``MAX_DEPTH`` deep (a problem, never a ``RecursionError``). YAML is read event by event with ruamel's safe parser, so nothing is ever constructed from a tag.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import marshal
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from evaluator.errors import APBError, Problem
from evaluator.untrusted.json_lines import scan_json_lines

MAX_BYTES = 1_000_000  # 1 MB: far above any real manifest, record or taxonomy entry
MAX_DEPTH = 64  # nested lists and mappings; the deepest real file (a record) has 6

PathPart = str | int


def format_field(path: Sequence[PathPart]) -> str:
    """``("models", 3, "url")`` -> ``models[3].url``; the root is ``(root)``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


class LineMap:
    """The 1-based line of each value of a parsed file, addressed by a path such as ``("models", 3, "url")``.

    A path that does not exist (a missing field) gives the line of its nearest existing parent.
    """

    def __init__(self, lines: dict[tuple, int] | None = None, *, json_text: str | None = None) -> None:
        self._lines = lines
        self._json_text = json_text

    def _table(self) -> dict[tuple, int]:
        if self._lines is None:
            self._lines, _ = scan_json_lines(self._json_text or "")
        return self._lines

    def line(self, path: Sequence[PathPart] = ()) -> int:
        table = self._table()
        path = tuple(path)
        while path and path not in table:
            path = path[:-1]
        return table.get(path, 1)

    __call__ = line


def read_limited_bytes(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of *path*, refusing files larger than *limit* before reading them."""
    status = os.stat(path)
    size = status.st_size
    if size > limit:
        raise APBError(Problem(str(path), f"file is {size:,} bytes, larger than the {limit:,}-byte limit; "
                                          "keep data files small (checkpoints belong behind a URL)", 1))
    if stat.S_ISDIR(status.st_mode):  # what open() says; os.open would open it
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    fd = os.open(path, os.O_RDONLY)  # not open(): a file object costs more syscalls than reading a small file
    try:
        data = _read_at_most(fd, size + 1)  # sized by stat: limit + 1 would allocate limit bytes for any file
        if len(data) > size:  # it grew since stat: read on, to one byte past the limit
            data += _read_at_most(fd, limit + 1 - len(data))
    finally:
        os.close(fd)
    if len(data) > limit:
        raise APBError(Problem(str(path), f"file is larger than the {limit:,}-byte limit", 1))
    return data


def _read_at_most(fd: int, count: int) -> bytes:
    """Up to *count* bytes from *fd*: fewer only at the end of the file."""
    chunks = []
    while count > 0 and (chunk := os.read(fd, count)):
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def decode_utf8(data: bytes, name: str) -> str:
    """Strict UTF-8 decoding; the error names the line of the first bad byte."""
    if len(data) > MAX_BYTES:
        raise APBError(Problem(name, f"content is {len(data):,} bytes, larger than the {MAX_BYTES:,}-byte limit", 1))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise APBError(Problem(name, f"byte 0x{data[error.start]:02x} at offset {error.start} is not UTF-8; "
                                     "save the file as UTF-8", line)) from None


def _as_text(text: str | bytes, name: str) -> str:
    """Content as text, refusing non-UTF-8 bytes and content over ``MAX_BYTES``."""
    if isinstance(text, bytes):
        return decode_utf8(text, name)
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise APBError(Problem(name, f"content is larger than the {MAX_BYTES:,}-byte limit", 1))
    return text


# ---------------------------------------------------------------------------------------------------- YAML


def load_yaml(path: Path) -> tuple[Any, LineMap]:
    """Parse the YAML file at *path* safely; returns the data and its line map."""
    return parse_yaml_text(read_limited_bytes(path), str(path))


def parse_yaml_text(text: str | bytes, name: str) -> tuple[Any, LineMap]:
    """Parse YAML content (e.g. from ``git show``) safely; *name* is used in error messages."""
    from ruamel.yaml.error import YAMLError

    text = _as_text(text, name)
    cached = _PARSED_YAML.get(text)
    if cached is not None:  # the same content parses to the same data: hand out a copy
        return marshal.loads(cached[0]), LineMap(dict(cached[1]))
    fast = not _libyaml_differs(text)
    try:
        data, lines = _parse_yaml(text, name, fast=fast)
    except (APBError, YAMLError):  # libyaml refuses some YAML 1.2 (a URL in a flow mapping): the pure parser decides
        if not fast:
            raise
        data, lines = _parse_yaml(text, name, fast=False)
    if len(_PARSED_YAML) >= 512:
        _PARSED_YAML.clear()
    _PARSED_YAML[text] = (marshal.dumps(data), dict(lines._table()))  # marshal: a deep copy of plain data, fast
    return data, lines


_PARSED_YAML: dict[str, tuple[bytes, dict[tuple, int]]] = {}  # content -> (marshalled data, lines) of successes
# Where libyaml (YAML 1.1, ruamel.yaml.clib) and ruamel's own YAML 1.2 parser read a text differently: tabs, the
# line breaks 1.1 has and 1.2 has not (NEL, LS, PS; CR), a byte-order mark, a comment glued to a block scalar's
# header (`>-#`), a directive (`%YAML 1.1`: ruamel then resolves scalars by 1.1, libyaml never reports it). A text
# holding none of them gives both parsers the same events and marks (tests/test_safeio.py fuzzes it), so it may
# take libyaml, 10-20x faster; what libyaml refuses, the pure parser judges again.
_LIBYAML_DIFFERENT_CHARS = "\t\r\x85\u2028\u2029\ufeff"
_BLOCK_HEADER_COMMENT = re.compile("[|>][-+0-9]*#").search
# The value of every unquoted scalar the libyaml path resolved, by (text, implicit): YAML 1.2's whatever the file
# (libyaml tells the resolver no %YAML version), so files share it. Successes only: a refusal names its own line.
_LIBYAML_SCALARS: dict[tuple[str, Any], Any] = {}


def _libyaml_differs(text: str) -> bool:
    """Whether libyaml might read *text* otherwise than the pure parser (a character test per character: 3x faster
    than one regular expression for both)."""
    return (any(char in text for char in _LIBYAML_DIFFERENT_CHARS) or _BLOCK_HEADER_COMMENT(text) is not None
            or text.startswith("%") or "\n%" in text)  # a directive starts a line


def _parse_yaml(text: str, name: str, *, fast: bool) -> tuple[Any, LineMap]:
    """*text*'s data and lines, parsed by libyaml if *fast* (and installed; its errors raised as they are), else by
    ruamel's pure parser (syntax errors become a problem naming the line)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.main import CParser

    if fast and CParser is not None:  # what it refuses, the caller hands to the pure parser
        if len(_LIBYAML_SCALARS) >= 4096:
            _LIBYAML_SCALARS.clear()
        events = iter(CParser(text).get_event, None)  # what YAML.parse yields, without a loader class per file
        return _YamlBuilder(_libyaml_scalars(), name, _LIBYAML_SCALARS).build(events)
    yaml = YAML(typ="safe", pure=True)
    try:
        return _YamlBuilder(yaml, name, {}).build(yaml.parse(text))
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise APBError(Problem(name, f"invalid YAML: {what}; fix the syntax", line)) from None
    except YAMLError as error:
        raise APBError(Problem(name, f"invalid YAML: {error}; fix the syntax", 1)) from None


@functools.lru_cache(maxsize=None)
def _libyaml_scalars() -> Any:
    """The ``YAML`` whose resolver and constructor read the scalars libyaml parsed: one for every file, as it never
    parses (``YAML.parse`` with libyaml makes a new one and a loader class per file, at some cost)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=False)


class _YamlBuilder:
    """Builds plain Python data (dict/list/str/int/float/bool/None) from parser events."""

    _SCALARS = {"tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"}

    def __init__(self, yaml: Any, name: str, resolved: dict[tuple[str, Any], Any]) -> None:
        from ruamel.yaml import events

        self.yaml = yaml
        self.name = name
        self.lines: dict[tuple, int] = {}
        self.resolved = resolved  # (text, implicit) -> value: a file repeats its scalars
        self.ev = events  # imported once, not per event
        self.scalar_event, self.alias_event = events.ScalarEvent, events.AliasEvent  # the classes tested per event

    def fail(self, event: Any, message: str, field: str | None = None) -> None:
        raise APBError(Problem(self.name, message, event.start_mark.line + 1, field))

    def build(self, events: Iterator[Any]) -> tuple[Any, LineMap]:
        ev = self.ev

        documents = 0
        data: Any = None
        for event in events:
            if isinstance(event, ev.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    self.fail(event, "the file holds more than one YAML document (---); keep one")
            elif isinstance(event, (ev.StreamStartEvent, ev.StreamEndEvent, ev.DocumentEndEvent)):
                continue
            else:
                data = self.node(event, events, ())
        return data, LineMap(self.lines)

    def check_depth(self, event: Any, path: tuple) -> None:
        if len(path) >= MAX_DEPTH:
            self.fail(event, _too_deep_message())

    def check_plain(self, event: Any) -> None:
        if isinstance(event, self.alias_event):
            self.fail(event, f"YAML alias *{event.anchor} is not allowed; write the value out")
        if getattr(event, "anchor", None):
            self.fail(event, f"YAML anchor &{event.anchor} is not allowed; write values out in full")
        tag = getattr(event, "tag", None)
        if tag is not None and not (isinstance(event, self.scalar_event) and event.implicit[0]):
            self.fail(event, f"YAML tag {tag} is not allowed; use plain values")

    def node(self, event: Any, events: Iterator[Any], path: tuple) -> Any:
        ev = self.ev

        self.check_plain(event)
        self.lines[path] = event.start_mark.line + 1
        if isinstance(event, self.scalar_event):
            return self.scalar(event)
        if isinstance(event, (ev.SequenceStartEvent, ev.MappingStartEvent)):
            self.check_depth(event, path)
        if isinstance(event, ev.SequenceStartEvent):
            items: list[Any] = []
            for item_event in events:
                if isinstance(item_event, ev.SequenceEndEvent):
                    return items
                items.append(self.node(item_event, events, path + (len(items),)))
        if isinstance(event, ev.MappingStartEvent):
            mapping: dict[str, Any] = {}
            for key_event in events:
                if isinstance(key_event, ev.MappingEndEvent):
                    return mapping
                self.check_plain(key_event)
                if not isinstance(key_event, self.scalar_event):
                    self.fail(key_event, "a mapping key must be a plain string, not a list or mapping")
                key = self.scalar(key_event)
                line = key_event.start_mark.line + 1
                if key == "<<":
                    self.fail(key_event, "YAML merge keys (<<) are not allowed; write the fields out")
                if not isinstance(key, str):
                    self.fail(key_event, f"key {key_event.value!r} must be a string; quote it")
                child = path + (key,)
                if key in mapping:
                    self.fail(key_event, f"duplicate key {key!r} (first on line {self.lines.get(child, '?')}); "
                                         "keep one", format_field(child))
                mapping[key] = self.node(next(events), events, child)
                self.lines[child] = line
        raise APBError(Problem(self.name, "unexpected YAML structure", event.start_mark.line + 1))

    def scalar(self, event: Any) -> Any:
        if not event.implicit[0]:  # quoted: always a string
            return event.value
        key = (event.value, event.implicit)
        value = self.resolved.get(key, self)  # one lookup (the table is shared and may be cleared); self: absent
        if value is self:
            value = self.resolved[key] = self.resolve(event)
        return value

    def resolve(self, event: Any) -> Any:
        """The value of the unquoted scalar *event* (one of the plain types), or a problem naming its line."""
        from ruamel.yaml.nodes import ScalarNode

        tag = str(self.yaml.resolver.resolve(ScalarNode, event.value, event.implicit))
        if tag.endswith(":merge"):
            self.fail(event, "YAML merge keys (<<) are not allowed; write the fields out")
        if tag not in self._SCALARS:
            self.fail(event, f"value {event.value!r} resolves to {tag}, which is not allowed; quote it")
        if tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"):
            return event.value
        constructor = self.yaml.constructor
        node = ScalarNode(tag, event.value)
        value = {"tag:yaml.org,2002:int": constructor.construct_yaml_int,
                 "tag:yaml.org,2002:float": constructor.construct_yaml_float,
                 "tag:yaml.org,2002:bool": constructor.construct_yaml_bool,
                 "tag:yaml.org,2002:null": constructor.construct_yaml_null}[tag](node)
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(event, f"non-finite number {event.value!r} is not allowed")
        return value


# ---------------------------------------------------------------------------------------------------- JSON


def load_json(path: Path) -> tuple[Any, LineMap]:
    """Parse the JSON file at *path* strictly; returns the data and its line map."""
    return parse_json_text(read_limited_bytes(path), str(path))


def parse_json_text(text: str | bytes, name: str) -> tuple[Any, LineMap]:
    """Parse JSON content strictly (no duplicate keys, no NaN/Infinity); *name* is used in error messages."""
    text = _as_text(text, name)

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        result = dict(pairs)
        if len(result) != len(pairs):  # a key repeats: name the first that does
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise _DuplicateKey(key)
                seen.add(key)
        return result

    def no_constants(token: str) -> Any:
        raise _NonFinite(token)

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
        if text.count("{") + text.count("[") > MAX_DEPTH:  # fewer openings cannot nest MAX_DEPTH deep
            _check_json_depth(data, name)
    except RecursionError:
        raise APBError(Problem(name, _too_deep_message(), 1)) from None
    except json.JSONDecodeError as error:
        raise APBError(Problem(name, f"invalid JSON: {error.msg}; fix the syntax", error.lineno)) from None
    except _DuplicateKey as error:
        _, duplicates = scan_json_lines(text)
        path, line, first = duplicates[0] if duplicates else ((error.key,), 1, "?")
        raise APBError(Problem(name, f"duplicate key {error.key!r} (first on line {first}); keep one", line,
                               format_field(path))) from None
    except _NonFinite as error:
        raise APBError(Problem(name, f"non-finite number {error.token} is not allowed in JSON",
                               _first_line_of(text, error.token))) from None
    return data, LineMap(json_text=text)


def _too_deep_message() -> str:
    return f"nested too deeply (more than {MAX_DEPTH} levels of lists and mappings); flatten the data"


def _check_json_depth(data: Any, name: str) -> None:
    """Refuse data nested deeper than ``MAX_DEPTH``, walking it without recursion."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise APBError(Problem(name, _too_deep_message(), 1))
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


class _NonFinite(Exception):
    def __init__(self, token: str) -> None:
        self.token = token


def _first_line_of(text: str, token: str) -> int:
    index = text.find(token)
    return text.count("\n", 0, index) + 1 if index >= 0 else 1


# ------------------------------------------------------------------------------------------------ writing


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write *data* to *path* so that readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make records readable by their writer only
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dump_json(data: dict) -> bytes:
    """Deterministic JSON bytes: 2-space indent, key order as given, trailing newline, no NaN."""
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

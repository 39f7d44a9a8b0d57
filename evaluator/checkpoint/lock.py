"""``apb lock``: download the checkpoints whose manifest entry has no sha256 and pin it in the manifest.

The manifest is edited as text: only the entry's ``sha256`` line changes (or one ``sha256:`` line is added
after its ``url``); comments, order, quoting and layout stay as they were. The positions come from ruamel's
round-trip parser, run only on text that :mod:`evaluator.untrusted.safeio` has already accepted, and every edit is
verified by parsing the result again: the data must differ in that one field and nowhere else. Each pin is
written atomically as soon as its download is verified, so an interrupted run keeps what it pinned.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from evaluator.errors import APBError, Problem
from evaluator.paths import MANIFEST, submissions_dir
from evaluator.untrusted.safeio import atomic_write_bytes

if TYPE_CHECKING:
    from evaluator.repository.manifest import ModelEntry

_NULL_VALUE = re.compile(r"sha256[ \t]*:[ \t]*(?:null|Null|NULL|~|\"\"|'')?(?P<rest>[ \t]*(?:#.*)?(?:\r?\n)?)$")


@dataclass(frozen=True)
class Pinned:
    model_key: str
    sha256: str
    manifest: Path


@dataclass(frozen=True)
class LockResult:
    pinned: list[Pinned]
    problems: list[Problem]  # entries that could not be pinned (download or edit failures)


def lock_manifests(root: Path, ap_keys: Iterable[str] = (), *, cache_dir: Path | None = None,
                   fetch: Callable[..., Path] | None = None, progress: bool = True) -> LockResult:
    """Pin every entry without a sha256 (in the manifests of *ap_keys*, default all). A failed entry does not
    stop the others; its problems are in the result. *fetch* (default :func:`evaluator.checkpoint.load.fetch_entry`)
    returns the verified cached file, whose name is its sha256."""
    from evaluator.checkpoint.load import fetch_entry
    from evaluator.repository.submissions import ap_dirs

    fetch = fetch or fetch_entry
    manifests = _selected_manifests(ap_dirs(root), list(ap_keys), root, MANIFEST)
    pinned: list[Pinned] = []
    problems: list[Problem] = []
    for manifest in manifests:
        try:
            unpinned = entries_to_pin(manifest)
        except APBError as error:
            problems.extend(error.problems)
            continue
        for entry in unpinned:
            try:
                digest = Path(fetch(entry, cache_dir=cache_dir, progress=progress)).name
                text = _read_text(manifest)
                atomic_write_bytes(manifest, pin_sha256(text, entry.index, digest, str(manifest)).encode("utf-8"))
            except APBError as error:
                problems.extend(error.problems)
                continue
            pinned.append(Pinned(entry.model_key, digest, manifest))
    return LockResult(pinned, problems)


def entries_to_pin(manifest: Path) -> list[ModelEntry]:
    """The entries of *manifest* without a sha256, as ``ModelEntry`` objects. The manifest must be valid once
    pinned: it is validated with a placeholder in each missing pin (the schema requires the pin of every entry
    not marked ``imported``, which is exactly what this command writes)."""
    import copy
    import dataclasses

    from evaluator.repository.manifest import manifest_entries
    from evaluator.untrusted.safeio import parse_yaml_text

    data, lines = parse_yaml_text(_read_text(manifest), str(manifest))
    models = data.get("models") if isinstance(data, dict) else None
    unpinned = [index for index, model in enumerate(models if isinstance(models, list) else [])
                if isinstance(model, dict) and model.get("sha256") is None]
    placeholder = copy.deepcopy(data)
    for index in unpinned:
        placeholder["models"][index]["sha256"] = "0" * 64
    entries, problems = manifest_entries(placeholder, lines, manifest, allow_file_urls=True)
    if problems:
        raise APBError(problems)
    return [dataclasses.replace(entries[index], sha256=None) for index in unpinned]


def pin_sha256(text: str, index: int, sha256: str, name: str) -> str:
    """*text* (a manifest safeio accepts) with ``models[index].sha256`` set to *sha256*, nothing else changed."""
    from ruamel.yaml import YAML

    from evaluator.untrusted.safeio import parse_yaml_text

    before, _ = parse_yaml_text(text, name)  # refuses anything unsafe before ruamel's round-trip parser sees it
    entry = YAML(typ="rt").load(text)["models"][index]
    where = f"models[{index}]"
    line_of = entry.lc.key("sha256" if "sha256" in entry else "url")[0]
    if entry.fa.flow_style():
        raise _cannot_edit(name, line_of, where, sha256, "the entry is written in flow style ({...})")
    lines = text.splitlines(keepends=True)
    if "sha256" in entry:
        column = entry.lc.key("sha256")[1]
        match = _NULL_VALUE.match(lines[line_of], column)
        if not match:
            raise _cannot_edit(name, line_of, where, sha256, "its sha256 value is not a plain null")
        lines[line_of] = lines[line_of][:column] + f"sha256: {sha256}" + match["rest"]
    else:
        column = entry.lc.key("url")[1]
        newline = "\r\n" if lines[line_of].endswith("\r\n") else "\n"
        if not lines[line_of].endswith("\n"):
            lines[line_of] += newline
        lines.insert(line_of + 1, " " * column + f"sha256: {sha256}{newline}")
    edited = "".join(lines)
    after, _ = parse_yaml_text(edited, name)
    before["models"][index]["sha256"] = sha256
    if after != before:
        raise _cannot_edit(name, line_of, where, sha256, "the entry's layout is unusual (a multi-line url?)")
    return edited


def _cannot_edit(name: str, line: int, where: str, sha256: str, why: str) -> APBError:
    return APBError(Problem(name, f"cannot pin the sha256 automatically: {why}; add `sha256: {sha256}` to the "
                                  "entry by hand", line + 1, f"{where}.sha256"))


def _read_text(path: Path) -> str:
    from evaluator.untrusted.safeio import decode_utf8, read_limited_bytes

    return decode_utf8(read_limited_bytes(path), str(path))


def _selected_manifests(directories: list[Path], ap_keys: list[str], root: Path, manifest_name: str) -> list[Path]:
    known = {directory.name: directory for directory in directories}
    unknown = [key for key in ap_keys if key not in known]
    if unknown:
        raise APBError(Problem(str(submissions_dir(root)), f"no AP directory for {', '.join(unknown)}", field="ap_key"))
    chosen = [known[key] for key in ap_keys] if ap_keys else directories
    missing = [str(directory / manifest_name) for directory in chosen if not (directory / manifest_name).is_file()]
    if ap_keys and missing:
        raise APBError(Problem(missing[0], "this AP has no manifest, so there is nothing to pin"))
    return [directory / manifest_name for directory in chosen if (directory / manifest_name).is_file()]

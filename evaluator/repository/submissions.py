"""``submissions/``: the repository walk over every AP's manifest entries and taxonomy entry."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterator

from evaluator.errors import APBError, Problem
from evaluator.record.records import LINK_REFUSED
from evaluator.registry.model_keys import is_ap_key, parse_model_key
from evaluator.repository.manifest import ModelEntry, load_manifest
from evaluator.paths import MANIFEST, TAXONOMY, records_dir, repo_root, submissions_dir
from evaluator.untrusted.safeio import load_json
from evaluator.repository.schema import schema_problems

def ap_dirs(root: Path) -> list[Path]:
    """The AP directories under ``submissions/``, sorted by name."""
    base = submissions_dir(root)
    if not base.is_dir():
        return []
    return sorted(path for path in base.iterdir() if path.is_dir() and not path.is_symlink())


def iter_entries(root: Path) -> Iterator[ModelEntry]:
    """Every checkpoint of the repository, sorted by ap_key, then in manifest order."""
    for directory in ap_dirs(root):
        manifest = directory / MANIFEST
        if manifest.is_file():
            yield from load_manifest(manifest)


def find_entry(model_key: str, root: Path | None = None) -> ModelEntry:
    """The manifest entry of *model_key*; ``APBError`` suggesting close keys if there is none."""
    root = repo_root() if root is None else root
    entries = list(iter_entries(root))
    for entry in entries:
        if entry.model_key == model_key:
            return entry
    try:
        parse_model_key(model_key)
        shape = ""
    except ValueError as error:
        shape = f" ({error})"
    close = difflib.get_close_matches(model_key, [entry.model_key for entry in entries], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; list the keys with the manifests in submissions/"
    if not shape and any(records_dir(root, _ap_key_of(model_key)).glob(f"{model_key}__*.json")):
        hint = " (it has published results, but its manifest lists no checkpoint for it)" + hint
    raise APBError(Problem(str(submissions_dir(root)), f"no checkpoint has model key {model_key!r}{shape}{hint}",
                           field="model_key"))


def _ap_key_of(name: str) -> str:
    """The ap_key in an ap_key or a model key (the seed cuts the key at its second underscore)."""
    return "_".join(name.split("_")[:2])


def load_ap_taxonomy(ap_key: str, root: Path | None = None) -> dict:
    """The taxonomy entry (``taxonomy.json``) of an AP, given its ap_key or one of its model keys."""
    root = repo_root() if root is None else root
    key = _ap_key_of(ap_key)
    known = [path.name for path in ap_dirs(root) if (path / TAXONOMY).is_file()]
    if not is_ap_key(key) or key not in known:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise APBError(Problem(str(submissions_dir(root)), f"no AP has ap_key {key!r}{hint}", field="ap_key"))
    data, _ = load_json(submissions_dir(root) / key / TAXONOMY)
    return data


def iter_taxonomies(root: Path) -> Iterator[dict]:
    """Every AP's taxonomy entry, sorted by pipeline, then the order of the taxonomy tables."""
    from evaluator.repository.taxonomy import load_vocabulary, table_sort_key, taxonomy_schema

    vocabulary = load_vocabulary(root)
    schema = taxonomy_schema(root, vocabulary)
    entries: list[dict[str, Any]] = []
    problems = []
    for directory in ap_dirs(root):
        path = directory / TAXONOMY
        if path.is_symlink():  # as apb validate refuses it
            problems.append(Problem(str(path), LINK_REFUSED))
        elif path.is_file():
            data, lines = load_json(path)
            problems += schema_problems(data, schema, lines, str(path))
            entries.append(data)
    if problems:
        raise APBError(problems)
    yield from sorted(entries, key=lambda entry: table_sort_key(entry, vocabulary))

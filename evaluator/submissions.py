"""``submissions/``: each AP's manifest read into ``ModelEntry`` objects, and its taxonomy entry."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from evaluator.errors import APBError, Problem
from evaluator.keys import STRUCTURE_KINDS, is_ap_key, model_key_maker, parse_model_key
from evaluator.paths import repo_root
from evaluator.safeio import load_json, parse_yaml_text, read_limited_bytes

SUBMISSIONS = "submissions"
MANIFEST = "manifest.yaml"
TAXONOMY = "taxonomy.json"
LOADING_FIELDS = ("format", "state_dict_key", "strip_prefix", "normalization", "variant", "rename_prefixes",
                  "normalization_buffers", "unused_tensors", "masks", "allowed_globals")


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalization ``(x - mean) / std`` for inputs in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class NormalizationBuffers:
    """The state-dict keys of normalization tensors stored in a checkpoint (checked, then dropped)."""

    mean: str
    std: str


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint of a manifest, with the manifest's ``defaults`` merged in."""

    ap_key: str
    architecture: str  # resnet18 | vgg16
    dataset: str  # CIFAR10 | SVHN
    structure: str  # weights | filters | channels
    sparsity: int
    url: str
    sha256: str | None
    imported: str | None
    format: str  # torch | safetensors
    state_dict_key: str | None
    strip_prefix: str | None
    normalization: Normalization | None
    claimed: dict | None
    manifest_path: Path
    line: int  # line of the entry in its manifest
    index: int  # position in ``models``
    variant: str = ""  # the registered architecture variant; "" = the architecture's base variant
    rename_prefixes: tuple[tuple[str, str], ...] = ()
    normalization_buffers: NormalizationBuffers | None = None
    unused_tensors: tuple[str, ...] = ()
    masks: str = "orig-mask"
    allowed_globals: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.variant:
            object.__setattr__(self, "variant", self.architecture)

    @property
    def model_key(self) -> str:
        return model_key_maker(self.ap_key, self.architecture, self.dataset, self.structure, self.sparsity)

    @property
    def structure_kind(self) -> str:
        return STRUCTURE_KINDS[self.structure]


def loading_summary(entry: ModelEntry) -> dict[str, Any]:
    """What a record and a model page say about how the checkpoint was loaded: the variant and every key rule
    the entry declares (rules left at their default are omitted)."""
    rules: dict[str, Any] = {"format": entry.format}
    if entry.state_dict_key:
        rules["state_dict_key"] = entry.state_dict_key
    if entry.strip_prefix:
        rules["strip_prefix"] = entry.strip_prefix
    if entry.rename_prefixes:
        rules["rename_prefixes"] = [{"from": old, "to": new} for old, new in entry.rename_prefixes]
    if entry.normalization_buffers:
        rules["normalization_buffers"] = {"mean": entry.normalization_buffers.mean,
                                          "std": entry.normalization_buffers.std}
    if entry.unused_tensors:
        rules["unused_tensors"] = list(entry.unused_tensors)
    rules["masks"] = entry.masks
    if entry.allowed_globals:
        rules["allowed_globals"] = list(entry.allowed_globals)
    normalization = None if entry.normalization is None else {"mean": list(entry.normalization.mean),
                                                               "std": list(entry.normalization.std)}
    return {"variant": entry.variant, "key_rules": rules, "normalization": normalization}


def submissions_dir(root: Path) -> Path:
    return root / SUBMISSIONS


def merged_entry(defaults: dict, model: dict) -> dict:
    """A model entry with the manifest's defaults filled in where it does not set a field."""
    merged = {key: value for key, value in (defaults or {}).items() if key in LOADING_FIELDS}
    merged.update(model)
    return merged


def entry_from_data(ap_key: str, data: dict, manifest_path: Path, line: int, index: int) -> ModelEntry:
    """A ``ModelEntry`` from one merged, already validated model mapping."""
    normalization = data.get("normalization", "none")
    return ModelEntry(
        ap_key=ap_key, architecture=data["architecture"], dataset=data["dataset"], structure=data["structure"],
        sparsity=int(data["sparsity"]), url=data["url"], sha256=data.get("sha256"), imported=data.get("imported"),
        format=data.get("format", "torch"), state_dict_key=data.get("state_dict_key"),
        strip_prefix=data.get("strip_prefix"),
        normalization=None if normalization == "none" else Normalization(tuple(normalization["mean"]),
                                                                          tuple(normalization["std"])),
        claimed=data.get("claimed"), manifest_path=manifest_path, line=line, index=index,
        variant=data.get("variant") or data["architecture"],
        rename_prefixes=tuple((rule["from"], rule["to"]) for rule in data.get("rename_prefixes") or ()),
        normalization_buffers=(None if not data.get("normalization_buffers") else
                               NormalizationBuffers(data["normalization_buffers"]["mean"],
                                                    data["normalization_buffers"]["std"])),
        unused_tensors=tuple(data.get("unused_tensors") or ()), masks=data.get("masks", "orig-mask"),
        allowed_globals=tuple(data.get("allowed_globals") or ()))


def load_manifest(path: Path, text: str | bytes | None = None) -> list[ModelEntry]:
    """The entries of the manifest at *path* (or of its content *text*, e.g. from ``git show``), in file order.

    Checks the schema and the rules of a single manifest (URL forms, one entry per model key); ``APBError``
    lists every problem. ``file://`` URLs are accepted here: only ``apb validate`` refuses them in submissions/.
    """
    from evaluator.validate import manifest_problems  # validate builds on this module

    raw = read_limited_bytes(path) if text is None else text
    data, lines = parse_yaml_text(raw, str(path))
    problems = manifest_problems(data, lines, str(path), allow_file_urls=True)
    if problems:
        raise APBError(problems)
    defaults = data.get("defaults") or {}
    return [entry_from_data(data["ap_key"], merged_entry(defaults, model), path, lines.line(("models", index)), index)
            for index, model in enumerate(data["models"])]


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
    if not shape and any((submissions_dir(root) / _ap_key_of(model_key) / "records").glob(f"{model_key}__*.json")):
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
    from evaluator.taxonomy import load_vocabulary, table_sort_key, taxonomy_schema
    from evaluator.validate import taxonomy_problems

    vocabulary = load_vocabulary(root)
    schema = taxonomy_schema(root, vocabulary)
    entries: list[dict[str, Any]] = []
    problems = []
    for directory in ap_dirs(root):
        path = directory / TAXONOMY
        if path.is_file():
            data, lines = load_json(path)
            problems += taxonomy_problems(data, lines, str(path), schema)
            entries.append(data)
    if problems:
        raise APBError(problems)
    yield from sorted(entries, key=lambda entry: table_sort_key(entry, vocabulary))

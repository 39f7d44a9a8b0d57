"""A manifest (``submissions/<ap>/manifest.yaml``) read into ``ModelEntry`` objects: the one reader of
manifests, with the manifest's schema and single-file rules (URL forms, variants, one entry per model key).
``apb validate``, the loader, ``apb lock`` and ``apb ci plan`` all read manifests through it."""
from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from evaluator.untrusted.egress import RefusedDestination, check_url_host
from evaluator.errors import APBError, Problem
from evaluator.registry.datasets import get_dataset
from evaluator.registry.model_keys import STRUCTURE_KINDS, model_key_maker
from evaluator.untrusted.safeio import LineMap, format_field, parse_yaml_text, read_limited_bytes
from evaluator.repository.schema import load_schema, schema_problems
from evaluator.registry import url_schemes
from evaluator.registry.variants import variant_names, variants

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_UNSAFE_URL_CHARS = re.compile(r"[\s\x00-\x1f\x7f<>\"`|\\^{}]")

LOADING_FIELDS = ("format", "state_dict_key", "strip_prefix", "normalization", "variant", "rename_prefixes",
                  "normalization_buffers", "unused_tensors", "masks", "keep_ratios", "allowed_globals")


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
    architecture: str  # a registered architecture (evaluator/models/variants.yaml)
    dataset: str  # a registered dataset (evaluator/registry/datasets.yaml)
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
    masks: str | None = None  # None: the entry states no rule, and a file holding masks or scores is refused
    allowed_globals: tuple[str, ...] = ()
    keep_ratios: str | dict[str, Any] | None = None  # "uniform", {"layers": {...}} or {"file": "<name>.json"}

    def __post_init__(self) -> None:
        if not self.variant:
            object.__setattr__(self, "variant", self.architecture)

    @functools.cached_property  # its fields are frozen
    def model_key(self) -> str:
        return model_key_maker(self.ap_key, self.architecture, self.dataset, self.structure, self.sparsity)

    @property
    def structure_kind(self) -> str:
        return STRUCTURE_KINDS[self.structure]

    @property
    def classes(self) -> int:
        """The class count of the entry's dataset: what its network's head is built for and checked against."""
        return get_dataset(self.dataset).classes


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
    if entry.masks is not None:
        rules["masks"] = entry.masks
    if entry.keep_ratios is not None:
        rules["keep_ratios"] = entry.keep_ratios
    if entry.allowed_globals:
        rules["allowed_globals"] = list(entry.allowed_globals)
    normalization = None if entry.normalization is None else {"mean": list(entry.normalization.mean),
                                                               "std": list(entry.normalization.std)}
    return {"variant": entry.variant, "key_rules": rules, "normalization": normalization}


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
        unused_tensors=tuple(data.get("unused_tensors") or ()), masks=data.get("masks"),
        allowed_globals=tuple(data.get("allowed_globals") or ()), keep_ratios=data.get("keep_ratios"))


def url_problem(url: str, *, allow_file_urls: bool) -> str | None:
    """What is wrong with a checkpoint URL, or None: the forms and rules of the URL scheme registry
    (:mod:`evaluator.registry.url_schemes`), and the egress rule for a URL that names its host."""
    if _UNSAFE_URL_CHARS.search(url):
        return "the URL contains spaces, control characters or one of < > \" ` | \\ ^ { }; percent-encode them"
    rewrite = url_schemes.rewrite_hint(url)
    if rewrite:
        return rewrite
    scheme = url_schemes.scheme_of(url)
    if scheme is None:
        name = url.split("://", 1)[0].lower() if "://" in url else ""
        return f"unsupported URL scheme {name + '://' if name else '(none)'}; use {url_schemes.accepted_prefixes()}"
    if scheme.manifests == "refused" or (scheme.manifests == "local" and not allow_file_urls):
        return url_schemes.refusal(scheme)
    fields = scheme.fields(url)
    if fields is None:
        return scheme.wrong_form
    return (_host_problem(url, tls=scheme.host == "tls") if scheme.host else None) or scheme.pin_problem(fields)


def _host_problem(url: str, *, tls: bool) -> str | None:
    """A URL that names the host a download connects to: no credentials, a valid public host, the egress rule."""
    parts = urlsplit(url)
    if "@" in parts.netloc:  # a user name or password: urllib finds them left of an @, and only there
        return "the URL carries user credentials (user:password@); publish the file at a public URL"
    try:
        port = parts.port
    except ValueError:
        return "the URL's port is not a number"
    hostname = parts.hostname
    if not hostname or not _HOST.match(hostname):
        return "the URL has no valid host name"
    try:
        check_url_host(hostname, port, tls=tls, loopback=False)
    except RefusedDestination as refused:
        return f"{refused} (the runner downloads only from public https hosts)"
    return None


def manifest_problems(data: Any, lines: LineMap, file: str, *, allow_file_urls: bool = False) -> list[Problem]:
    """The schema and single-file rules of one manifest: URL forms and one entry per model key."""
    problems = schema_problems(data, load_schema("manifest"), lines, file)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return problems
    seen: dict[str, int] = {}
    for index, model in enumerate(data["models"]):
        if not isinstance(model, dict):
            continue
        url = model.get("url")
        if isinstance(url, str):
            message = url_problem(url, allow_file_urls=allow_file_urls)
            if message:  # replaces the schema's generic complaint about the same URL
                url_field = format_field(("models", index, "url"))
                problems = [p for p in problems if p.field != url_field]
                problems.append(Problem(file, message, lines.line(("models", index, "url")),
                                        format_field(("models", index, "url"))))
        problems += _variant_problems(data.get("defaults"), model, lines, file, index)
        problems += _keep_ratio_problems(data.get("defaults"), model, lines, file, index)
        key = _model_key_or_none(data.get("ap_key"), model)
        if key is None:
            continue
        if key in seen:
            problems.append(Problem(file, f"this entry has the same model key {key} as models[{seen[key]}] "
                                          f"(line {lines.line(('models', seen[key]))}); filters and channels of the "
                                          "same architecture, dataset and sparsity share a key: keep one",
                                    lines.line(("models", index)), format_field(("models", index))))
        else:
            seen[key] = index
    return problems


def _variant_problems(defaults: Any, model: dict, lines: LineMap, file: str, index: int) -> list[Problem]:
    """A variant (the entry's own or the defaults') must belong to the entry's architecture family."""
    own = "variant" in model
    variant = model.get("variant") if own else (defaults or {}).get("variant") if isinstance(defaults, dict) else None
    architecture = model.get("architecture")
    if not isinstance(variant, str) or variant not in variants() or not isinstance(architecture, str):
        return []
    if variants()[variant].family == architecture:
        return []
    path = ("models", index, "variant") if own else ("defaults", "variant")
    return [Problem(file, f"variant {variant} is a {variants()[variant].family} variant but models[{index}] is a "
                          f"{architecture}; use one of {', '.join(variant_names(architecture))}",
                    lines.line(path), format_field(path))]


def _keep_ratio_problems(defaults: Any, model: dict, lines: LineMap, file: str, index: int) -> list[Problem]:
    """popup-scores fold only by a stated rule: the merged entry needs ``keep_ratios`` (and keep_ratios needs
    popup-scores); the file of a ``{file: ...}`` is read when the checkpoint is loaded (:func:`keep_ratio_file`)."""
    merged = merged_entry(defaults if isinstance(defaults, dict) else {}, model)
    masks, ratios = merged.get("masks"), merged.get("keep_ratios")
    where = ("models", index)
    if masks == "popup-scores" and ratios is None:
        return [Problem(file, "masks: popup-scores needs keep_ratios, the per-layer kept fractions the author's "
                              "code folds the scores with: keep_ratios: uniform (every layer keeps 1 - sparsity/100), "
                              "{layers: {<module>: <fraction>}} or {file: <name>.json}; apb never guesses them "
                              "(`apb prepare --layer-ratios FILE` folds them for you)",
                        lines.line(where), format_field((*where, "keep_ratios")))]
    if ratios is not None and masks != "popup-scores":
        return [Problem(file, f"keep_ratios is set but masks is {masks or 'not set'}: keep_ratios folds "
                              "popup-scores only; set masks: popup-scores or remove keep_ratios",
                        lines.line(where), format_field((*where, "keep_ratios")))]
    return []


def keep_ratio_file(folder: Path, name: str) -> dict[str, float]:
    """The ``{module: kept fraction}`` map of a ``keep_ratios: {file: <name>}`` beside the manifest."""
    from evaluator.untrusted.safeio import load_json

    path = folder / name
    if "/" in name or "\\" in name or not path.is_file():
        raise APBError(Problem(str(path), "keep_ratios.file: no such file beside the manifest; write the per-layer "
                                          "kept fractions there as JSON {<module>: <fraction>}"))
    data, _ = load_json(path)
    return ratio_map(data, str(path))


def ratio_map(data: Any, where: str) -> dict[str, float]:
    """*data* as ``{module name: kept fraction in (0, 1]}``; anything else names the form to write."""
    if isinstance(data, dict) and data and all(isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_.]+", key)
                                               and isinstance(value, (int, float)) and not isinstance(value, bool)
                                               and 0 < value <= 1 for key, value in data.items()):
        return {key: float(value) for key, value in data.items()}
    raise APBError(Problem(where, "per-layer keep ratios must be a JSON object {<module name>: <kept fraction in "
                                  "(0, 1]>}, e.g. {\"conv1\": 0.8, \"layer1.0.conv1\": 0.12}; a list has no layer "
                                  "names, so its order would be a guess: export the map with the author's own code "
                                  "(CONTRIBUTING.md, 'Masks and scores')", field="keep_ratios"))


def _model_key_or_none(ap_key: Any, model: dict) -> str | None:
    try:
        return model_key_maker(ap_key, model["architecture"], model["dataset"], model["structure"], model["sparsity"])
    except (KeyError, TypeError, ValueError):
        return None



@functools.lru_cache(maxsize=None)
def sparsities_by_kind() -> dict[str, tuple[int, ...]]:
    """Allowed sparsities per structure kind (US/S), from the manifest schema's ``sparsity_<structure>``."""
    defs = load_schema("manifest")["$defs"]
    kinds: dict[str, set[int]] = defaultdict(set)
    for structure, kind in STRUCTURE_KINDS.items():
        kinds[kind].update(defs[f"sparsity_{structure}"]["enum"])
    return {kind: tuple(sorted(values)) for kind, values in kinds.items()}


def sparsities_for(structure: str) -> tuple[int, ...]:
    """Allowed sparsities of a structure (weights: 90, 95, 99; filters/channels: 50, 75, 90)."""
    return tuple(load_schema("manifest")["$defs"][f"sparsity_{structure}"]["enum"])

def manifest_entries(data: Any, lines: LineMap, path: Path, *, allow_file_urls: bool = False,
                     name: str | None = None) -> tuple[list[ModelEntry], list[Problem]]:
    """The entries of one parsed manifest and its problems (schema and single-file rules); no entries while
    there are problems. Problems name the manifest *name* (default: *path*)."""
    problems = manifest_problems(data, lines, name or str(path), allow_file_urls=allow_file_urls)
    if problems:
        return [], problems
    defaults = data.get("defaults") or {}
    return [entry_from_data(data["ap_key"], merged_entry(defaults, model), path, lines.line(("models", index)), index)
            for index, model in enumerate(data["models"])], []


def load_manifest(path: Path, text: str | bytes | None = None) -> list[ModelEntry]:
    """The entries of the manifest at *path* (or of its content *text*, e.g. from ``git show``), in file order.

    Checks the schema and the rules of a single manifest (URL forms, one entry per model key); ``APBError``
    lists every problem. ``file://`` URLs are accepted here: only ``apb validate`` refuses them in submissions/.
    """
    raw = read_limited_bytes(path) if text is None else text
    data, lines = parse_yaml_text(raw, str(path))
    entries, problems = manifest_entries(data, lines, path, allow_file_urls=True)
    if problems:
        raise APBError(problems)
    return entries

"""Model keys: ``<ap_key>_<architecture code>_<dataset>_<US|S>_<sparsity>``, the codes and datasets from the
registries (``evaluator/models/variants.yaml``, ``evaluator/registry/datasets.yaml``)."""
from __future__ import annotations

import functools
import re
from typing import Iterable, NamedTuple

from evaluator.registry.datasets import dataset_names
from evaluator.registry.structures import registry as structure_registry
from evaluator.registry.variants import architectures

STRUCTURE_KINDS, _KINDS = structure_registry()  # structure -> its kind (weights -> US); kind -> StructureKind
UNSTRUCTURED = next(name for name, kind in STRUCTURE_KINDS.items() if not _KINDS[kind].structured)  # weights
STRUCTURED = tuple(name for name, kind in STRUCTURE_KINDS.items() if _KINDS[kind].structured)  # filters, channels
STRUCTURE_KIND_TITLES = {kind.name: kind.title for kind in _KINDS.values()}  # in the leaderboard's group order
STRUCTURE_KIND_NAMES = tuple(STRUCTURE_KIND_TITLES)  # ("US", "S"): a model key's structure part, in group order
AP_KEY_PATTERN = r"[A-Za-z][A-Za-z0-9]*_[A-Za-z]+[0-9]{4}[A-Za-z0-9]*"  # <Name>_<FirstAuthor><Year><FirstTitleWord>
_AP_KEY = re.compile(AP_KEY_PATTERN)


def architecture_codes() -> dict[str, str]:
    """Architecture -> its model-key code (``resnet18 -> R18``), in the registry's order."""
    return {name: architecture.code for name, architecture in architectures().items()}


def model_key_pattern(*, named: bool = True) -> str:
    """The model-key regex without anchors: with named groups (``ap``, ``arch``, ``ds``, ``kind``, ``sp``) for
    Python, or without names (ECMA-262, as a JSON Schema's ``pattern`` is written)."""
    def group(name: str, body: str, alternatives: bool) -> str:
        return f"(?P<{name}>{body})" if named else f"({body})" if alternatives else body

    def words(found: Iterable[str]) -> str:
        return "|".join(re.escape(word) for word in found)

    return "_".join([group("ap", AP_KEY_PATTERN, False), group("arch", words(architecture_codes().values()), True),
                     group("ds", words(dataset_names()), True),
                     group("kind", words(STRUCTURE_KIND_NAMES), True),
                     group("sp", "[0-9]{1,2}", False)])


def model_key_form() -> str:
    """The model key's form in words: ``<ap_key>_<R18|V16>_<CIFAR10|SVHN>_<US|S>_<sparsity>``."""
    return (f"<ap_key>_<{'|'.join(architecture_codes().values())}>_<{'|'.join(dataset_names())}>"
            f"_<{'|'.join(STRUCTURE_KIND_NAMES)}>_<sparsity>")


@functools.lru_cache(maxsize=1)
def _model_key() -> tuple[re.Pattern[str], dict[str, str]]:
    """The compiled model-key regex and code -> architecture."""
    return re.compile(rf"^{model_key_pattern()}\Z"), {code: name for name, code in architecture_codes().items()}


def is_ap_key(text: str) -> bool:
    """Whether *text* is, in full, an AP key ``<Name>_<FirstAuthor><Year><FirstTitleWord>`` (ASCII, no path)."""
    return _AP_KEY.fullmatch(text) is not None


class ModelKey(NamedTuple):
    ap_key: str
    architecture: str  # a registered architecture
    dataset: str  # a registered dataset
    structure_kind: str  # US | S
    sparsity: int


def model_key_maker(ap_method: str, architecture: str, dataset: str, structure: str, sparsity_rate: str | int) -> str:
    """The seed's key maker: ``model_key_maker(<ap_key>, <architecture>, <dataset>, 'weights', '90')``."""
    codes = architecture_codes()
    if architecture not in codes:
        raise ValueError(f"architecture: {architecture!r} is not one of {sorted(codes)}")
    if dataset not in dataset_names():
        raise ValueError(f"dataset: {dataset!r} is not one of {list(dataset_names())} (spelled exactly so)")
    if structure not in STRUCTURE_KINDS:
        raise ValueError(f"structure: {structure!r} is not one of {sorted(STRUCTURE_KINDS)} (weights = unstructured, "
                         "filters / channels = structured)")
    key = f"{ap_method}_{codes[architecture]}_{dataset}_{STRUCTURE_KINDS[structure]}_{_percent(sparsity_rate)}"
    parse_model_key(key)
    return key


def _percent(sparsity_rate: str | int) -> int:
    """A sparsity given as 90 or "90"; anything else (``"90%"``, ``0.9``) is a ValueError naming the form."""
    if isinstance(sparsity_rate, bool) or not isinstance(sparsity_rate, (int, str)) or not str(sparsity_rate).isdigit():
        raise ValueError(f"sparsity_rate: {sparsity_rate!r} is not a whole number of percent; write it as 90 or "
                         "'90' (weights: 90, 95, 99; filters/channels: 50, 75, 90)")
    return int(sparsity_rate)


def parse_model_key(key: str) -> ModelKey:
    """Split a model key into its parts; ``ValueError`` if it is not of the form above."""
    pattern, architecture_of = _model_key()
    match = pattern.match(key)
    if not match:
        raise ValueError(f"model key {key!r} is not of the form {model_key_form()}")
    return ModelKey(match["ap"], architecture_of[match["arch"]], match["ds"], match["kind"], int(match["sp"]))

"""Model keys: ``<ap_key>_<R18|V16>_<CIFAR10|SVHN>_<US|S>_<sparsity>``."""
from __future__ import annotations

import re
from typing import NamedTuple

ARCHITECTURE_CODES = {"resnet18": "R18", "vgg16": "V16"}
STRUCTURE_KINDS = {"weights": "US", "filters": "S", "channels": "S"}
DATASETS = ("CIFAR10", "SVHN")
AP_KEY_PATTERN = r"[A-Za-z][A-Za-z0-9]*_[A-Za-z]+[0-9]{4}[A-Za-z0-9]*"  # <Name>_<FirstAuthor><Year><FirstTitleWord>
_MODEL_KEY = re.compile(rf"^(?P<ap>{AP_KEY_PATTERN})_(?P<arch>R18|V16)_(?P<ds>CIFAR10|SVHN)_(?P<kind>US|S)_(?P<sp>[0-9]{{1,2}})\Z")


_AP_KEY = re.compile(AP_KEY_PATTERN)


def is_ap_key(text: str) -> bool:
    """Whether *text* is, in full, an AP key ``<Name>_<FirstAuthor><Year><FirstTitleWord>`` (ASCII, no path)."""
    return _AP_KEY.fullmatch(text) is not None


class ModelKey(NamedTuple):
    ap_key: str
    architecture: str  # resnet18 | vgg16
    dataset: str  # CIFAR10 | SVHN
    structure_kind: str  # US | S
    sparsity: int


def model_key_maker(ap_method: str, architecture: str, dataset: str, structure: str, sparsity_rate: str | int) -> str:
    """The seed's key maker: ``model_key_maker('HYDRA_Sehwag2020Hydra', 'resnet18', 'CIFAR10', 'weights', '90')``."""
    if architecture not in ARCHITECTURE_CODES:
        raise ValueError(f"architecture: {architecture!r} is not one of {sorted(ARCHITECTURE_CODES)}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset: {dataset!r} is not one of {list(DATASETS)} (spelled exactly so)")
    if structure not in STRUCTURE_KINDS:
        raise ValueError(f"structure: {structure!r} is not one of {sorted(STRUCTURE_KINDS)} (weights = unstructured, "
                         "filters / channels = structured)")
    key = f"{ap_method}_{ARCHITECTURE_CODES[architecture]}_{dataset}_{STRUCTURE_KINDS[structure]}_{_percent(sparsity_rate)}"
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
    match = _MODEL_KEY.match(key)
    if not match:
        raise ValueError(f"model key {key!r} is not of the form <ap_key>_<R18|V16>_<CIFAR10|SVHN>_<US|S>_<sparsity>")
    architecture = {code: name for name, code in ARCHITECTURE_CODES.items()}[match["arch"]]
    return ModelKey(match["ap"], architecture, match["ds"], match["kind"], int(match["sp"]))

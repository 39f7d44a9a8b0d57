"""The closed registry of datasets (``evaluator/registry/datasets.yaml``); imports no torch.

Each dataset's name is a manifest entry's ``dataset`` and a model key's dataset part; its class count sizes the
networks' heads and is what ``apb check`` expects them to output; its torchvision reader parses the test file.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR

DATASETS_FILE = PACKAGE_DIR / "registry" / "datasets.yaml"
FORMATS = ("cifar-pickle", "svhn-mat")  # the readers of evaluator/run/datasets.py


@dataclass(frozen=True)
class Dataset:
    """One dataset: its name, class count, test-split size and how its test file is read."""

    name: str
    classes: int
    test_size: int
    torchvision_class: str  # a class of torchvision.datasets
    split: tuple[tuple[str, Any], ...]  # the keyword arguments that pick its test split
    format: str  # one of FORMATS

    @property
    def split_arguments(self) -> dict[str, Any]:
        return dict(self.split)


def _parse(name: str, spec: Any) -> Dataset:
    """One entry of the file; ``ValueError`` naming the field otherwise."""
    if not isinstance(spec, dict):
        raise ValueError("must be a mapping with classes, test_size, torchvision and format")
    for field_name in ("classes", "test_size"):
        value = spec.get(field_name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field_name}: must be a positive integer, got {value!r}")
    reader = spec.get("torchvision")
    if not isinstance(reader, dict) or not isinstance(reader.get("class"), str) \
            or not isinstance(reader.get("split"), dict):
        raise ValueError("torchvision: must be {class: <torchvision.datasets class>, split: {<argument>: <value>}}")
    if spec.get("format") not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {spec.get('format')!r}")
    return Dataset(name=name, classes=spec["classes"], test_size=spec["test_size"],
                   torchvision_class=reader["class"], split=tuple(reader["split"].items()), format=spec["format"])


@functools.lru_cache(maxsize=1)
def datasets() -> dict[str, Dataset]:
    """Every registered dataset by name, in file order."""
    from evaluator.registry.entries import parse_section, read_registry

    data, lines = read_registry(DATASETS_FILE)
    problems: list[Problem] = []
    found = parse_section(DATASETS_FILE, data, lines, "datasets", _parse, problems)
    if not found and not problems:
        problems.append(Problem(str(DATASETS_FILE), "datasets: lists no dataset; add one", 1))
    if problems:
        raise APBError(problems)
    return found


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, in file order (the leaderboard's order)."""
    return tuple(datasets())


def get_dataset(name: str) -> Dataset:
    """The registered dataset *name*; ``ValueError`` listing the known ones otherwise."""
    from evaluator.registry.entries import lookup

    return lookup(datasets(), "dataset", name, DATASETS_FILE)

"""The closed registry of pruning structures and their kinds (``evaluator/registry/structures.yaml``)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR

STRUCTURES_FILE = PACKAGE_DIR / "registry" / "structures.yaml"


@dataclass(frozen=True)
class StructureKind:
    """A model key's structure part (``US``, ``S``): the leaderboard group's title and whether it is structured."""

    name: str
    title: str
    structured: bool


def _kind(name: str, spec: Any) -> StructureKind:
    if not isinstance(spec, dict) or not isinstance(spec.get("title"), str) or \
            not isinstance(spec.get("structured"), bool):
        raise ValueError("must be a mapping {title: <group title>, structured: true | false}")
    return StructureKind(name, spec["title"], spec["structured"])


def _structure(name: str, spec: Any) -> str:
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ValueError("must be a mapping {kind: <a kind of `kinds`>}")
    return str(spec["kind"])


@functools.lru_cache(maxsize=1)
def registry() -> tuple[dict[str, str], dict[str, StructureKind]]:
    """(structure -> its kind, kind -> :class:`StructureKind`), each in file order."""
    from evaluator.registry.entries import parse_section, read_registry

    data, lines = read_registry(STRUCTURES_FILE)
    problems: list[Problem] = []
    kinds = parse_section(STRUCTURES_FILE, data, lines, "kinds", _kind, problems)
    structures = parse_section(STRUCTURES_FILE, data, lines, "structures", _structure, problems)
    problems += [Problem(str(STRUCTURES_FILE), f"structures.{name}.kind: {kind!r} is not one of {', '.join(kinds)}",
                         lines.line(("structures", name))) for name, kind in structures.items() if kind not in kinds]
    if not structures or not kinds:
        problems.append(Problem(str(STRUCTURES_FILE), "structures and kinds: each lists at least one", 1))
    if problems:
        raise APBError(problems)
    return structures, kinds

"""One reader of a registry file's sections: every entry parsed in file order, each mistake a problem that names
the file, the line and the entry (``datasets.SVHN: format: must be one of ...``), all of them reported at once;
and the lookup of a registered name."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from evaluator.errors import Problem
from evaluator.paths import PACKAGE_DIR
from evaluator.untrusted.safeio import LineMap, load_yaml

T = TypeVar("T")


def read_registry(path: Path) -> tuple[dict, LineMap]:
    """A registry file's mapping (empty when the file holds none) and the line of every value."""
    data, lines = load_yaml(path)
    return (data if isinstance(data, dict) else {}), lines


def parse_section(path: Path, data: dict, lines: LineMap, section: str, parse: Callable[[str, Any], T],
                  problems: list[Problem]) -> dict[str, T]:
    """Every entry of *section*, by name in file order, as *parse* (name, spec) makes it; a ``ValueError`` it
    raises (naming the field: ``format: must be ...``) becomes a problem of that entry, appended to *problems*."""
    found: dict[str, T] = {}
    for name, spec in (data.get(section) or {}).items():
        try:
            found[str(name)] = parse(str(name), spec)
        except ValueError as error:
            problems.append(Problem(str(path), f"{section}.{name}: {error}", lines.line((section, name))))
    return found


def lookup(known: Mapping[str, T], kind: str, name: str, path: Path) -> T:
    """The registered *kind* (``dataset``, ``norm``, ...) called *name*; ``ValueError`` listing the known ones."""
    if name not in known:
        shown = path.relative_to(PACKAGE_DIR.parent) if path.is_relative_to(PACKAGE_DIR.parent) else path
        raise ValueError(f"{kind} {name!r} is not one of {', '.join(known)} (spelled exactly so; the list is {shown})")
    return known[name]

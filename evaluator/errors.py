"""Errors that tell the user which file, line and field is wrong and what to do about it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: printed as ``file:line: field: message``."""

    file: str
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class APBError(Exception):
    """A failure the user can fix; carries one or more problems."""

    def __init__(self, problems: Problem | list[Problem] | str, *, file: str | Path = "apb") -> None:
        if isinstance(problems, str):
            problems = [Problem(str(file), problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

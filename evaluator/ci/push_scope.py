"""What the leaderboard bot may push, checked on the staged diff before it commits (``apb ci check-diff``).

The commit job holds the only write token. Whatever it stages must be records and generated files:
``submissions/<ap_key>/records/…``, ``leaderboard/…`` and ``taxonomy/README.md``, each a regular
non-executable file (mode 100644) added, modified or deleted. Anything else is refused by name: a path
outside those folders (a manifest, a workflow, code), a symlink, a submodule, an executable bit, a mode or
type change. The diff is read with ``git diff --raw -z --no-renames``, so a rename is its two halves and the
half outside the scope is refused too.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import APBError, Problem

REGULAR_FILE = "100644"
MODE_NAMES = {"120000": "a symlink", "160000": "a submodule", "100755": "an executable file", "040000": "a tree"}
SCOPE = ("submissions/<ap_key>/records/**", "leaderboard/**", "taxonomy/README.md")
_IN_SCOPE = re.compile(r"(?:submissions/[^/]+/records/[^/].*|leaderboard/[^/].*|taxonomy/README\.md)", re.DOTALL)
_RAW = re.compile(r":(\d{6}) (\d{6}) [0-9a-f]+ [0-9a-f]+ ([A-Z])\d*")


@dataclass(frozen=True)
class Change:
    """One entry of ``git diff --raw``: status letter (A, M, D, T, …), modes before and after, path."""

    status: str
    old_mode: str
    new_mode: str
    path: str


def parse_raw_diff(raw: bytes) -> list[Change]:
    """The entries of ``git diff --raw -z --no-renames`` output (``:<mode> <mode> <sha> <sha> <status>\\0<path>\\0``)."""
    fields = raw.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    if len(fields) % 2:
        raise APBError(Problem("git diff", "unexpected --raw -z output (an odd number of fields)"))
    changes = []
    for head, path in zip(fields[::2], fields[1::2]):
        match = _RAW.fullmatch(head.decode("ascii", "replace"))
        if not match:
            raise APBError(Problem("git diff", f"unexpected --raw entry {head[:80]!r}; only --no-renames output is read"))
        changes.append(Change(match[3], match[1], match[2], path.decode("utf-8", "surrogateescape")))
    return changes


def in_scope(path: str) -> bool:
    return bool(_IN_SCOPE.fullmatch(path))


def refusal(change: Change) -> str | None:
    """Why *change* may not be pushed by the bot, or None when it may."""
    if not in_scope(change.path):
        return f"outside what the bot may push ({', '.join(SCOPE)})"
    if change.status == "D":
        return None
    if change.status not in ("A", "M"):
        return f"status {change.status} (a type change, an unmerged path or a copy): only additions, edits, deletions"
    if change.new_mode != REGULAR_FILE:
        return f"{MODE_NAMES.get(change.new_mode, 'mode ' + change.new_mode)}: only regular files (mode {REGULAR_FILE})"
    if change.status == "M" and change.old_mode != change.new_mode:
        return f"a mode change {change.old_mode} -> {change.new_mode}"
    return None


def read_diff(root: Path, against: str | None = None) -> list[Change]:
    """The staged changes of the checkout at *root* (``git diff --cached``), or those from *against* to HEAD."""
    command = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "diff", "--raw", "-z",
               "--no-renames", "--no-abbrev", "--no-ext-diff", "--no-textconv"]
    command += [against, "HEAD"] if against else ["--cached"]
    result = subprocess.run(command, cwd=root, capture_output=True)
    if result.returncode != 0:
        raise APBError(Problem("git diff", f"failed in {root}: {result.stderr.decode(errors='replace').strip()}"))
    return parse_raw_diff(result.stdout)


def check_push_scope(changes: list[Change]) -> list[Problem]:
    """One problem per change the bot may not push (the path printed with repr(), so no name can fake a line)."""
    return [Problem(repr(change.path), reason) for change in changes if (reason := refusal(change))]

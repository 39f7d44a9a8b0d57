"""``apb leaderboard [--root DIR] [--out DIR] [--check]``: render leaderboard/, taxonomy/README.md and the
figures from the records; ``--check`` writes nothing and fails if any generated file is stale, missing or
extra.

Files are compared with what is on disk as they are rendered and written at once: a new file in its place
(removed again if the render fails), a changed one into a staging folder inside the output folder, moved
into place only after the whole render succeeded. So a render that fails on bad data changes nothing, and
memory does not grow with the number of files."""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Iterator
from pathlib import Path, PurePosixPath

from evaluator.errors import APBError, Problem
from evaluator.spill import MAX_PARAMETERS, Spill

FIX = "run `apb leaderboard` and commit the result (generated files are never edited by hand)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="repository to read (default: the repository around the current directory)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the generated files under this folder instead of the repository itself")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each generated file that is stale, missing or extra")


def generated_on_disk(out: Path) -> Iterator[str]:
    """Files under the generated folders of *out*, as posix paths relative to it, one folder at a time; hidden
    temporary files and links to folders included."""
    from evaluator.render import GENERATED_DIRS

    for folder in GENERATED_DIRS:
        for directory, folders, files in os.walk(out / folder):
            relative = Path(directory).relative_to(out).as_posix()
            yield from (f"{relative}/{name}" for name in files)
            yield from (f"{relative}/{name}" for name in folders if os.path.islink(os.path.join(directory, name)))


UNCHANGED, STALE, MISSING = 0, 1, 2  # what a rendered file was on disk
NAMES_BATCH = MAX_PARAMETERS  # rendered names written to the database per statement (one IN query each)
FILES_SCHEMA = ("CREATE TABLE rendered (path TEXT PRIMARY KEY, state INTEGER) WITHOUT ROWID;\n"
                "CREATE TABLE on_disk (path TEXT);")


class GeneratedFiles:
    """A render sink that compares each file with *out*; unless *check*, changed files are staged. The names
    of the rendered files (48,000 at 1,000 APs) are kept on disk, in a :class:`~evaluator.spill.Spill`
    database; close the sink (``commit``, ``undo`` or ``close``) to delete it."""

    def __init__(self, out: Path, check: bool) -> None:
        self.out, self.check = out, check
        self._spill = Spill(FILES_SCHEMA)
        self._db = self._spill.db
        self.counts = {UNCHANGED: 0, STALE: 0, MISSING: 0}
        self._pending: dict[str, int] = {}  # names rendered but not yet written to the database
        self.staging = None if check else Path(tempfile.mkdtemp(prefix=".apb-leaderboard-", dir=out))
        self.folders: set[str] = set()
        self.created_folders: list[str] = []  # folders made for new files, removed again if the render fails
        self.new_folders: set[str] = set()  # the same, as a set

    @property
    def rendered(self) -> int:
        """How many files were rendered."""
        return sum(self.counts.values())

    def _flush(self) -> None:
        """Write the pending names, refusing one that was rendered before."""
        names = list(self._pending)
        twice = self._db.execute(f"SELECT path FROM rendered WHERE path IN ({', '.join('?' * len(names))})",
                                 names).fetchone() if names else None
        self._db.executemany("INSERT OR IGNORE INTO rendered VALUES (?, ?)", self._pending.items())
        self._pending = {}
        if twice:
            raise AssertionError(f"{twice[0]} rendered twice")

    def _query(self, query: str, parameters: tuple = ()) -> sqlite3.Cursor:
        self._flush()
        return self._db.execute(query, parameters)

    def _paths(self, state: int) -> list[str]:
        return [path for (path,) in self._query("SELECT path FROM rendered WHERE state = ? ORDER BY path", (state,))]

    def __call__(self, path: PurePosixPath, data: bytes) -> None:
        relative = str(path)
        target = os.path.join(self.out, relative)
        destination: str | None = None
        if os.path.dirname(target) in self.new_folders:  # a folder this run made holds only what it wrote
            state, destination = MISSING, target
        elif os.path.isfile(target) and not os.path.islink(target):
            if os.path.getsize(target) == len(data) and Path(target).read_bytes() == data:
                state = UNCHANGED
            else:
                state = STALE
                destination = None if self.staging is None else os.path.join(self.staging, relative)
        else:
            state = MISSING
            fresh = not os.path.lexists(target)  # a new file goes straight to its place
            destination = None if self.staging is None else target if fresh else os.path.join(self.staging, relative)
        if relative in self._pending:
            raise AssertionError(f"{relative} rendered twice")
        self._pending[relative] = state
        if len(self._pending) >= NAMES_BATCH:
            self._flush()
        self.counts[state] += 1
        if destination is not None:
            self._write(destination, data)

    def _write(self, path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        if folder not in self.folders:
            missing = []
            parent = folder
            while not os.path.isdir(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            os.makedirs(folder, exist_ok=True)
            self.created_folders += reversed(missing)
            self.new_folders.update(missing)
            self.folders.add(folder)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # fewer system calls than open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
        finally:
            os.close(descriptor)

    def extra(self) -> list[str]:
        """Generated files on disk that this render did not render, sorted."""
        self._query("DELETE FROM on_disk")
        self._db.executemany("INSERT INTO on_disk VALUES (?)", ((path,) for path in generated_on_disk(self.out)))
        return [path for (path,) in self._db.execute(
            "SELECT path FROM on_disk WHERE path NOT IN (SELECT path FROM rendered) ORDER BY path")]

    def problems(self) -> list[Problem]:
        return ([Problem(p, f"stale: differs from what the data renders; {FIX}") for p in self._paths(STALE)]
                + [Problem(p, f"missing: the data renders this file; {FIX}") for p in self._paths(MISSING)]
                + [Problem(p, f"extra: the data no longer renders this file; {FIX}") for p in self.extra()])

    def commit(self) -> tuple[int, int, int]:
        """Move the staged files into place and remove generated files no longer rendered;
        returns ``(written, removed, unchanged)``."""
        assert self.staging is not None
        folders: set[str] = set()
        for (relative,) in self._query("SELECT path FROM rendered WHERE state != ?", (UNCHANGED,)):
            staged = os.path.join(self.staging, relative)
            if not os.path.lexists(staged):
                continue  # a new file, written in place
            target = os.path.join(self.out, relative)
            if os.path.dirname(target) not in folders:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                folders.add(os.path.dirname(target))
            if os.path.islink(target) or os.path.isdir(target):
                os.unlink(target) if os.path.islink(target) else shutil.rmtree(target)
            os.replace(staged, target)
        extra = self.extra()
        for relative in extra:
            (self.out / relative).unlink()
        for folder in sorted({(self.out / p).parent for p in extra}, key=lambda p: len(p.parts), reverse=True):
            while folder != self.out and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        self.discard()
        return self.counts[STALE] + self.counts[MISSING], len(extra), self.counts[UNCHANGED]

    def discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.close()

    def close(self) -> None:
        self._spill.close()

    def undo(self) -> None:
        """After a failed render: remove the new files written in place and the folders made for them."""
        if self.staging is None:
            self.close()
            return
        staging = str(self.staging)
        for (relative,) in self._query("SELECT path FROM rendered WHERE state = ?", (MISSING,)):
            target = os.path.join(self.out, relative)
            if not os.path.lexists(os.path.join(staging, relative)) and os.path.isfile(target):
                os.unlink(target)
        for folder in reversed(self.created_folders):
            if not folder.startswith(staging) and os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        self.discard()


def run(args: argparse.Namespace) -> int:
    from evaluator.paths import repo_root, submissions_dir
    from evaluator.render import render_into

    root = (args.root or repo_root()).resolve()
    if not submissions_dir(root).is_dir():
        raise APBError(Problem(str(root), "no submissions/ folder here; pass the repository with --root"))
    out = (args.out or root).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files = GeneratedFiles(out, args.check)
    try:
        render_into(root, files)
    except BaseException:
        files.undo()
        raise
    if args.check:
        try:
            problems = files.problems()
        finally:
            files.close()
        if problems:
            raise APBError(problems)
        print(f"apb leaderboard --check: {files.rendered} generated files are up to date", file=sys.stderr)
        return 0
    written, removed, unchanged = files.commit()
    print(f"apb leaderboard: wrote {written}, removed {removed}, unchanged {unchanged} files under {out} "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0

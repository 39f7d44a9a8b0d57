"""``apb leaderboard [--root DIR] [--out DIR] [--check]``: render leaderboard/, taxonomy/README.md and the
security curves from the records; ``--check`` writes nothing and fails if any generated file is stale,
missing or extra."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evaluator.errors import APBError, Problem


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="repository to read (default: the repository around the current directory)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the generated files under this folder instead of the repository itself")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each generated file that is stale, missing or extra")


def generated_on_disk(out: Path) -> set[Path]:
    """Files under the generated folders of *out* (relative to it); hidden temporary files included."""
    from evaluator.render import GENERATED_DIRS

    found = set()
    for folder in GENERATED_DIRS:
        base = out / folder
        if base.is_dir():
            found.update(p.relative_to(out) for p in base.rglob("*") if p.is_file() or p.is_symlink())
    return found


def compare(out: Path, rendered: dict[Path, bytes]) -> tuple[list[Path], list[Path], list[Path]]:
    """``(stale, missing, extra)``: files whose bytes differ, files not there, files no longer generated."""
    stale, missing = [], []
    for relative, data in sorted(rendered.items()):
        path = out / relative
        if not path.is_file():
            missing.append(relative)
        elif path.read_bytes() != data:
            stale.append(relative)
    extra = sorted(generated_on_disk(out) - set(rendered))
    return stale, missing, extra


def check_problems(out: Path, rendered: dict[Path, bytes]) -> list[Problem]:
    stale, missing, extra = compare(out, rendered)
    fix = "run `apb leaderboard` and commit the result (generated files are never edited by hand)"
    return ([Problem(p.as_posix(), f"stale: differs from what the data renders; {fix}") for p in stale]
            + [Problem(p.as_posix(), f"missing: the data renders this file; {fix}") for p in missing]
            + [Problem(p.as_posix(), f"extra: the data no longer renders this file; {fix}") for p in extra])


def write(out: Path, rendered: dict[Path, bytes]) -> tuple[int, int, int]:
    """Write changed files atomically and remove generated files that are no longer rendered;
    returns ``(written, removed, unchanged)``."""
    from evaluator.records import atomic_write_bytes

    stale, missing, extra = compare(out, rendered)
    for relative in [*stale, *missing]:
        atomic_write_bytes(out / relative, rendered[relative])
    for relative in extra:
        (out / relative).unlink()
    for folder in sorted({(out / p).parent for p in extra}, key=lambda p: len(p.parts), reverse=True):
        while folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return len(stale) + len(missing), len(extra), len(rendered) - len(stale) - len(missing)


def run(args: argparse.Namespace) -> int:
    from evaluator.paths import repo_root
    from evaluator.render import render_all

    root = (args.root or repo_root()).resolve()
    if not (root / "submissions").is_dir():
        raise APBError(Problem(str(root), "no submissions/ folder here; pass the repository with --root"))
    out = (args.out or root).resolve()
    started = time.perf_counter()
    rendered = render_all(root)
    if args.check:
        problems = check_problems(out, rendered)
        if problems:
            raise APBError(problems)
        print(f"apb leaderboard --check: {len(rendered)} generated files are up to date", file=sys.stderr)
        return 0
    written, removed, unchanged = write(out, rendered)
    print(f"apb leaderboard: wrote {written}, removed {removed}, unchanged {unchanged} files under {out} "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0

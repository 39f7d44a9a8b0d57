"""``apb docs [--root DIR] [--check]``: write the generated documentation pages (docs/flags.md, the flag
catalogue of evaluator/flags.yaml); ``--check`` writes nothing and fails if a page is stale or missing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stale or missing page")


def run(args: argparse.Namespace) -> int:
    from evaluator.errors import APBError, Problem
    from evaluator.paths import repo_root
    from evaluator.record.flags import FLAGS_PAGE, flags_markdown
    from evaluator.untrusted.safeio import atomic_write_bytes

    root = (args.root or repo_root()).resolve()
    pages = {FLAGS_PAGE: flags_markdown().encode("utf-8")}
    stale = [name for name, data in pages.items()
             if not (root / name).is_file() or (root / name).read_bytes() != data]
    if args.check:
        if stale:
            raise APBError([Problem(name, "is stale or missing; run `apb docs` and commit the result (generated "
                                          "pages are never edited by hand)") for name in stale])
        print(f"apb docs --check: {len(pages)} generated pages are up to date", file=sys.stderr)
        return 0
    for name in stale:
        atomic_write_bytes(root / name, pages[name])
    print(f"apb docs: wrote {len(stale)}, unchanged {len(pages) - len(stale)} pages under {root}", file=sys.stderr)
    return 0

"""``apb site --out DIR [--root DIR] [--source-url URL]``: the static, self-contained site (sortable and
searchable tables, curve comparison, analysis, downloads) built from the same records as the leaderboard."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evaluator.errors import APBError, Problem


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to write the site into (new, empty, or written by an earlier apb site)")
    parser.add_argument("--root", type=Path, default=None,
                        help="repository to read (default: the repository around the current directory)")
    parser.add_argument("--source-url", default=None,
                        help="where the repository's files are browsable (e.g. https://github.com/OWNER/REPO/blob/"
                             "COMMIT); model keys of evaluated records link to their model pages there (default: "
                             "the default branch of the repository named in evaluator/registry/home.yaml)")


def run(args: argparse.Namespace) -> int:
    from evaluator.paths import repo_root, submissions_dir
    from evaluator.registry.home import home
    from evaluator.site import build_site

    root = (args.root or repo_root()).resolve()
    if not submissions_dir(root).is_dir():
        raise APBError(Problem(str(root), "no submissions/ folder here; pass the repository with --root"))
    if args.source_url is not None and not args.source_url.startswith("https://"):
        raise APBError(Problem("--source-url", "must be an https:// URL", field="source_url"))
    started = time.perf_counter()
    source_url = (args.source_url or f"{home().repository_url}/blob/HEAD").rstrip("/")
    counts = build_site(root, args.out.resolve(), source_url=source_url)
    print(f"apb site: {counts['records']} records of {counts['aps']} APs ({counts['curves']} with curves) written to "
          f"{args.out} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0

"""``apb import-distances FILE... [--root DIR] [--model-key KEY] [--first-sample N]``: attach the original
benchmark's HO-FMN distance files (``<model_key>.pickle``) to the published records as per-sample sidecars of
the ``published-2024`` protocol, marked with the test-set range they cover (see evaluator/record/import_distances.py
for the format and why reading it runs no code from the file)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluator.errors import APBError, Problem


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", type=Path, nargs="+", help="distance files, named <model_key>.pickle")
    parser.add_argument("--root", type=Path, default=None,
                        help="repository to write into (default: the repository around the current directory)")
    parser.add_argument("--model-key", default=None,
                        help="the model key of a single file whose name is not <model_key>.pickle")
    parser.add_argument("--first-sample", type=int, default=0,
                        help="test-set position of the first distance (default 0: the first test samples)")


def run(args: argparse.Namespace) -> int:
    from evaluator.record.import_distances import import_distances, prepare
    from evaluator.paths import repo_root

    root = (args.root or repo_root()).resolve()
    if args.model_key and len(args.files) != 1:
        raise APBError(Problem("--model-key", "names the model of one file; pass one file with it"))
    if args.first_sample < 0:
        raise APBError(Problem("--first-sample", "must be 0 or more"))
    missing = [Problem(str(path), "no such file") for path in args.files if not path.is_file()]
    if missing:
        raise APBError(missing)
    items = [prepare(path, args.model_key, args.first_sample) for path in args.files]
    for path in import_distances(root, items):
        print(f"apb import-distances: {path.relative_to(root)}", file=sys.stderr)
    print(f"apb import-distances: {len(items)} files imported; run `apb leaderboard` to draw their curves",
          file=sys.stderr)
    return 0

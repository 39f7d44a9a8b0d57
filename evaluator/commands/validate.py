"""``apb validate [PATH…]``: check every schema and cross-file rule; print ``file:line: field: message``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from evaluator.paths import repo_root


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="files or directories to report on (default: the whole repository); the whole "
                             "repository is still read so that cross-file rules apply")
    parser.add_argument("--root", type=Path, default=None,
                        help="the benchmark repository (default: $APB_ROOT or the nearest parent with submissions/)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument("--allow-file-urls", action="store_true",
                        help="accept file:// checkpoint URLs (local experiments and the demo only)")


def run(args: argparse.Namespace) -> int:
    """Print every problem (or a one-line summary); exit 1 if there is any problem."""
    from evaluator.repository.validate import select_problems, validate_repository

    root = (args.root or repo_root()).resolve()
    report = validate_repository(root, allow_file_urls=args.allow_file_urls)
    problems = select_problems(root, report.problems, args.paths) if args.paths else report.problems
    if args.format == "json":
        print(json.dumps({"ok": not problems, "problems": [p.to_dict() for p in problems],
                          "summary": report.summary()}, indent=2))
    else:
        for problem in problems:
            print(problem)
        print(report.summary_line(len(problems)))
    return 1 if problems else 0

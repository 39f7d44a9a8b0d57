"""``apb new <ap_key> [--root]``: scaffold ``submissions/<ap_key>/`` with ``taxonomy.json`` and a commented
``manifest.yaml``; refuses to overwrite either file."""
from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ap_key", help="<Name>_<FirstAuthor><Year><FirstTitleWord>, e.g. MyMethod_Doe2025Robust")
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")


def run(args: argparse.Namespace) -> int:
    from evaluator.paths import repo_root
    from evaluator.repository.scaffold import write_scaffold

    for path in write_scaffold(args.root or repo_root(), args.ap_key):
        print(f"wrote {path}")
    print("next: replace every TODO in taxonomy.json (words: taxonomy/vocabulary.yaml), then add checkpoints with "
          f"`apb prepare <checkpoint> --architecture ... --dataset ... --structure ... --sparsity ... --ap {args.ap_key}`")
    return 0

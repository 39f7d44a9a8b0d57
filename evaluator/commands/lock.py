"""``apb lock [AP...] [--root] [--cache-dir]``: download the checkpoints whose manifest entry has no sha256
and write the pin into the manifest, leaving the rest of the file as it was."""
from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ap_keys", nargs="*", metavar="AP", help="ap_keys whose manifests to lock (default: all)")
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="checkpoint cache (default: $APB_CACHE_DIR or the user cache dir)")


def run(args: argparse.Namespace) -> int:
    from evaluator.errors import APBError
    from evaluator.checkpoint.lock import lock_manifests
    from evaluator.paths import repo_root

    root = args.root if args.root is not None else repo_root()
    result = lock_manifests(root, args.ap_keys, cache_dir=args.cache_dir)
    for item in result.pinned:
        print(f"pinned {item.model_key}: sha256 {item.sha256} in {item.manifest}")
    if result.problems:
        raise APBError(result.problems)
    if not result.pinned:
        print("nothing to pin: every entry already has a sha256")
    return 0

"""``apb merge <shard output>... --out DIR``: combine the shards of one evaluation into the record (and
per-sample sidecar) a single run gives. Refuses shards of different models, checkpoints or protocols,
overlapping shards and incomplete coverage."""
from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", type=Path, metavar="shard",
                        help="shard outputs written by `apb evaluate --shard i/n` (folders or their shard.json)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the merged record into")
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")
    parser.add_argument("--protocol", default=None,
                        help="protocol id or file the shards ran with (default: the id they name)")


def run(args: argparse.Namespace) -> int:
    from evaluator.run.shards import merge_shards

    path = merge_shards(args.shards, args.out, root=args.root, protocol=args.protocol)
    print(f"merged {len(args.shards)} shards into {path}")
    return 0

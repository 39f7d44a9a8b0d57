"""``apb demo [--out DIR]``: build a small example submission offline, then validate, check, evaluate (smoke
protocol) and render its leaderboard and security curves into DIR, printing where each file is."""
from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-out"),
                        help="folder to build the demo in (default: ./demo-out; emptied first if an earlier demo "
                             "made it, refused if it holds anything else)")
    parser.add_argument("--models", type=int, default=None, metavar="N",
                        help="evaluate only the first N of the example's 3 checkpoints (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the example's checkpoints and data (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args: argparse.Namespace) -> int:
    from evaluator.demo import run_demo

    run_demo(args.out, models=args.models, seed=args.seed, device=args.device)
    return 0

"""``apb evaluate <model_key>... [--device] [--protocol] [--n N] [--shard i/n] [--data-dir] [--download] [--out] [--root]
[--cache-dir] [--work-dir] [--batch-size]``: fetch -> check -> clean -> AutoAttack -> HO-FMN -> record.

A killed run resumes from its last finished chunk when started again with the same arguments."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_keys", nargs="+", metavar="model_key", help="model keys to evaluate")
    from evaluator.protocol import DEFAULT_PROTOCOL

    parser.add_argument("--protocol", default=DEFAULT_PROTOCOL,
                        help=f"protocol id (evaluator/protocols/<id>.yaml) or path (default: {DEFAULT_PROTOCOL})")
    parser.add_argument("--n", type=int, default=None, metavar="N",
                        help="evaluate only the first N test samples (any protocol): a trial run, never a leaderboard "
                             "run (its protocol id becomes <protocol>-n<N>; records go to --out, default ./out)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--shard", default=None, metavar="i/n",
                        help="evaluate only shard i of n (chunks with chunk %% n == i-1) and write a shard output "
                             "for `apb merge`")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder holding cifar-10-batches-py/ or test_32x32.mat (default: ./data)")
    parser.add_argument("--download", action="store_true", help="download a missing test set (official files)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where records (or shard outputs) go (default: submissions/<ap_key>/records/ for a "
                             "leaderboard protocol, else ./out)")
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="checkpoint cache (default: $APB_CACHE_DIR or the user cache dir)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder of the resumable per-chunk results (default: <cache-dir>/work)")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="batch of plain forward passes (check, clean); the attacks' batches are the protocol's")


def run(args: argparse.Namespace) -> int:
    from evaluator.device import checked_device
    from evaluator.run.evaluate import CheckFailed, evaluate_model
    from evaluator.run.shards import parse_shard

    shard = parse_shard(args.shard) if args.shard else None
    device = checked_device(args.device)
    protocol = args.protocol
    if args.n is not None:
        from evaluator.errors import APBError, Problem
        from evaluator.protocol import load_protocol, on_first_samples

        if shard is not None:
            raise APBError(Problem("--n", "a trial run on the first N samples is not sharded: leave out --shard"))

        protocol = on_first_samples(load_protocol(args.protocol).require_evaluable(), args.n)
        print(f"protocol {protocol.id}: {args.protocol} on the first {args.n} samples; NOT a leaderboard run (its "
              "records are never accepted under submissions/)", file=sys.stderr)
    for model_key in args.model_keys:
        try:
            outcome = evaluate_model(model_key, protocol=protocol, root=args.root, data_dir=args.data_dir,
                                     device=device, out_dir=args.out, cache_dir=args.cache_dir,
                                     work_root=args.work_dir, shard=shard, download=args.download,
                                     batch_size=args.batch_size)
        except CheckFailed as failure:
            print(failure.report.render_text())
            print(f"error: {model_key}: the check failed; nothing was evaluated", file=sys.stderr)
            return 1
        print(f"{outcome.model_key}: {outcome.status}: {outcome.path}")
        if outcome.status == "evaluated":  # a skipped model's record was written (and printed) by an earlier run
            print_numbers(outcome.path)
    return 0


def print_numbers(path: Path | None) -> None:
    """The numbers of the record at *path* (nothing for a shard output, which has no numbers yet)."""
    from evaluator.record.records import read_record
    from evaluator.record.summary import record_numbers

    if path is None or path.suffix != ".json" or not path.is_file():
        return
    record = read_record(path)
    print(f"{record['model_key']} under protocol {record['protocol']} ({record['n_samples']} samples, percent):")
    print("\n".join(record_numbers(record)))

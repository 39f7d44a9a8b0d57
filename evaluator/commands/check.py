"""``apb check <model_key> [--root] [--data-dir] [--n] [--device] [--cache-dir] [--download] [--batch-size]
[--format text|json]``: fetch, verify and load one checkpoint, then report compliance, output sanity,
sparsity (per layer) and clean accuracy. No attacks. Exit 1 when the check fails."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_key", help="model key of a manifest entry, e.g. HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90")
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder holding cifar-10-batches-py/ or test_32x32.mat (default: ./data)")
    parser.add_argument("--n", type=int, default=10000, help="clean accuracy on the first N test samples (default: 10000)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="checkpoint cache (default: $APB_CACHE_DIR or the user cache dir)")
    parser.add_argument("--download", action="store_true", help="download a missing test set (official files)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of the forward passes (default: 256)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="report format (default: text)")


def run(args: argparse.Namespace) -> int:
    from evaluator.check import check_entry
    from evaluator.commands.evaluate import default_device
    from evaluator.records import dump_json
    from evaluator.submissions import find_entry

    entry = find_entry(args.model_key, args.root)
    report = check_entry(entry, data_dir=args.data_dir, n=args.n, device=args.device or default_device(),
                         batch_size=args.batch_size, cache_dir=args.cache_dir, download=args.download)
    if args.format == "json":
        sys.stdout.write(dump_json(report.to_dict()).decode("utf-8"))
    else:
        print(report.render_text())
    if not report.ok:
        print(f"error: {args.model_key}: the check failed: {'; '.join(report.failures())}", file=sys.stderr)
        return 1
    return 0

"""``apb check <model_key | ap_key> [--root] [--data-dir] [--n] [--device] [--cache-dir] [--refetch] [--download]
[--batch-size] [--format text|json]``: fetch, verify and load each checkpoint (one model, or every entry of an
AP), then report compliance, output sanity, sparsity (per layer) and clean accuracy. No attacks. ``--refetch``
downloads from the public URL into a fresh temporary cache, so a broken URL fails here and not on the GPU
runner. Exit 1 when any check fails."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluator.repository.manifest import ModelEntry


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="model_key|ap_key",
                        help="a model key (HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90) or an ap_key (every entry)")
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder holding cifar-10-batches-py/ or test_32x32.mat (default: ./data)")
    parser.add_argument("--n", type=int, default=10000, help="clean accuracy on the first N test samples (default: 10000)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="checkpoint cache (default: $APB_CACHE_DIR or the user cache dir)")
    parser.add_argument("--refetch", action="store_true",
                        help="download every checkpoint again from its url into a fresh temporary cache and verify "
                             "its sha256 (what the GPU runner will do)")
    parser.add_argument("--download", action="store_true", help="download a missing test set (official files)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of the forward passes (default: 256)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="report format (default: text)")


def entries_for(key: str, root: Path | None) -> list[ModelEntry]:
    """The manifest entries *key* names: one model key, or every entry of an AP."""
    from evaluator.errors import APBError, Problem
    from evaluator.registry.model_keys import is_ap_key
    from evaluator.paths import manifest_path, repo_root
    from evaluator.repository.submissions import find_entry, load_manifest

    root = root if root is not None else repo_root()
    if is_ap_key(key):
        manifest = manifest_path(root, key)
        if not manifest.is_file():
            raise APBError(Problem(str(manifest), f"no manifest for the AP {key}; create it with `apb new {key}`"))
        return load_manifest(manifest)
    return [find_entry(key, root)]


def run(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from evaluator.run.check import check_entry
    from evaluator.device import checked_device
    from evaluator.errors import APBError

    entries = entries_for(args.key, args.root)
    device = checked_device(args.device)
    failed: list[str] = []
    reports = []
    with tempfile.TemporaryDirectory(prefix="apb-refetch-") as fresh:
        cache = Path(fresh) if args.refetch else args.cache_dir
        for entry in entries:
            try:
                report = check_entry(entry, data_dir=args.data_dir, n=args.n, device=device,
                                     batch_size=args.batch_size, cache_dir=cache, download=args.download)
            except APBError as error:
                if len(entries) == 1:
                    raise
                for problem in error.problems:
                    print(f"error: {problem}", file=sys.stderr)
                failed.append(entry.model_key)
                continue
            reports.append(report.to_dict())
            if args.format == "text":
                print(report.render_text() + ("\n" if len(entries) > 1 else ""))
            if not report.ok:
                failed.append(entry.model_key)
                print(f"error: {entry.model_key}: the check failed: {'; '.join(report.failures())}", file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(json.dumps(reports[0] if len(entries) == 1 and reports else reports, indent=2) + "\n")
    if len(entries) > 1:
        print(f"apb check {args.key}: {len(entries) - len(failed)} of {len(entries)} passed"
              + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0

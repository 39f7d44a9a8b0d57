"""``apb prepare <checkpoint> --architecture A --dataset D --structure S --sparsity N [--out FILE] [--url URL]
[--ap AP | --manifest FILE] [--root] [--claimed-clean X] [--claimed-aa Y] [--force]``: turn a training
checkpoint into a clean safetensors file; print its sha256 and manifest entry, or add the entry to a manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from evaluator.registry.datasets import dataset_names
from evaluator.registry.model_keys import STRUCTURE_KINDS, STRUCTURED
from evaluator.registry.variants import architecture_names


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the training checkpoint (torch.save file or .safetensors)")
    parser.add_argument("--architecture", required=True, choices=architecture_names(),
                        help=" | ".join(architecture_names()))
    parser.add_argument("--dataset", required=True, choices=dataset_names(), help=" | ".join(dataset_names()))
    parser.add_argument("--structure", required=True, choices=tuple(STRUCTURE_KINDS),
                        help="weights (unstructured) | " + structure_help())
    parser.add_argument("--sparsity", required=True, type=int,
                        help="claimed sparsity in percent (weights: 90, 95, 99; filters/channels: 50, 75, 90)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the safetensors file to write (default: the checkpoint's name with .safetensors)")
    parser.add_argument("--url", default=None,
                        help="the public URL the file will have (default: its file:// URL, to swap after publishing)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--ap", default=None, metavar="AP_KEY",
                        help="add the entry to submissions/<AP_KEY>/manifest.yaml (made by `apb new`)")
    target.add_argument("--manifest", type=Path, default=None, help="add the entry to this manifest.yaml")
    parser.add_argument("--root", type=Path, default=None, help="benchmark repository for --ap (default: around the cwd)")
    parser.add_argument("--claimed-clean", type=float, required=True, metavar="PERCENT",
                        help="the clean accuracy your own code measures on this file (percent; required: apb check "
                             "fails when the benchmark measures far below it)")
    parser.add_argument("--claimed-aa", type=float, default=None, metavar="PERCENT",
                        help="your paper's AutoAttack robust accuracy for this model (percent)")
    parser.add_argument("--layer-ratios", default=None, metavar="FILE|uniform",
                        help="how edge-popup scores fold: a JSON file {<module>: <kept fraction>} exported from your "
                             "code (e.g. {\"conv1\": 0.8, \"layer1.0.conv1\": 0.12}), or 'uniform' (every layer keeps "
                             "1 - sparsity/100); required when the file holds scores")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")


def structure_help() -> str:
    """What filters and channels mean, from taxonomy/vocabulary.yaml (the one place that says it)."""
    from evaluator.errors import APBError
    from evaluator.paths import repo_root
    from evaluator.repository.taxonomy import load_vocabulary

    try:
        values = load_vocabulary(repo_root())["fields"]["granularity"]["values"]
    except (APBError, KeyError, OSError):  # outside the repository: the names alone
        return " | ".join(STRUCTURED)
    return " | ".join(f"{name}: {values[name]}" for name in STRUCTURED)


def run(args: argparse.Namespace) -> int:
    from evaluator.errors import APBError, Problem
    from evaluator.run.prepare import add_to_manifest, entry_yaml, prepare_checkpoint
    from evaluator.repository.manifest import sparsities_for
    from evaluator.registry import url_schemes

    if args.sparsity not in sparsities_for(args.structure):
        raise APBError(Problem("--sparsity", f"{args.structure} pruning uses sparsity "
                                             f"{', '.join(map(str, sparsities_for(args.structure)))}"))
    manifest = args.manifest
    if args.ap:
        from evaluator.paths import manifest_path, repo_root

        manifest = manifest_path(args.root or repo_root(), args.ap)
    claimed = {name: value for name, value in (("clean_accuracy", args.claimed_clean),
                                               ("aa_robust_accuracy", args.claimed_aa)) if value is not None}
    prepared = prepare_checkpoint(args.checkpoint, architecture=args.architecture, dataset=args.dataset,
                                  structure=args.structure, sparsity=args.sparsity, out=args.out, url=args.url,
                                  claimed=claimed or None, overwrite=args.force, layer_ratios=args.layer_ratios)
    for line in prepared.found:
        print(f"found       {line}")
    print(f"sparsity    {prepared.sparsity_message}")
    print(f"wrote       {prepared.path}")
    print(f"sha256      {prepared.sha256}")
    comment = f"apb prepare {args.checkpoint.name}" + (f" --layer-ratios {args.layer_ratios}" if args.layer_ratios else "")
    if manifest is None:
        print("manifest entry (paste it under `models:` in submissions/<ap_key>/manifest.yaml):")
        print(entry_yaml(prepared.entry, comment=comment), end="")
        return 0
    key = add_to_manifest(manifest, prepared.entry, comment=comment)
    print(f"added       {key} to {manifest}")
    scheme = url_schemes.scheme_of(prepared.entry["url"])
    if scheme is not None and scheme.manifests == "local":  # a file:// URL: fine here, refused under submissions/
        print(f"next        publish the file, then replace its {scheme.prefix} url with the public one (CONTRIBUTING.md)")
    return 0

"""How `apb validate`, `apb leaderboard` and `apb site` scale: a synthetic repository of N APs x 24 evaluated
models (2 datasets x 2 architectures x 6 sparsities, each record with a 10,000-sample sidecar and efficiency
figures), checked and rendered twice per command: into an empty folder ("fresh": every file created) and again
over that output ("unchanged": every file compared, none written, as a re-render or `--check` does; validate
writes nothing, so its two runs are two measurements). Prints CPU seconds (user + system, one process;
creating 48,000 files is mostly system time) and peak resident memory per N.

    .venv/bin/python bench/bench_leaderboard.py                 # N = 100, 300, 1000
    .venv/bin/python bench/bench_leaderboard.py --aps 100 --keep /tmp/apb-bench
    .venv/bin/python bench/bench_leaderboard.py --aps 1000 --outputs /dev/shm   # outputs on tmpfs (see --outputs)
    git worktree add /tmp/apb-old <rev> && .venv/bin/python bench/bench_leaderboard.py --aps 1000 \
        --commands validate leaderboard --baseline /tmp/apb-old --rounds 2     # side by side, with ratios

Each render runs in a fresh child process, so its peak memory is its own. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROTOCOL = "linf-8-255-v1"
N_SAMPLES = 10_000
EPS_FRACTION = "8/255"
EPS = 8 / 255
MODELS = [(arch, dataset, kind, sparsity) for dataset in ("CIFAR10", "SVHN") for arch in ("R18", "V16")
          for kind, sparsities in (("US", (90, 95, 99)), ("S", (50, 75, 90))) for sparsity in sparsities]
VARIANTS = 64  # distinct sidecars, reused across models (their bytes, not their content, cost the render)


def sidecars() -> list[tuple[bytes, dict]]:
    """``VARIANTS`` sidecars as `apb evaluate` writes them, with their summary."""
    from evaluator.record.records import PerSample, summarize
    from evaluator.registry.norms import threat_model

    made = []
    for seed in range(VARIANTS):
        rng = np.random.default_rng(seed)
        distances = rng.exponential(0.02 + 0.0005 * seed, N_SAMPLES).astype(np.float32)
        distances[: N_SAMPLES // 5] = 0
        distances[-10:] = np.inf
        clean = distances > 0
        per_sample = PerSample(np.arange(N_SAMPLES), clean_correct=clean,
                               aa_robust=clean & (distances > EPS * 1.02), hofmn_distance=distances)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, sample_index=per_sample.sample_index,
                            clean_correct=np.packbits(per_sample.clean_correct),
                            aa_robust=np.packbits(per_sample.aa_robust), hofmn_distance=per_sample.hofmn_distance)
        made.append((buffer.getvalue(), summarize(per_sample, threat_model("Linf", Fraction(EPS_FRACTION)))))
    return made


def build(root: Path, n_aps: int) -> None:
    """The synthetic repository: the real taxonomy schema and vocabulary, N taxonomy entries, 24 records each."""
    shutil.copytree(REPO / "taxonomy", root / "taxonomy", ignore=shutil.ignore_patterns("README.md"))
    made = sidecars()
    stages = ("after-training", "before-training", "during-training")
    for i in range(n_aps):
        ap_key = f"Synth{i:04d}_Doe{2015 + i % 10}Synthetic"
        folder = root / "submissions" / ap_key
        (folder / "records").mkdir(parents=True)
        stage = stages[i % 3]
        pipeline = {"after-training": {"pretraining": {"methods": ["AT"], "adversarial_training": "PGD"},
                                       "finetuning": {"methods": ["AT"], "adversarial_training": "TRADES"},
                                       "schedule": ["1S"]},
                    "before-training": {"pruning_step": {"methods": ["AT"]}, "training_step": {"methods": ["AT"]},
                                        "schedule": ["IT"]},
                    "during-training": {"training_step": {"methods": ["AT"]}}}[stage]
        taxonomy = {"schema_version": 1, "ap_key": ap_key, "name": f"S{i:04d}", "title": f"Synthetic AP {i}",
                    "year": 2015 + i % 10, "venue": "Synthetic Conference", "paper_url": f"https://example.org/{i}",
                    "code_url": None, "pipeline": {"stage": stage, **pipeline}, "structure": ["S", "US"],
                    "granularity": "filters", "locality": ["L", "G"][i % 2: i % 2 + 1], "criterion": "LWM"}
        (folder / "taxonomy.json").write_text(json.dumps(taxonomy, indent=2))
        manifest = ["schema_version: 1", f"ap_key: {ap_key}", "defaults:", "  format: safetensors", "models:"]
        for j, (arch, dataset, kind, sparsity) in enumerate(MODELS):
            data, summary = made[(i * 24 + j) % VARIANTS]
            model_key = f"{ap_key}_{arch}_{dataset}_{kind}_{sparsity}"
            stem = f"{model_key}__{PROTOCOL}"
            (folder / "records" / f"{stem}.npz").write_bytes(data)
            dense = 555_422_720 if arch == "R18" else 313_788_928
            record = {
                "schema_version": 1, "model_key": model_key, "ap_key": ap_key,
                "architecture": "resnet18" if arch == "R18" else "vgg16", "dataset": dataset,
                "structure_kind": kind, "sparsity": sparsity, "source": "evaluated", "protocol": PROTOCOL,
                **summary, "checkpoint_sha256": hashlib.sha256(model_key.encode()).hexdigest(),
                "provenance": {"protocol_sha256": "0" * 64, "evaluator_version": "0.1.0", "git_commit": "f" * 40,
                               "packages": {"torch": "2.14.1", "numpy": "2.4.6", "pyautoattack": "0.2.0"},
                               "device": "NVIDIA H100", "date": f"2025-{1 + i % 12:02d}-01T00:00:00Z",
                               "wall_time_s": {"autoattack": 812.5, "hofmn": 433.0, "total": 1300.1}},
                "flags": [{"code": "hofmn-no-adversarial", "message": "10 samples without adversarial"}]
                if (i + j) % 17 == 0 else [],
                "check": {"ok": True, "compliance": {"ok": True, "architecture": arch, "n_keys": 122},
                          "sparsity": {"ok": True, "structure": "weights", "claimed": sparsity,
                                       "measured": sparsity + 0.01},
                          "efficiency": {"input_shape": [3, 32, 32], "params_total": 11_173_962,
                                         "params_nonzero": int(11_173_962 * (100 - sparsity) / 100),
                                         "macs_dense": dense, "macs_nonzero": int(dense * (100 - sparsity) / 100),
                                         "macs_structured": dense, "structure_kind": kind,
                                         "macs_effective": int(dense * (100 - sparsity) / 100)}},
                "per_sample": {"file": f"{stem}.npz", "sha256": hashlib.sha256(data).hexdigest()},
            }
            (folder / "records" / f"{stem}.json").write_text(json.dumps(record, indent=2))
            manifest += [f"  - architecture: {record['architecture']}", f"    dataset: {dataset}",
                         f"    structure: {'weights' if kind == 'US' else 'filters'}", f"    sparsity: {sparsity}",
                         f"    url: https://example.org/{ap_key}/{model_key}.safetensors",
                         f"    sha256: {record['checkpoint_sha256']}",
                         f"    claimed: {{clean_accuracy: {record['metrics']['clean_accuracy']}}}"]
        (folder / "manifest.yaml").write_text("\n".join(manifest) + "\n")


def measure(command: str, root: Path, out: Path) -> None:
    """Child process: run one command in-process, print its CPU seconds and peak RSS as JSON."""
    from evaluator.cli import main

    started = time.perf_counter()
    code = main([command, "--root", str(root)] + ([] if command == "validate" else ["--out", str(out)]))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"code": code, "wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}))


def output_shape(out: Path) -> tuple[int, int, int]:
    """Files written, the largest Markdown file (bytes: GitHub renders up to 500 KiB) and the most entries of one
    folder (GitHub lists 1,000)."""
    files = largest = widest = 0
    for folder, folders, names in os.walk(out):
        files += len(names)
        widest = max(widest, len(folders) + len(names))
        largest = max([largest] + [os.path.getsize(os.path.join(folder, name)) for name in names if name.endswith(".md")])
    return files, largest, widest


def run_child(command: str, root: Path, out: Path, tree: Path | None) -> dict:
    """One measurement in a fresh interpreter, with *tree*'s evaluator (default: this checkout's)."""
    argv = [sys.executable, __file__, "--measure", command, str(root), str(out)] + (["--tree", str(tree)] if tree else [])
    child = subprocess.run(argv, capture_output=True, text=True, cwd=tree or REPO)
    if child.returncode:
        print(child.stderr[-3000:])
        raise SystemExit(f"{command} failed ({tree or REPO})")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aps", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--commands", nargs="+", default=["validate", "leaderboard", "site"])
    parser.add_argument("--keep", type=Path, default=None, help="build the repositories here and keep them")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of another commit (git worktree add DIR REV): each measurement runs on it "
                             "and on this checkout, one after the other, and the ratios are printed")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per command, output and tree")
    parser.add_argument("--outputs", type=Path, default=None,
                        help="write the rendered outputs here (default: beside the repositories). On ext4, creating "
                             "48,000 files right after deleting the previous 48,000 costs the kernel's inode "
                             "allocator up to 10 s of system time (its recently-deleted scan), which a tmpfs such as "
                             "/dev/shm does not have: fresh runs there measure the render, not the file system")
    parser.add_argument("--measure", nargs=3, metavar=("COMMAND", "ROOT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        if args.tree:
            sys.path.insert(0, str(args.tree.resolve()))
        measure(args.measure[0], Path(args.measure[1]), Path(args.measure[2]))
        return
    base = args.keep or Path(tempfile.mkdtemp(prefix="apb-bench-"))
    outputs = Path(tempfile.mkdtemp(prefix="apb-bench-out-", dir=args.outputs)) if args.outputs else base
    trees: list[tuple[str, Path | None]] = ([("baseline", args.baseline.resolve())] if args.baseline else []) + \
        [("this", None)]
    print(f"python {sys.version.split()[0]}, {len(MODELS)} models per AP, {N_SAMPLES} samples per sidecar")
    print(f"{'APs':>6} {'records':>8} {'command':>12} {'output':>9} {'tree':>8} {'cpu s':>7} {'user s':>7} "
          f"{'sys s':>6} {'wall s':>7} {'peak MiB':>9} {'files':>7} {'max .md KiB':>11} {'max folder':>10}")
    cpu: dict[tuple[int, str, str, str], list[tuple[float, float]]] = {}  # (CPU s, user s) per run
    try:
        for n in args.aps:
            root = base / f"repo-{n}"
            if not (root / "submissions").is_dir():
                build(root, n)
            for command in args.commands:
                for round_index in range(args.rounds):
                    order = trees if round_index % 2 == 0 else trees[::-1]  # A B, then B A: drift cancels
                    for name, tree in order:
                        out = outputs / f"out-{n}-{command}-{name}"
                        shutil.rmtree(out, ignore_errors=True)
                        for output in ("fresh", "unchanged"):  # every file written, then every file compared
                            result = run_child(command, root, out, tree)
                            cpu.setdefault((n, command, output, name), []).append((result["cpu_s"], result["user_s"]))
                            files, largest, widest = output_shape(out)
                            print(f"{n:>6} {n * len(MODELS):>8} {command:>12} {output:>9} {name:>8} "
                                  f"{result['cpu_s']:>7.1f} {result['user_s']:>7.1f} {result['sys_s']:>6.1f} "
                                  f"{result['wall_s']:>7.1f} {result['peak_mib']:>9.0f} {files:>7} "
                                  f"{largest / 1024:>11.0f} {widest:>10}", flush=True)
            summarize(cpu, n, args.commands, [name for name, _ in trees])
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
        if outputs != base:
            shutil.rmtree(outputs, ignore_errors=True)


def summarize(cpu: dict[tuple[int, str, str, str], list[tuple[float, float]]], n: int, commands: list[str],
              trees: list[str]) -> None:
    """Median CPU seconds per command (fresh output) and tree, validate + leaderboard, and this/baseline ratios:
    of the CPU medians, and, steadier on a noisy machine, the median of the per-round ratios of user time (each
    round runs both trees back to back; system time is mostly creating files and swings with the machine)."""
    from statistics import median

    fresh = {(c, tree): median(run[0] for run in cpu[(n, c, "fresh", tree)]) for c in commands for tree in trees}
    for tree in trees:
        pair = sum(fresh.get((c, tree), 0.0) for c in ("validate", "leaderboard"))
        shown = ", ".join(f"{c} {fresh[(c, tree)]:.1f} s" for c in commands)
        print(f"N = {n}, {tree}: {shown}; validate + leaderboard {pair:.1f} s CPU (median of fresh runs)")
    if len(trees) == 2:
        print(f"N = {n}, this / baseline CPU: "
              + ", ".join(f"{c} {fresh[(c, 'this')] / fresh[(c, 'baseline')]:.2f}" for c in commands))
        paired = []
        for c, output in ((c, output) for c in commands for output in ("fresh", "unchanged")):
            rounds = zip(cpu[(n, c, output, "this")], cpu[(n, c, output, "baseline")])
            paired.append(f"{c} {output} {median(this[1] / base[1] for this, base in rounds):.2f}")
        print(f"N = {n}, this / baseline user time, median of the rounds' ratios: {', '.join(paired)}")


if __name__ == "__main__":
    main()

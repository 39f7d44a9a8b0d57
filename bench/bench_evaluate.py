"""``apb evaluate``: wall time per stage under the smoke protocol, and memory at N = 10,000.

1. Stages: the demo's example VGG16 (a real checkpoint behind a file:// URL, a CIFAR-10-format test file)
   evaluated by ``evaluate_model`` under ``smoke-v1``; prints the record's ``provenance.wall_time_s``.
2. Memory at N = 10,000: resident memory (RSS) after loading a 10,000-image CIFAR-10 test file, after
   building the model, and its peak while the clean stage runs over all 20 chunks of the leaderboard protocol
   (500 samples a chunk: the chunk is converted to float, the dataset itself is held once as uint8); the size
   of the per-sample arrays; the sidecar's size with realistic per-sample results.

    python bench/bench_evaluate.py --threads 2
    python bench/bench_evaluate.py --threads 1 --skip-memory
    python bench/bench_evaluate.py --threads 1 --skip-stages --n 10000 --architecture resnet18
"""
from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import machine

from evaluator.run.datasets import load_test_set, write_cifar10_test
from evaluator.run.chunks import ChunkStore
from evaluator.run.evaluate import evaluate_model
from evaluator.run.stages import evaluate_chunks
from evaluator.registry.variants import build_model
from evaluator.protocol import load_protocol
from evaluator.record.records import PerSample

MiB = 1 << 20


def rss_mib() -> float:
    """Current resident memory of this process, after giving freed heap memory back to the system (so that
    the figure is what is alive, not what the allocator kept)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / MiB


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_stages(folder: Path) -> dict[str, float]:
    from evaluator.demo import build_example

    example = build_example(folder / "demo")
    outcome = evaluate_model(example.model_keys[0], protocol="smoke-v1", root=example.root, data_dir=example.data_dir,
                             device="cpu", out_dir=folder / "records", cache_dir=folder / "cache", progress=False)
    return outcome.record["provenance"]["wall_time_s"]


def realistic_per_sample(n: int, seed: int = 0) -> PerSample:
    """80% clean-correct, distances log-normal around 8/255 (0 where misclassified, 0.5% inf), AA-robust where
    the distance exceeds 8/255 (except a few)."""
    rng = np.random.default_rng(seed)
    clean = rng.random(n) < 0.8
    distances = np.exp(rng.normal(np.log(8 / 255), 0.5, n)).astype(np.float32)
    distances[rng.random(n) < 0.005] = np.inf
    distances[~clean] = 0
    robust = (distances > 8 / 255) & (rng.random(n) < 0.98)
    return PerSample(np.arange(n), clean_correct=clean, aa_robust=robust, hofmn_distance=distances)


def bench_memory(folder: Path, n: int, architecture: str, batch_size: int) -> dict[str, float]:
    import torchvision.datasets  # noqa: F401  (imported before the first figure: its import is not data)

    rng = np.random.default_rng(0)
    write_cifar10_test(folder / "data", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                       [i % 10 for i in range(n)])
    figures = {"rss_start": rss_mib(), "peak_rss_start": peak_rss_mib()}
    test_set = load_test_set("CIFAR10", folder / "data", n=n)
    figures["peak_rss_loading_data"] = peak_rss_mib()
    figures["rss_after_data"] = rss_mib()
    figures["dataset_bytes"] = test_set.images.numel() + test_set.labels.numel() * 8
    model = build_model(architecture).eval()
    figures["rss_after_model"] = rss_mib()
    protocol = load_protocol("linf-8-255-v1")
    pointer = test_set.images.data_ptr()
    results = evaluate_chunks(model, test_set, protocol, store=ChunkStore(None), batch_size=batch_size,
                              stages=("clean",), progress=False)
    assert test_set.images.data_ptr() == pointer  # the dataset was not copied
    figures["rss_after_clean_stage"] = rss_mib()
    figures["peak_rss"] = peak_rss_mib()
    per_sample = results.per_sample
    figures["per_sample_bytes"] = sum(a.nbytes for a in (per_sample.sample_index, per_sample.clean_correct,
                                                          per_sample.aa_robust, per_sample.hofmn_distance))
    realistic = realistic_per_sample(n)
    realistic.save(folder / "sidecar.npz")
    figures["sidecar_bytes"] = (folder / "sidecar.npz").stat().st_size
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--architecture", default="vgg16", choices=("vgg16", "resnet18"))
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--skip-stages", action="store_true", help="only the memory figures")
    parser.add_argument("--skip-memory", action="store_true", help="only the stage times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_stages:
            stages = bench_stages(Path(tmp))
            print("smoke-v1 stages (s):", ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
        figures = {} if args.skip_memory else bench_memory(Path(tmp), args.n, args.architecture, args.batch_size)
    for name, value in figures.items():
        unit = "MiB" if name.startswith(("rss", "peak")) else "bytes"
        print(f"{name:<24} {value:12.1f} {unit}" if unit == "MiB" else f"{name:<24} {value:12,.0f} {unit}")


if __name__ == "__main__":
    main()

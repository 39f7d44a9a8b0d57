"""A tiny evaluation for the pipeline tests: a seeded tiny CNN, a CIFAR-10-format test file it gets 3 of 4
samples right on, and a small protocol file with many chunks. Also runnable as a script (the resume test
runs it in a subprocess and kills it)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from evaluator.run.datasets import load_test_set, write_cifar10_test
from evaluator.run.evaluate import evaluate_loaded
from evaluator.protocol import PROTOCOLS_DIR, Protocol, load_protocol
from evaluator.run.shards import Shard
from tests.support.fake_data import tiny_images
from tests.support.tiny_models import tiny_cnn

MODEL_KEY = "Tiny_Doe2024Tiny_R18_CIFAR10_US_90"
CHECKPOINT_SHA256 = "ab" * 32
TINY_PROTOCOL = "tiny-v1"
TIMING_FIELDS = ("date", "wall_time_s")  # provenance fields that differ between equal evaluations


def comparable(record: dict) -> dict:
    """A record without its timing fields: equal for equal evaluations (one run, resumed, or merged shards)."""
    prov = {k: v for k, v in (record.get("provenance") or {}).items() if k not in TIMING_FIELDS}
    return {**record, "provenance": prov}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tests run torch on one thread: two threads on a busy 2-core machine are 100x slower for tiny models.
    Import this fixture into a test module to use it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tiny_protocol(folder: Path, n_samples: int = 12, chunk_size: int = 2) -> Path:
    """The smoke protocol with ``n_samples`` samples in chunks of ``chunk_size``, id ``tiny-v1``, and all 4
    tuning trials quasi-random (the GP sampler's fits take seconds; the tests do not need them)."""
    text = (PROTOCOLS_DIR / "smoke-v1.yaml").read_text(encoding="utf-8")
    text = (text.replace("id: smoke-v1", f"id: {TINY_PROTOCOL}")
            .replace("n_samples: 8\n", f"n_samples: {n_samples}\n").replace("chunk_size: 4\n", f"chunk_size: {chunk_size}\n")
            .replace("startup_trials: 2\n", "startup_trials: 4\n"))
    path = Path(folder) / f"{TINY_PROTOCOL}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_tiny_test_set(data_dir: Path, n: int = 12) -> Path:
    """A CIFAR-10 test file of ``n`` noise images labelled with the tiny CNN's predictions, except every
    4th sample (so samples 0, 4, 8, ... are misclassified)."""
    images, _ = tiny_images(n, seed=3)
    with torch.inference_mode():
        predicted = tiny_cnn(0)(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1)
    labels = [(int(p) + 1) % 10 if i % 4 == 0 else int(p) for i, p in enumerate(predicted)]
    write_cifar10_test(data_dir, images, labels)
    return data_dir


def run_tiny(base: Path, protocol: Protocol | Path, *, work: str = "work", out: str = "out",
             shard: Shard | None = None, model: torch.nn.Module | None = None):
    """``evaluate_loaded`` of the tiny CNN on the tiny test set under ``base``."""
    protocol = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    test_set = load_test_set("CIFAR10", base / "data", n=protocol.n_samples)
    return evaluate_loaded(model or tiny_cnn(0), test_set, protocol, model_key=MODEL_KEY,
                           checkpoint_sha256=CHECKPOINT_SHA256, work_dir=base / work, out_dir=base / out,
                           check={"ok": True}, shard=shard, progress=False)


if __name__ == "__main__":  # python -m tests.support.evaluation <base> <protocol file>
    torch.set_num_threads(1)
    run_tiny(Path(sys.argv[1]), Path(sys.argv[2]))

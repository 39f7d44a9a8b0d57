"""The author's CPU smoke protocol in its worst case: wall time of ``evaluate_loaded`` per base architecture and
sparsity, with every sample clean-correct (the test labels are the model's own predictions), so every sample
is attacked; at sparsity 100 every convolution is zero, the output is constant and no attack can change it,
so every sample also stays robust through every attack step. Prints the time estimate ``apb evaluate`` shows
beside the measured time.

    python bench/bench_smoke.py                          # smoke-v2, ResNet18 and VGG16 at 0, 99 and 100%
    python bench/bench_smoke.py --protocol smoke-v1 --models vgg16:100
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from timing import machine

from evaluator.run.check import clean_predictions
from evaluator.run.datasets import load_test_set, write_cifar10_test
from evaluator.run.evaluate import evaluate_loaded, time_estimate
from evaluator.protocol import load_protocol
from evaluator.registry.variants import build_variant
from tests.support.fake_data import tiny_images

KEY_CODES = {"resnet18": "R18", "vgg16": "V16"}


def random_pruned(architecture: str, sparsity: int, seed: int = 0) -> torch.nn.Module:
    """The base architecture with each convolution weight kept with probability 1 - sparsity / 100."""
    torch.manual_seed(seed)
    model = build_variant(architecture).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and sparsity:
                module.weight.mul_((torch.rand_like(module.weight) >= sparsity / 100).float())
    return model


def run(architecture: str, sparsity: int, protocol_id: str, work: Path) -> tuple[float, float, int, int]:
    """(measured seconds, estimated seconds, clean-correct samples, samples) of one worst-case smoke evaluation."""
    protocol = load_protocol(protocol_id).require_evaluable()
    model = random_pruned(architecture, sparsity)
    images, _ = tiny_images(protocol.n_samples)
    with torch.no_grad():
        labels = model(torch.tensor(images).float().div(255).permute(0, 3, 1, 2)).argmax(1).tolist()
    data = work / "data"
    write_cifar10_test(data, images, labels)
    test_set = load_test_set("CIFAR10", data, n=protocol.n_samples)
    correct = int(clean_predictions(model, test_set, progress=False).sum())
    _, low, high = time_estimate(model, protocol, (3, 32, 32), "cpu", correct)
    start = time.perf_counter()
    evaluate_loaded(model, test_set, protocol, model_key=f"Demo_Doe2024Demo_{KEY_CODES[architecture]}_CIFAR10_US_90",
                    checkpoint_sha256="0" * 64, work_dir=work / "work", out_dir=work / "out", progress=False)
    return time.perf_counter() - start, high, correct, protocol.n_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default="smoke-v2")
    parser.add_argument("--models", nargs="+", default=[f"{a}:{s}" for a in KEY_CODES for s in (0, 99, 100)],
                        help="architecture:sparsity pairs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    print(f"protocol {args.protocol}, {args.threads} threads; every sample clean-correct and attacked")
    for item in args.models:
        architecture, sparsity = item.split(":")
        with tempfile.TemporaryDirectory() as folder:
            seconds, estimate, correct, n = run(architecture, int(sparsity), args.protocol, Path(folder))
        print(f"{architecture:9} {sparsity:>3}%: {seconds:6.1f} s (estimate {estimate:.0f} s; {correct} of {n} "
              "clean-correct)", flush=True)


if __name__ == "__main__":
    main()

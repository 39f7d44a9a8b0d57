"""AutoAttack adapter overhead against calling pyautoattack directly, and frozen against trainable parameters.

1. Wall time of ``autoattack`` (Linf) against a direct ``pyautoattack`` run on the same model, inputs, eps,
   version and seed: the direct run on the model as a user would pass it (parameters trainable) and on the
   same model with its parameters frozen by hand (the adapter's own setting, so the difference is the
   adapter alone: the context manager, the log handler and the verification by re-prediction). Two cases:
   the full ``standard`` version on a cheap linear model (the adapter's fixed costs weigh most there) and
   APGD-CE alone on the small CNN (a randomly initialised CNN is nearly constant, so nothing breaks and the
   standard version would run for hours on CPU).
2. Bare forward+backward throughput (gradient with respect to the input) with trainable against frozen
   parameters, ResNet18.

    python bench/bench_autoattack.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from bench_fmn import SmallCNN, bare_steps
from timing import interleaved_seconds, interleaved_times, machine, paired_ratio

from evaluator.attacks.autoattack import autoattack
from evaluator.attacks.common import frozen_for_attack
from evaluator.registry.variants import build_model
from evaluator.registry.norms import get_norm
from tests.support.tiny_models import linear_classifier

EPS = 8 / 255


def direct(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, options: dict) -> torch.Tensor:
    """pyautoattack as its README shows it; robust flags from the returned labels."""
    import pyautoattack  # noqa: PLC0415

    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=EPS, seed=0, device="cpu", **options)
    return adversary.run_standard_evaluation(inputs, labels, batch_size=len(inputs))[1] == labels


def direct_frozen(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, options: dict) -> torch.Tensor:
    with frozen_for_attack(model):
        return direct(model, inputs, labels, options)


def bench_adapter(name: str, model: nn.Module, count: int, repeats: int, options: dict) -> None:
    model.eval()
    inputs = torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    adapter = lambda: autoattack(model, inputs, labels, norm=get_norm("Linf"), eps=EPS,  # noqa: E731
                                 batch_size=count, **options)
    runs = {
        "pyautoattack direct": lambda: direct(model, inputs, labels, options),
        "pyautoattack direct, frozen": lambda: direct_frozen(model, inputs, labels, options),
        "autoattack (adapter)": adapter,
    }
    times = interleaved_times(runs, repeats, warmup=False)
    flags = adapter().robust
    print(f"\nAutoAttack {options}, {name}, {count} samples, eps 8/255, {repeats} repeats, "
          f"robust {int(flags.sum())}/{count}")
    for run, values in times.items():
        change = 100 * (paired_ratio(times, run, "pyautoattack direct, frozen") - 1)
        print(f"  {run:<30} best {min(values):7.2f} s  median {statistics.median(values):7.2f} s  "
              f"{change:+6.1f}% against direct, frozen (median of paired ratios)")
    print(f"  same per-sample flags as the direct call: {torch.equal(flags, direct(model, inputs, labels, options))}")


def bench_frozen(batch: int, steps: int, repeats: int) -> None:
    model = build_model("resnet18").eval()
    inputs = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def trainable() -> None:
        for _ in range(steps):
            x = inputs.clone().requires_grad_(True)
            model(x).sum().backward()          # what an attack without frozen parameters pays for
            model.zero_grad(set_to_none=True)

    medians = interleaved_seconds({"trainable parameters": trainable,
                                   "frozen parameters": lambda: bare_steps(model, inputs, steps)}, repeats)
    print(f"\nResNet18 forward+backward, batch {batch}, {steps} steps x {repeats} repeats")
    for run, median in medians.items():
        print(f"  {run:<22} {batch * steps / median:8.1f} img-steps/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine(), flush=True)
    bench_adapter("linear model", linear_classifier((3, 32, 32)), 64, 3 * args.repeats, {"version": "standard"})
    bench_adapter("small CNN", SmallCNN(), 8, 2 * args.repeats, {"version": "custom", "attacks": ["apgd-ce"]})
    bench_frozen(32, 3, args.repeats)


if __name__ == "__main__":
    main()

"""HO-FMN tuning: optimizer-engine overhead (wall time not spent attacking) for 32 trials.

The reference pipeline (pralab/HO-FMN, Ax 0.4) spends about 136 s of engine overhead for 32 trials.

    python bench/bench_tuning.py --threads 2
"""
from __future__ import annotations

import argparse
import time

import torch

from bench_fmn import SmallCNN
from timing import machine

from evaluator.attacks.hofmn import tune_fmn
from evaluator.registry.norms import get_norm

SPACE = {"lr": {"low": 8 / 255, "high": 10, "log": True}, "momentum": {"low": 0, "high": 0.9},
         "weight_decay": {"low": 0.01, "high": 1}, "dampening": {"low": 0, "high": 0.2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine())
    model = SmallCNN().eval()
    inputs = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    started = time.perf_counter()
    result = tune_fmn(model, inputs, labels, norm=get_norm("Linf"), search_space=SPACE, trials=args.trials,
                      steps=args.steps, seed=0)
    total = time.perf_counter() - started
    print(f"small CNN, tuning batch {args.batch}, {args.trials} trials x {args.steps} steps")
    print(f"  total {total:.1f} s, attack {result.attack_seconds:.1f} s, "
          f"engine overhead {result.engine_seconds:.1f} s ({result.engine_seconds / args.trials:.2f} s/trial)")
    print(f"  best median distance {result.best_value:.5f} with {result.best_params}")


if __name__ == "__main__":
    main()

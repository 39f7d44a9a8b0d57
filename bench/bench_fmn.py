"""FMN attack-loop overhead: FMN steps/s against bare forward+backward steps/s of the same model and batch.

Both sides take the gradient with respect to the input only (parameters frozen), in one process, the runs
interleaved. With ``--reference DIR`` (a checkout of pralab/HO-FMN, e.g. /tmp/hofmn_ref containing ``src/``)
the reference FMN runs beside ours on the same inputs and parameters, as shipped (parameters not frozen),
and the script reports whether both return the same adversarials.

    python bench/bench_fmn.py --threads 2 --reference /tmp/hofmn_ref
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch
from torch import nn

from timing import interleaved_times, machine, paired_ratio

from evaluator.attacks.common import frozen_for_attack
from evaluator.attacks.fmn import fmn
from evaluator.registry.variants import build_model

PARAMS = {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1, "dampening": 0.1}


class SmallCNN(nn.Module):
    """The usual small CIFAR CNN (conv 32-32-64-64, fc 200-200-10)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 5 * 5, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def bare_steps(model: nn.Module, inputs: torch.Tensor, steps: int) -> None:
    """``steps`` forward+backward passes, gradient with respect to the input only."""
    with frozen_for_attack(model):
        for _ in range(steps):
            x = inputs.clone().requires_grad_(True)
            torch.autograd.grad(model(x).sum(), x)


def reference_fmn(directory: str, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                  steps: int) -> torch.Tensor:
    """pralab/HO-FMN's FMN with the same loss, optimizer, parameters and cosine schedule."""
    if directory not in sys.path:
        sys.path.insert(0, directory)
    from src.attacks.fmn import FMN  # noqa: PLC0415 (reference code, outside the project)
    attack = FMN(model, steps=steps, loss="DLR", optimizer="SGD", scheduler="CALR", optimizer_config=dict(PARAMS),
                 scheduler_config={"T_max": steps, "eta_min": 0, "last_epoch": -1}, device=inputs.device)
    return attack.forward(inputs, labels)


def bench_model(name: str, model: nn.Module, batch: int, steps: int, repeats: int, device: str,
                reference: str | None) -> None:
    model = model.to(device).eval()
    inputs = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    runs = {
        "bare fwd+bwd": lambda: bare_steps(model, inputs, steps),
        "FMN (ours)": lambda: fmn(model, inputs, labels, steps=steps, optimizer_params=PARAMS, p=math.inf),
    }
    if reference:
        runs["FMN (HO-FMN reference)"] = lambda: reference_fmn(reference, model, inputs, labels, steps)
    times = interleaved_times(runs, repeats)
    print(f"\n{name}, batch {batch}, {steps} steps x {repeats} repeats, {device}")
    for run, values in times.items():
        rate = steps / statistics.median(values)
        ratio = 1 / paired_ratio(times, run, "bare fwd+bwd")
        print(f"  {run:<26} {rate:8.2f} steps/s  {rate * batch:9.1f} img-steps/s  "
              f"ratio to bare {ratio:.3f} (median of paired ratios)")
    if reference:
        ours = fmn(model, inputs, labels, steps=steps, optimizer_params=PARAMS, p=math.inf)
        theirs = reference_fmn(reference, model, inputs, labels, steps)
        print(f"  same adversarials as the reference: {torch.equal(ours, theirs)} "
              f"(max abs difference {(ours - theirs).abs().max().item():.3g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--batch-resnet", type=int, default=32)
    parser.add_argument("--batch-cnn", type=int, default=128)
    parser.add_argument("--reference", default=None, help="directory holding pralab/HO-FMN's src/")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine(), flush=True)
    bench_model("small CNN", SmallCNN(), args.batch_cnn, args.steps, args.repeats, args.device, args.reference)
    if not args.skip_resnet:
        bench_model("ResNet18 (evaluator.models)", build_model("resnet18"), args.batch_resnet, args.steps,
                    args.repeats, args.device, args.reference)


if __name__ == "__main__":
    main()

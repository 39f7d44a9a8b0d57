"""The full protocol on one GPU: per-stage times against the bare input-gradient rate, v1 against v2, k
evaluations per device.

On the device (``bash bench/device_run.sh <npz>`` runs this after ``pytest -m gpu``):

1. bare rates: forward+backward with the gradient with respect to the input only (parameters frozen) and
   forward-only, batch 500, for ResNet18 and VGG16 (``evaluator.models``), under the evaluator's fixed
   numerics backend (``provenance.fixed_backend``) and, for comparison only, under torch's defaults with
   TF32 and cuDNN autotuning on; peak memory of one forward+backward at batch 5,000 (v2's batch);
2. training: a small-budget PGD adversarially trained ResNet18 and VGG16 on the real CIFAR-10 images of
   the npz (``../shared/data/cifar10-real-subset.npz``), time-boxed; the ResNet18 magnitude-pruned
   unstructured 90%, the VGG16 filter-pruned 50% (L1 norm of each convolution's filters), each fine-tuned
   with its mask;
3. evaluation through ``evaluate_loaded`` (what ``apb evaluate`` runs after fetch and check) under
   ``linf-8-255-v1`` and ``linf-8-255-v2`` with ``n_samples`` set to N; the npz's 846 real test images are
   tiled to N when N is larger (said so in the output). Per stage (clean, AutoAttack per sub-attack,
   HO-FMN tuning, HO-FMN): wall time, image-gradient evaluations per second (rows through the model's
   backward, counted by a wrapper around its forward) and forward rows per second, each as a fraction of
   the bare rate of the same model measured in this run; peak GPU memory and mean utilization (NVML);
   extrapolated time at N = 10,000 (v1: per-chunk time x 20; v2: linear in N, an upper bound);
4. k = 1, 2, 4 evaluations at once on the device (one process each, the ResNet18, ``linf-8-255-v1`` on one
   500-sample chunk each, the clean and AutoAttack stages: the bulk of a checkpoint), throughput against k = 1;
5. with ``--agreement-n N``: AutoAttack on the same N inputs under the fixed backend and under TF32 + cuDNN
   autotuning (4.8x the bare rate on an H200): times and how many per-sample robust flags differ, the evidence
   a TF32 protocol version would need. ``--follow-up`` skips the pilot and the large runs (steps 3a, 3e) that
   an earlier device run measured.

``--cpu-smoke`` checks the code paths on a CPU in well under two minutes: bare rates of the real
architectures at batch 8, training and pruning of the tests' tiny CNN for a few steps, and evaluation of the
tests' seeded tiny CNN (``tiny_cnn(0)``) on a few images labelled with its own predictions (so every point
is clean-correct and the attacks run), with tiny attack settings (``sized``).

The budget is adaptive: N for the large runs is chosen from the measured time of the first one so that
everything ends within ``--budget-s``; whatever does not fit is skipped and said so.

    python bench/bench_gpu.py --data .bench-data/cifar10-real-subset.npz --out "$OUT" --budget-s 380
    python bench/bench_gpu.py --data ../shared/data/cifar10-real-subset.npz --cpu-smoke   # CPU, < 2 min
    python bench/bench_gpu.py --data .bench-data/cifar10-real-subset.npz --follow-up --agreement-n 1000
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from evaluator.run import evaluate as evaluation  # noqa: E402
from evaluator.run import stages  # noqa: E402
from evaluator.record import provenance  # noqa: E402
from evaluator.attacks.common import frozen_for_attack  # noqa: E402
from evaluator.run.datasets import load_test_set, write_cifar10_test  # noqa: E402
from evaluator.registry.variants import build_model  # noqa: E402
from evaluator.protocol import Protocol, load_protocol  # noqa: E402

EPS = 8 / 255
FULL_N = 10_000
SUB_ATTACKS = {"APGDAttack": "apgd-ce", "APGDAttack_targeted": "apgd-t", "FABAttack": "fab-t",
               "SquareAttack": "square"}
MODELS = (("resnet18", "US", 90), ("vgg16", "S", 50))
STARTED = time.perf_counter()
# torch's speed settings on a GPU: TF32 matrix products and convolutions, cuDNN autotuning (not the evaluation's)
TF32_AUTOTUNED = provenance.BackendSettings(tf32_matmul=True, tf32_cudnn=True, cudnn_benchmark=True,
                                            cudnn_deterministic=False)


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- instruments


class Counted(nn.Module):
    """The model, unchanged, counting the rows of every forward pass and the rows its backward reaches."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.forward_rows += int(x.shape[0])
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward_rows += int(grad.shape[0])


class Utilization:
    """GPU utilization sampled every 0.1 s by NVML in a thread; ``mean(since)`` over a time window."""

    def __init__(self, device: str) -> None:
        self.samples: list[tuple[float, float]] = []
        self.handle = None
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
                self.nvml = pynvml
            except Exception as error:  # noqa: BLE001 (utilization is optional)
                say(f"no GPU utilization figures: {error}")
        if self.handle is not None:
            threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                rate = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
                self.samples.append((time.perf_counter(), float(rate)))
            except Exception:  # noqa: BLE001
                return
            time.sleep(0.1)

    def mean(self, since: float, until: float | None = None) -> float | None:
        until = time.perf_counter() if until is None else until
        values = [v for t, v in list(self.samples) if since <= t <= until]
        return sum(values) / len(values) if values else None


@dataclasses.dataclass
class StageFigures:
    wall_s: float = 0.0
    forward_rows: int = 0
    backward_rows: int = 0
    peak_mib: float = 0.0
    util_weighted: float = 0.0  # sum of mean utilization x wall time
    util_wall: float = 0.0
    calls: int = 0


class Recorder:
    """Per-stage figures of the evaluation stages and of AutoAttack's sub-attacks, by patching the stage
    functions of ``evaluator.run.stages`` and the sub-attacks' ``perturb`` (timing only: arguments and results
    pass through untouched)."""

    def __init__(self, device: str, utilization: Utilization) -> None:
        self.device = device
        self.utilization = utilization
        self.model: Counted | None = None
        self.stages: dict[str, StageFigures] = {}
        self.active: list[str] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        nested = any(a.startswith("aa/") for a in self.active) if name.startswith("aa/") else bool(self.active)
        if self.model is None or nested:
            yield  # counted in the stage around it (tuning's clean pass, APGD-T calling APGD's code)
            return
        sync(self.device)
        if self.device.startswith("cuda") and not self.active:
            torch.cuda.reset_peak_memory_stats()
        forward, backward, started = self.model.forward_rows, self.model.backward_rows, time.perf_counter()
        self.active.append(name)
        try:
            yield
        finally:
            self.active.pop()
            sync(self.device)
            ended = time.perf_counter()
            figures = self.stages.setdefault(name, StageFigures())
            figures.wall_s += ended - started
            figures.forward_rows += self.model.forward_rows - forward
            figures.backward_rows += self.model.backward_rows - backward
            figures.calls += 1
            if self.device.startswith("cuda"):
                figures.peak_mib = max(figures.peak_mib, torch.cuda.max_memory_allocated() / 2**20)
            util = self.utilization.mean(started, ended)
            if util is not None:
                figures.util_weighted += util * (ended - started)
                figures.util_wall += ended - started

    def wrap(self, name: str, function: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            with self.stage(name):
                return function(*args, **kwargs)
        return wrapped

    def install(self) -> None:
        for stage, function in (("clean", "clean_chunk"), ("autoattack", "autoattack_chunk"),
                                ("hofmn_tuning", "tune_hofmn"), ("hofmn", "hofmn_chunk")):
            setattr(stages, function, self.wrap(stage, getattr(stages, function)))
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
        from pyautoattack.fab_base import FABAttack
        from pyautoattack.square import SquareAttack

        for cls in (APGDAttack, APGDAttack_targeted, FABAttack, SquareAttack):
            cls.perturb = self.wrap(f"aa/{SUB_ATTACKS[cls.__name__]}", cls.__dict__["perturb"])


# ------------------------------------------------------------------------------------------- bare rates


def bare_rate(model: nn.Module, batch: int, device: str, *, backward: bool, seconds: float) -> float:
    """Images per second of forward(+backward, input gradient only, parameters frozen) at ``batch``."""
    inputs = torch.rand(batch, 3, 32, 32, device=device, generator=torch.Generator(device).manual_seed(0))

    def step() -> None:
        if backward:
            x = inputs.clone().requires_grad_(True)
            torch.autograd.grad(model(x).sum(), x)
        else:
            with torch.no_grad():
                model(inputs)

    with frozen_for_attack(model):
        for _ in range(2):
            step()
        sync(device)
        count, started = 0, time.perf_counter()
        while True:
            step()
            count += 1
            if count % 5 == 0 or not device.startswith("cuda"):
                sync(device)
                if time.perf_counter() - started > seconds:
                    break
        sync(device)
    return batch * count / (time.perf_counter() - started)


def peak_memory_mib(model: nn.Module, batch: int, device: str) -> float | None:
    """Peak GPU memory of one forward+backward (input gradient) at ``batch``."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    x = torch.rand(batch, 3, 32, 32, device=device).requires_grad_(True)
    with frozen_for_attack(model):
        torch.autograd.grad(model(x).sum(), x)
    sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**20
    del x
    torch.cuda.empty_cache()
    return peak


def make_model(architecture: str, smoke: bool) -> nn.Module:
    """The architecture to train and evaluate: the real one, or the tests' tiny CNN in the CPU smoke mode."""
    if smoke:
        from tests.support.tiny_models import TinyCNN

        return TinyCNN()
    return build_model(architecture)


def measure_bare(architecture: str, device: str, seconds: float, batch: int, big_batch: int) -> dict:
    """Bare rates at ``batch`` (the protocols' 500) and at HO-FMN tuning's 64; peak memory at ``big_batch``."""
    model = build_model(architecture).to(device).eval()
    with provenance.fixed_backend():
        rates = {"grad": bare_rate(model, batch, device, backward=True, seconds=seconds),
                 "forward": bare_rate(model, batch, device, backward=False, seconds=seconds)}
        rates["grad_64"] = bare_rate(model, min(64, batch), device, backward=True, seconds=seconds / 2)
        rates["peak_mib_batch_%d" % big_batch] = peak_memory_mib(model, big_batch, device)
    if device.startswith("cuda"):
        with provenance.fixed_backend(TF32_AUTOTUNED):
            rates["grad_tf32_autotuned"] = bare_rate(model, batch, device, backward=True, seconds=seconds)
    return rates


# ------------------------------------------------------------------------------------- training, pruning


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random 32x32 crops of the 4-pixel zero-padded images."""
    n = len(images)
    flip = torch.rand(n, device=images.device, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
    padded = nn.functional.pad(images, (4, 4, 4, 4))
    dx, dy = (int(v) for v in torch.randint(0, 9, (2,), generator=generator, device=images.device).tolist())
    return padded[:, :, dy:dy + 32, dx:dx + 32]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, eps: float = EPS,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD (Linf, random start, step 2.5 eps / steps) on the cross-entropy; the model's mode is kept."""
    alpha = 2.5 * eps / steps
    delta = (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = nn.functional.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def magnitude_masks(model: nn.Module, structure: str, sparsity: int) -> dict[str, torch.Tensor]:
    """US: the ``sparsity``% smallest-magnitude weights of all convolutions and linear layers together;
    S: per convolution, the ``sparsity``% output filters of smallest L1 norm."""
    layers = {name: m.weight for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    masks = {}
    if structure == "US":
        magnitudes = torch.cat([w.detach().abs().flatten() for w in layers.values()])
        threshold = magnitudes.kthvalue(int(sparsity / 100 * magnitudes.numel())).values
        for name, weight in layers.items():
            masks[name] = (weight.detach().abs() > threshold).float()
    else:
        for name, weight in layers.items():
            if weight.ndim != 4:
                continue
            norms = weight.detach().abs().flatten(1).sum(1)
            keep = norms.argsort(descending=True)[: len(norms) - int(sparsity / 100 * len(norms))]
            mask = torch.zeros_like(weight)
            mask[keep] = 1.0
            masks[name] = mask
    return masks


def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, module in model.named_modules():
            if name in masks:
                module.weight.mul_(masks[name])


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seconds: float, device: str,
          pgd_steps: int, masks: dict[str, torch.Tensor] | None = None, lr: float = 0.05,
          batch: int = 128, max_steps: int | None = None) -> int:
    """PGD adversarial training for ``seconds`` (learning rate decaying linearly with the time spent);
    returns the epochs run. ``max_steps`` (the CPU smoke mode) makes it a fixed number of steps instead.
    TF32 and bfloat16 autocast on a GPU: training is not evaluation."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    generator = torch.Generator(device).manual_seed(0)
    cuda = device.startswith("cuda")
    started, epochs, steps = time.perf_counter(), 0, 0
    seconds = float("inf") if max_steps is not None else seconds
    with provenance.fixed_backend(TF32_AUTOTUNED):
        while time.perf_counter() - started < seconds and (max_steps is None or steps < max_steps):
            order = torch.randperm(len(images), device=device, generator=generator)
            for start in range(0, max(1, len(order) - batch + 1), batch):
                spent = (time.perf_counter() - started) / seconds if max_steps is None else steps / max_steps
                if spent >= 1:
                    break
                steps += 1
                for group in optimizer.param_groups:
                    group["lr"] = lr * max(0.02, 1 - spent)
                index = order[start:start + batch]
                x = augment(images[index].float() / 255, generator)
                y = labels[index]
                with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
                    model.eval()  # PGD with fixed BatchNorm statistics, then a training step
                    x_adv = pgd(model, x, y, steps=pgd_steps, generator=generator)
                    model.train()
                    loss = nn.functional.cross_entropy(model(x_adv), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if masks:
                    apply_masks_(model, masks)
            epochs += 1
    model.eval()
    return epochs


def accuracies(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: str) -> tuple[float, float]:
    """Clean accuracy and PGD-10 robust accuracy (eps 8/255) on the given test images."""
    model.eval()
    x, y = images.float().div(255), labels
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    with frozen_for_attack(model):
        x_adv = pgd(model, x, y, steps=10, generator=torch.Generator(device).manual_seed(1))
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return clean, robust


def sparsity_of(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


# ------------------------------------------------------------------------------------------- evaluation


def sized(protocol: Protocol, n: int, smoke: bool) -> Protocol:
    """``protocol`` on the first ``n`` samples (the file's sha256 is kept: bench records are never published).
    The CPU smoke mode also makes the attacks tiny (eps 254/255 reaches almost the whole box, so APGD-CE
    breaks every point and Square and FAB never run; 2 tuning trials of 5 steps; 10 HO-FMN steps): it
    checks the code paths, fast."""
    protocol = dataclasses.replace(protocol, n_samples=n)
    if smoke:
        hofmn = protocol.hofmn
        tuning = dataclasses.replace(hofmn.tuning, trials=2, startup_trials=2, steps=5, batch_size=4)
        protocol = dataclasses.replace(protocol, threat_model=dataclasses.replace(protocol.threat_model,
                                                                                    eps_fraction=Fraction(254, 255)),
                                       chunk_size=min(protocol.chunk_size, 4 if protocol.chunk_size <= 500 else 8),
                                       hofmn=dataclasses.replace(hofmn, tuning=tuning, steps=10))
    return protocol


def write_test_set(folder: Path, images: np.ndarray, labels: np.ndarray, n: int) -> tuple[Path, bool]:
    """A CIFAR-10 test file of ``n`` samples: the real test images, tiled when ``n`` exceeds them."""
    reps = -(-n // len(labels))
    tiled = np.concatenate([images] * reps)[:n]
    write_cifar10_test(folder, tiled.transpose(0, 2, 3, 1).copy(), np.concatenate([labels] * reps)[:n].tolist())
    return folder, reps > 1


def run_evaluation(model: nn.Module, architecture: str, protocol: Protocol, data_dir: Path, device: str,
                   work: Path, recorder: Recorder | None) -> tuple[float, dict]:
    """``evaluate_loaded`` on a fresh work dir; wall time and the record."""
    test_set = load_test_set("CIFAR10", data_dir, n=protocol.n_samples)
    _, structure, sparsity = next(row for row in MODELS if row[0] == architecture)
    key = f"Bench_Gpu2025_{'R18' if architecture == 'resnet18' else 'V16'}_CIFAR10_{structure}_{sparsity}"
    counted = Counted(model)
    if recorder is not None:
        recorder.model, recorder.stages = counted, {}
    sync(device)
    started = time.perf_counter()
    outcome = evaluation.evaluate_loaded(counted, test_set, protocol, model_key=key, checkpoint_sha256="0" * 64,
                                         work_dir=work / "work", out_dir=work / "out", check={"ok": True},
                                         device=device, progress=False)
    sync(device)
    return time.perf_counter() - started, outcome.record


def stage_table(name: str, wall: float, record: dict, stages: dict[str, StageFigures], bare: dict,
                n: int, tiled: bool) -> list[str]:
    counts = record["counts"]
    lines = [f"\n== {name}: N = {n}{' (the 846 real test images tiled)' if tiled else ''}, wall {wall:.1f} s, "
             f"clean {counts.get('clean_correct')} / AA robust {counts.get('aa_robust')} / "
             f"HO-FMN robust {counts.get('hofmn_robust')}",
             f"{'stage':<14}{'calls':>6}{'wall s':>9}{'grad img/s':>12}{'x bare':>8}{'fwd img/s':>12}"
             f"{'x bare':>8}{'peak MiB':>10}{'util %':>8}"]
    order = ["clean", "autoattack", *[f"aa/{a}" for a in SUB_ATTACKS.values()], "hofmn_tuning", "hofmn"]
    for stage in order:
        if stage not in stages:
            continue
        f = stages[stage]
        grad_rate = f.backward_rows / f.wall_s if f.wall_s else 0.0
        fwd_rate = (f.forward_rows - f.backward_rows) / f.wall_s if f.wall_s else 0.0
        util = f"{f.util_weighted / f.util_wall:8.0f}" if f.util_wall else f"{'n/a':>8}"
        lines.append(f"{stage:<14}{f.calls:>6}{f.wall_s:>9.2f}{grad_rate:>12.0f}{grad_rate / bare['grad']:>8.2f}"
                     f"{fwd_rate:>12.0f}{fwd_rate / bare['forward']:>8.2f}{f.peak_mib:>10.0f}{util}")
    return lines


def extrapolate(n: int, stages: dict[str, StageFigures]) -> float:
    """Seconds at N = 10,000: the per-sample stages linear in N, HO-FMN tuning once. For v1 (N a multiple of
    its 500-sample chunks) that is its time per chunk x 20 chunks; for v2 at N < 5,000 an upper bound
    (larger batches use the GPU better)."""
    per_n = sum(stages[s].wall_s for s in ("clean", "autoattack", "hofmn") if s in stages)
    tuning = stages["hofmn_tuning"].wall_s if "hofmn_tuning" in stages else 0.0
    return tuning + per_n * FULL_N / n


@dataclasses.dataclass(frozen=True)
class StageWork:
    """What one stage did in a measured run: rows through the model's backward (input gradient), rows through
    its forward only, the wall time, and the rows-weighted mean batch of those passes."""

    grad_rows: int
    forward_rows: int
    wall_s: float
    batch: int


BareRates = Callable[[int], tuple[float, float]]  # batch -> (grad img/s, forward img/s), bare model, one backend


def bare_seconds(work: StageWork, rates: BareRates, batch: int, scale: float = 1.0) -> float:
    """Seconds the stage's passes (times ``scale``) take at 100% of the bare rates at ``batch``."""
    grad_rate, forward_rate = rates(batch)
    return scale * (work.grad_rows / grad_rate + work.forward_rows / forward_rate)


def project_stage(work: StageWork, *, n: int, full_n: int, chunk: int, attack_batch: int, per_sample: bool,
                  rates: BareRates, ideal_rates: BareRates | None = None) -> dict:
    """One stage at N = ``full_n`` from a run at N = ``n`` under a protocol of ``chunk``-sample chunks.

    Work: a per-sample stage's passes scale with N (the points entering each stage are the same fraction of
    a chunk), HO-FMN's tuning runs once. Batch: a stage's batches are subsets of a chunk (the points still
    robust), so they grow with the chunk's population, up to the attack's batch. Time: the stage's
    efficiency (bare seconds of its passes at its measured batch over its wall time) is held, and applied to
    the bare rates at the larger batch. Efficiency usually rises with the batch (fixed per-iteration costs
    are shared by more rows), so the projection leans high. ``ideal_rates``: also the time at 100% of
    those bare rates (e.g. TF32 + autotuning)."""
    scale = full_n / n if per_sample else 1.0
    batch = min(attack_batch, round(work.batch * min(chunk, full_n) / min(chunk, n))) if per_sample else work.batch
    measured_bare = bare_seconds(work, rates, work.batch)
    efficiency = measured_bare / work.wall_s if work.wall_s else float("nan")
    at_bare = bare_seconds(work, rates, batch, scale)
    projected = {"batch": batch, "scale": scale, "efficiency": efficiency,
                 "seconds": at_bare / efficiency if efficiency else float("nan"), "seconds_at_bare": at_bare}
    if ideal_rates is not None:
        projected["seconds_at_ideal_bare"] = bare_seconds(work, ideal_rates, batch, scale)
    return projected


# ------------------------------------------------------------------------------------------ concurrency


def worker_main(args: argparse.Namespace) -> None:
    """One of k concurrent evaluations (the clean and AutoAttack stages of ``evaluate_chunks``, which are the
    bulk of a checkpoint's time): set up, say ready, wait for go, evaluate, write times."""
    import optuna  # noqa: F401  (imported before "ready": the k = 1 run pays no import the others skip)
    import pyautoattack  # noqa: F401

    model = make_model(args.arch, args.smoke)
    model.load_state_dict(torch.load(args.state, weights_only=True))
    model = model.to(args.device).eval()
    protocol = sized(load_protocol(args.protocol), args.n, args.smoke)
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32, device=args.device))
    sync(args.device)
    test_set = load_test_set("CIFAR10", Path(args.data_dir), n=protocol.n_samples)
    Path(args.ready).write_text("ready")
    while not Path(args.go).exists():
        time.sleep(0.005)
    started = time.time()
    results = stages.evaluate_chunks(model, test_set, protocol, device=args.device, progress=False,
                                         stages=("clean", "autoattack"))
    sync(args.device)
    Path(args.result).write_text(json.dumps({"start": started, "end": time.time(), "wall": time.time() - started,
                                             "aa_robust": int(results.per_sample.aa_robust.sum())}))


def concurrent_throughput(k: int, state: Path, arch: str, protocol: str, n: int, data_dir: Path, device: str,
                          folder: Path, smoke: bool, utilization: Utilization) -> dict:
    """k worker processes evaluating at once; samples per second from the go signal to the last end."""
    folder.mkdir(parents=True, exist_ok=True)
    go = folder / "go"
    procs = []
    for i in range(k):
        command = [sys.executable, __file__, "--worker", "--arch", arch, "--state", str(state), "--protocol",
                   protocol, "--n", str(n), "--data-dir", str(data_dir), "--device", device, "--work",
                   str(folder / f"w{i}"), "--ready", str(folder / f"ready{i}"), "--go", str(go), "--result",
                   str(folder / f"result{i}.json")] + (["--cpu-smoke"] if smoke else [])
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(folder / f"w{i}.log", "w")))
    while not all((folder / f"ready{i}").exists() for i in range(k)):
        if any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError(f"a worker failed: see {folder}/w*.log")
        time.sleep(0.02)
    started = time.perf_counter()
    go.write_text("go")
    go_time = time.time()
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a worker failed: see {folder}/w*.log:\n" + (folder / "w0.log").read_text()[-2000:])
    results = [json.loads((folder / f"result{i}.json").read_text()) for i in range(k)]
    wall = max(r["end"] for r in results) - go_time
    return {"k": k, "wall_s": wall, "samples_per_s": k * n / wall, "util": utilization.mean(started),
            "each_wall_s": [round(r["wall"], 2) for r in results]}


def backend_agreement(model: nn.Module, images: np.ndarray, labels: np.ndarray, n: int, device: str,
                      smoke: bool) -> dict:
    """The project's AutoAttack (``autoattack`` (Linf), the protocol's batch 500 and seed) on the same ``n``
    inputs under the fixed backend and under TF32 + cuDNN autotuning: wall time of each and how many per-sample
    robust flags differ. The evidence a TF32 protocol version would need (never a change to v1 or v2)."""
    from evaluator.attacks.autoattack import autoattack
    from evaluator.registry.norms import get_norm

    reps = -(-n // len(labels))
    x = torch.from_numpy(np.concatenate([images] * reps)[:n]).to(device).float() / 255
    y = torch.from_numpy(np.concatenate([labels] * reps)[:n]).to(device).long()
    eps = 254 / 255 if smoke else EPS
    model = model.to(device).eval()
    found: dict = {"n": n, "tiled": reps > 1}
    flags = {}
    for name, settings in (("strict", provenance.BACKEND), ("tf32_autotuned", TF32_AUTOTUNED)):
        with provenance.fixed_backend(settings):
            sync(device)
            started = time.perf_counter()
            result = autoattack(model, x, y, eps=eps, seed=0, batch_size=500, device=device, norm=get_norm("Linf"))
            sync(device)
        flags[name] = result.robust.cpu()
        found[f"{name}_s"] = round(time.perf_counter() - started, 2)
        found[f"{name}_robust"] = int(flags[name].sum())
    differ = flags["strict"] != flags["tf32_autotuned"]
    found["flags_differ"] = int(differ.sum())
    found["differ_indices"] = differ.nonzero().flatten()[:20].tolist()
    return found


# ----------------------------------------------------------------------------------------------- main


def machine(device: str) -> str:
    text = f"torch {torch.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        text += (f", {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
                 f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the npz of real CIFAR-10 images (x_train, y_train, x_test, y_test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, default=380.0, help="wall time for the whole bench")
    parser.add_argument("--train-s", type=float, default=None, help="training seconds per model (default: by budget)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-gpu-out")))
    parser.add_argument("--cpu-smoke", dest="smoke", action="store_true", help="tiny settings: checks the code paths")
    parser.add_argument("--models", default="resnet18,vgg16",
                        help="architectures to train and evaluate (a follow-up run can skip VGG16)")
    parser.add_argument("--v2-n", type=int, default=None,
                        help="evaluate v2 at this N and skip the v1 pilot (a follow-up run after a full one)")
    parser.add_argument("--ks", default="1,2,4", help="concurrent evaluations to measure, comma-separated")
    parser.add_argument("--agreement-n", type=int, default=0,
                        help="AutoAttack on this many inputs under the fixed backend and under TF32 + autotuning: "
                             "per-sample flag agreement (0: skip)")
    parser.add_argument("--follow-up", action="store_true",
                        help="skip the v1 pilot and the large runs (measured before): agreement, k, VGG16 only")
    parser.add_argument("--aa-chunk-s", type=float, default=85.0,
                        help="with --follow-up: the AutoAttack time of one 500-sample chunk measured before "
                             "(H200, ResNet18: 83.5 s), which sizes what fits")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--arch", "--state", "--protocol", "--data-dir", "--work", "--ready", "--go", "--result"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    if args.data is None:
        parser.error("--data is required")
    run_bench(args)


def bench_size(pilot: float, aa_pilot: float, unit: int, smoke: bool, left: Callable[[], float]) -> int:
    """v2's N: the largest that leaves about half of the time left for the rest; v2 is at most linear in N."""
    room = 0.45 * left()
    n_big = max(2 * unit, min(5000, unit * int(room / (0.8 * pilot)))) if room > 1.6 * pilot else unit
    n_big = 2 * unit if smoke else n_big
    say(f"pilot {pilot:.1f} s per {unit} samples (AutoAttack {aa_pilot:.1f} s); {left():.0f} s left; "
        f"large runs at N = {n_big}")
    return n_big


def run_bench(args: argparse.Namespace) -> None:
    device, smoke = args.device, args.smoke
    if smoke:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    deadline = STARTED + args.budget_s
    left = lambda: deadline - time.perf_counter()  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine(device), "device": device, "smoke": smoke,
                    "backend": provenance.backend_facts(device)}
    say(report["machine"])
    utilization = Utilization(device)
    with np.load(args.data, allow_pickle=False) as data:
        arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    if smoke:
        arrays = {"x_train": arrays["x_train"][:64], "y_train": arrays["y_train"][:64],
                  "x_test": arrays["x_test"][:16], "y_test": arrays["y_test"][:16]}

    # 1. bare rates
    bare = {}
    for architecture, _, _ in [row for row in MODELS if row[0] in args.models.split(",")]:
        bare[architecture] = measure_bare(architecture, device, 0.3 if smoke else 2.0, 8 if smoke else 500,
                                          8 if smoke else 5000)
        say(f"bare {architecture}: " + ", ".join(f"{k} {v:.0f}" for k, v in bare[architecture].items()
                                                  if v is not None))
    report["bare"] = bare

    # 2. training and pruning
    x_train = torch.from_numpy(arrays["x_train"]).to(device)
    y_train = torch.from_numpy(arrays["y_train"]).to(device)
    x_test = torch.from_numpy(arrays["x_test"]).to(device)
    y_test = torch.from_numpy(arrays["y_test"]).to(device)
    train_s = args.train_s if args.train_s is not None else (2.0 if smoke else min(40.0, 0.07 * args.budget_s))
    models, report["models"] = {}, {}
    chosen = [row for row in MODELS if row[0] in args.models.split(",")]
    for architecture, structure, sparsity in chosen:
        torch.manual_seed(0)
        model = make_model(architecture, smoke).to(device)
        batch = 16 if smoke else 256
        epochs = train(model, x_train, y_train, seconds=train_s * 0.7, device=device, pgd_steps=2 if smoke else 3,
                       batch=batch, max_steps=8 if smoke else None)
        masks = magnitude_masks(model, structure, sparsity)
        apply_masks_(model, masks)
        pruned_clean, pruned_robust = accuracies(model, x_test, y_test, device)
        fine = train(model, x_train, y_train, seconds=train_s * 0.3, device=device, pgd_steps=2 if smoke else 3,
                     masks=masks, lr=0.01, batch=batch, max_steps=4 if smoke else None)
        clean, robust = accuracies(model, x_test, y_test, device)
        facts = {"structure": structure, "sparsity_target": sparsity, "sparsity": round(sparsity_of(model), 4),
                 "epochs": epochs, "fine_tune_epochs": fine, "clean": clean, "pgd10_robust": robust,
                 "after_pruning": [pruned_clean, pruned_robust]}
        report["models"][architecture] = facts
        models[architecture] = model
        if smoke:  # a few steps can leave the tiny CNN constant, which no attack moves: evaluate the tests' seeded one
            from tests.support.tiny_models import tiny_cnn

            models[architecture] = tiny_cnn(0).to(device)
        say(f"trained {architecture} {structure}-{sparsity}: {json.dumps(facts)}")

    # 3. evaluations (the attack packages imported first, so that no stage pays for an import)
    import optuna  # noqa: F401
    import pyautoattack  # noqa: F401

    recorder = Recorder(device, utilization)
    recorder.install()
    v1, v2 = load_protocol("linf-8-255-v1"), load_protocol("linf-8-255-v2")
    tmp = Path(tempfile.mkdtemp(prefix="apb-bench-gpu-"))
    images, labels = arrays["x_test"], arrays["y_test"]
    if smoke:  # labelled with the model's own predictions: every point is clean-correct and gets attacked
        with torch.no_grad():
            labels = next(iter(models.values()))(x_test.float() / 255).argmax(1).cpu().numpy()
    lines: list[str] = []
    report["runs"] = []

    def evaluate(architecture: str, protocol: Protocol, n: int) -> float:
        folder, tiled = write_test_set(tmp / f"data-{n}", images, labels, n)
        sized_protocol = sized(protocol, n, smoke)
        wall, record = run_evaluation(models[architecture], architecture, sized_protocol, folder, device,
                                      tmp / f"run-{architecture}-{protocol.id}-{n}", recorder)
        stages = dict(recorder.stages)
        table = stage_table(f"{architecture} {protocol.id}", wall, record, stages, bare[architecture], n, tiled)
        full = extrapolate(n, stages)
        table.append(f"extrapolated to N = {FULL_N}: {full:.0f} s ({full / 60:.1f} min)"
                     f"{'' if protocol.chunk_size <= n or protocol is v1 else ' (upper bound: linear in N)'}")
        lines.extend(table)
        print("\n".join(table), flush=True)
        report["runs"].append({"architecture": architecture, "protocol": protocol.id, "n": n, "tiled": tiled,
                               "wall_s": wall, "extrapolated_10k_s": full, "counts": record["counts"],
                               "record_backend": record["provenance"].get("backend"),
                               "stages": {k: dataclasses.asdict(v) for k, v in stages.items()}})
        return wall

    unit = 4 if smoke else 500  # one v1 chunk
    if args.agreement_n and "resnet18" in models:
        report["agreement"] = backend_agreement(models["resnet18"], images, labels, args.agreement_n, device, smoke)
        say(f"backend agreement: {json.dumps(report['agreement'])}")
    if args.follow_up:  # measured before: the pilot and the large runs; these figures size what fits
        pilot, aa_pilot, n_big = args.aa_chunk_s * 1.6, args.aa_chunk_s, unit
    elif args.v2_n:  # a follow-up run: v2 at the given N first, then the concurrency measurements
        pilot = evaluate("resnet18", v2, args.v2_n) * unit / args.v2_n
        aa_pilot = report["runs"][-1]["stages"].get("autoattack", {}).get("wall_s", pilot) * unit / args.v2_n
        n_big = unit
    else:
        # (a) the pilot: v1 and v2 compute the same thing on one 500-sample chunk; it sizes the rest
        pilot = evaluate("resnet18", v1, unit)
        aa_pilot = report["runs"][-1]["stages"].get("autoattack", {}).get("wall_s", pilot)
    if not args.v2_n and not args.follow_up:
        n_big = bench_size(pilot, aa_pilot, unit, smoke, left)
        if n_big > unit:
            evaluate("resnet18", v2, n_big)
    # (c) k evaluations at once, one process each: ResNet18, v1, one chunk, the clean and AutoAttack stages
    report["concurrency"] = []
    ks = [int(k) for k in args.ks.split(",") if k] if "resnet18" in models else []
    if ks:
        state = tmp / "resnet18.pt"
        torch.save(models["resnet18"].state_dict(), state)
        folder, _ = write_test_set(tmp / f"data-{unit}", images, labels, unit)
    for k in ks:
        if left() < aa_pilot * (1 + 0.6 * k) + 15:
            say(f"k = {k} skipped: {left():.0f} s left")
            continue
        result = concurrent_throughput(k, state, "resnet18", "linf-8-255-v1", unit, folder, device, tmp / f"k{k}",
                                       smoke, utilization)
        report["concurrency"].append(result)
        say(f"k = {k}: {json.dumps(result)}")
    # (d) VGG16 (filters 50%) on one chunk; (e) v1 at the large N beside v2's
    if "vgg16" in models and left() > pilot * 0.8 + 10:
        evaluate("vgg16", v1, unit)
    else:
        say(f"VGG16 skipped ({left():.0f} s left)")
    if n_big > unit and left() > pilot * n_big / unit + 10:
        evaluate("resnet18", v1, n_big)
    elif n_big > unit:
        say(f"v1 at N = {n_big} skipped ({left():.0f} s left): v1 at 10,000 is 20 of the pilot's chunks")

    # summary
    summary = ["\n== summary", report["machine"], f"backend: {json.dumps(report['backend'])}"]
    for architecture, rates in bare.items():
        summary.append(f"bare {architecture} batch 500: {rates['grad']:.0f} grad img/s, {rates['forward']:.0f} fwd "
                       f"img/s; batch 64: {rates['grad_64']:.0f} grad img/s; TF32+autotune: "
                       f"{rates.get('grad_tf32_autotuned') or float('nan'):.0f} grad img/s; peak MiB at the large "
                       f"batch: {rates[[k for k in rates if k.startswith('peak')][0]]}")
    for run in report["runs"]:
        summary.append(f"{run['architecture']:<9} {run['protocol']:<14} N {run['n']:>5}: {run['wall_s']:7.1f} s, "
                       f"N=10,000 ~ {run['extrapolated_10k_s'] / 60:5.1f} min, AA robust {run['counts'].get('aa_robust')}")
    base = next((c for c in report["concurrency"] if c["k"] == 1), None)
    for c in report["concurrency"]:
        gain = c["samples_per_s"] / base["samples_per_s"] if base else float("nan")
        summary.append(f"k = {c['k']}: {c['samples_per_s']:.1f} samples/s together ({gain:.2f} x k = 1), "
                       f"wall {c['wall_s']:.1f} s, util {c['util'] or float('nan'):.0f}%")
    if "agreement" in report:
        a = report["agreement"]
        summary.append(f"backend agreement, ResNet18, AutoAttack on N = {a['n']}: strict {a['strict_s']} s "
                       f"({a['strict_robust']} robust), TF32+autotune {a['tf32_autotuned_s']} s "
                       f"({a['tf32_autotuned_robust']} robust), flags differ on {a['flags_differ']}")
    summary.append(f"total {time.perf_counter() - STARTED:.0f} s of a {args.budget_s:.0f} s budget")
    print("\n".join(summary), flush=True)
    (args.out / "bench_gpu.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "bench_gpu_tables.txt").write_text("\n".join(lines + summary) + "\n")


if __name__ == "__main__":
    main()

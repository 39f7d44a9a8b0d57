"""A realistic work profile of one checkpoint on one GPU (issue 23): per-stage time, work, robust fraction and
efficiency, the projection to N = 10,000, model-wrapping speed-ups side by side, and their numerics agreement.

Method (``bash bench/device_profile.sh`` on the device; ``--cpu-smoke`` checks every code path on a CPU):

1. **Model.** ResNet18 (``evaluator.models``) adversarially trained with PGD (eps 8/255) on the npz's 4,660 real
   CIFAR-10 training images for ``--train-s`` seconds, then evaluated on those same training images, where a
   PGD-trained model stays robust (the aim: at least 40% AutoAttack-robust, as real AP checkpoints are; the
   output states the fraction reached). The trained weights are rounded to float16 and saved to
   ``--out`` in parts under 16 MiB (``model-part-*.npz``) so that a later session can continue on the same
   model (``--load-model``); this session evaluates the rounded weights too.
2. **Profile runs.** ``evaluate_loaded`` (what ``apb evaluate`` runs after fetch and check: the official
   ``pyautoattack`` through ``evaluator.attacks.autoattack``, then HO-FMN tuning and HO-FMN) under
   ``linf-8-255-v2`` on the first ``--n`` training images, once per ``--configs`` entry, in one process. The
   model is wrapped, never the attack: a counting wrapper (rows through the forward, rows the backward
   reaches, batch sizes per stage) around an optional speed-up wrapper (below). Per stage (clean,
   APGD-CE, APGD-T, FAB-T, Square, HO-FMN tuning, HO-FMN): wall time, forward and forward+backward rows,
   mean batch, the AutoAttack-robust fraction after the stage (AutoAttack's own per-attack accuracy
   dictionary, as it hands it to its Square check) and the fraction of the bare rate.
3. **Bare rates** of the same model, parameters frozen, input gradient only, at each stage's batch and at the
   batch the stage would have at N = 10,000, under each configuration's backend (eager, unwrapped).
4. **Projection** (``bench_gpu.project_stage``): per stage, the work scaled to N = 10,000, the bare rates at
   the projected batch, the measured efficiency held; beside it the time at 100% of the bare rate (strict)
   and at 100% of the TF32 + autotuning bare rate.
5. **Agreement** of every configuration with the first (strict, eager): per-sample AutoAttack flags, robust
   accuracy, HO-FMN median distance (over clean-correct points), against the thresholds 99.9% / 0.1 points /
   1%; a verdict only when at least ``--agreement-min`` points were compared (the issue asks for 5,000).
   Per-sample arrays go to ``--out`` (``agreement-<config>.npz``); ``--combine`` pools those of several
   sessions (disjoint ``--first`` ranges on the same saved model) into one verdict.
6. **Profiler** (``--profile-n``, CUDA only): a separate short run on that many points under the last
   configuration, ``torch.profiler`` over 40 model calls of each stage: device time in the model's
   kernels (its forward, and the autograd functions of its layers) against everything else and idle time.

Configurations (``--configs``, comma-separated; each a ``+``-joined set of):
``strict`` (the evaluator's fixed backend: TF32 off, no autotuning, deterministic cuDNN), ``tf32`` (TF32 +
cuDNN autotuning), ``cl`` (channels_last weights and inputs), ``graphs`` (CUDA graphs of the model's forward and
of its forward+backward at fixed bucket batch sizes, inputs padded to the bucket; CUDA only), ``compile``
(``torch.compile`` of the model; reported, never adopted: its numerics are not covered). Batches already go
to the GPU through pinned host memory (``evaluate._to_device``), so no flag adds pinned buffers.

    python bench/bench_profile.py --data ../shared/data/cifar10-real-subset.npz --cpu-smoke   # CPU, ~1 min
    python bench/bench_profile.py --data .bench-data/cifar10-real-subset.npz --out "$OUT" \\
        --train-s 120 --n 500 --configs strict,tf32,tf32+cl+graphs --budget-s 470             # device
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gpu  # noqa: E402  (the instruments, training and projection this profile shares)
from bench_gpu import (FULL_N, TF32_AUTOTUNED, Counted, Recorder, StageWork, Utilization, bare_rate,  # noqa: E402
                       project_stage, say, sync)

from evaluator.record import provenance  # noqa: E402
from evaluator.attacks.common import frozen_for_attack  # noqa: E402
from evaluator.registry.variants import build_model  # noqa: E402
from evaluator.protocol import EvaluableProtocol, load_protocol  # noqa: E402

STAGES = ("clean", "aa/apgd-ce", "aa/apgd-t", "aa/fab-t", "aa/square", "hofmn_tuning", "hofmn")
AA_STAGES = {"aa/apgd-ce": "apgd-ce", "aa/apgd-t": "apgd-t", "aa/fab-t": "fab-t", "aa/square": "square"}
PER_SAMPLE = {"clean", "autoattack", *AA_STAGES, "hofmn"}
WRAPPERS = ("strict", "tf32", "cl", "graphs", "compile")
THRESHOLDS = {"flags_agree": 0.999, "robust_points": 0.1, "median_rel": 0.01}
PART_BYTES = 15 * 2**20
CLEAN_BATCH = 500  # evaluate_loaded's batch of plain forward passes (the clean stage), whatever the protocol


def stage_batch_limit(stage: str, protocol: EvaluableProtocol) -> int:
    """The largest batch a stage runs at: the clean stage's forward batch, else the attack batch."""
    return CLEAN_BATCH if stage == "clean" else protocol.autoattack.batch_size


# ------------------------------------------------------------------------------------------ configurations


@dataclasses.dataclass(frozen=True)
class Config:
    """One way to run the evaluation: a numerics backend and the model wrappers on top of it."""

    name: str
    backend: provenance.BackendSettings
    channels_last: bool
    graphs: bool
    compile: bool

    @classmethod
    def parse(cls, name: str) -> Config:
        parts = set(name.split("+"))
        unknown = parts - set(WRAPPERS)
        if unknown or ("strict" in parts) == ("tf32" in parts):
            raise SystemExit(f"--configs: {name!r}: join exactly one of strict/tf32 with any of cl, graphs, compile "
                             f"by '+'{f' (unknown: {sorted(unknown)})' if unknown else ''}")
        return cls(name, TF32_AUTOTUNED if "tf32" in parts else provenance.BACKEND, "cl" in parts, "graphs" in parts,
                   "compile" in parts)


@contextlib.contextmanager
def evaluation_backend(settings: provenance.BackendSettings) -> Iterator[None]:
    """``evaluate_chunks`` fixes ``provenance.BACKEND``; for the duration it fixes ``settings`` instead. Bench
    only: a record made so states the strict backend, and stays in the bench's temporary folder."""
    original = provenance.fixed_backend

    def fixed(_: provenance.BackendSettings = settings) -> contextlib.AbstractContextManager:
        return original(settings)

    provenance.fixed_backend = fixed  # type: ignore[assignment]
    try:
        yield
    finally:
        provenance.fixed_backend = original


class _FreshGrad(torch.autograd.Function):
    """Identity whose backward hands on a copy: a graph's gradient buffer is overwritten by its next replay."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clone()


def buckets_up_to(largest: int, smallest: int = 16) -> list[int]:
    """Batch buckets 16, 24, 32, 48, 64, ... (at most a third of a bucket is padding) up to ``largest``."""
    found: set[int] = set()
    base = smallest
    while base < largest:
        found.update(b for b in (base, base * 3 // 2) if b < largest)
        base *= 2
    return sorted(found | {largest})


class Sped(nn.Module):
    """The model under speed-ups that leave the attack's code alone: channels_last memory format, and CUDA
    graphs of the forward (no gradient) and of the forward+backward (input gradient) at bucket batch sizes,
    the input padded with zeros to its bucket and the output cut back (eval-mode layers treat each row on its
    own, so the padding rows change no other row's values; the agreement check tests the numerics). Graphs
    are used only while every parameter is frozen (inside an attack); outputs are copies."""

    def __init__(self, inner: nn.Module, *, channels_last: bool, buckets: list[int], compile_model: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        if channels_last or compile_model:  # a copy: the other configurations keep the model as it was
            inner = copy.deepcopy(inner)
        self.inner = inner.to(memory_format=torch.channels_last) if channels_last else inner
        self.call: Callable[[torch.Tensor], torch.Tensor] = torch.compile(self.inner) if compile_model else self.inner
        self.buckets = buckets
        self.graphed: dict[tuple[int, bool], Callable[[torch.Tensor], torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle() if buckets else None
        self.captures = 0

    def _shaped(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        if (not self.buckets or not x.is_cuda or n > self.buckets[-1]
                or any(p.requires_grad for p in self.inner.parameters())):
            return self.call(self._shaped(x))
        bucket = next(b for b in self.buckets if b >= n)
        grad = x.requires_grad and torch.is_grad_enabled()
        run = self.graphed.get((bucket, grad)) or self._capture(bucket, grad, x)
        padded = x if bucket == n else torch.cat([x, x.new_zeros((bucket - n, *x.shape[1:]))])
        return run(_FreshGrad.apply(padded) if grad else padded)[:n].clone()

    def _capture(self, bucket: int, grad: bool, like: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        sample = self._shaped(like.new_zeros((bucket, *like.shape[1:])))
        if grad:
            graphed = torch.cuda.make_graphed_callables(lambda t: self.call(self._shaped(t)),
                                                        (sample.requires_grad_(True),), pool=self.pool)
            run: Callable[[torch.Tensor], torch.Tensor] = graphed  # type: ignore[assignment]
        else:
            with torch.no_grad():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        self.call(sample)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self.pool):
                    static_out = self.call(sample)

            def run(t: torch.Tensor) -> torch.Tensor:
                sample.copy_(self._shaped(t))
                graph.replay()
                return static_out

        self.captures += 1
        self.graphed[(bucket, grad)] = run
        return run


class Profiled(Counted):
    """``Counted`` that also keeps, per stage, how many calls had each (batch, input gradient) shape, and steps
    a profiler when one is attached."""

    def __init__(self, inner: nn.Module, recorder: Recorder) -> None:
        super().__init__(inner)
        self.recorder = recorder
        self.shapes: dict[str, Counter] = {}
        self.on_call: Callable[[str], None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stage = self.recorder.active[-1] if self.recorder.active else "outside"
        grad = x.requires_grad and torch.is_grad_enabled()
        self.shapes.setdefault(stage, Counter())[(int(x.shape[0]), grad)] += 1
        if self.on_call is not None:
            self.on_call(stage)
        with torch.profiler.record_function("apb::model_forward"):
            return super().forward(x)


def install_robust_fractions(recorder: Recorder) -> list[dict]:
    """Collect AutoAttack's robust accuracy after each of its attacks, per call, as numbers of points: the
    dictionary AutoAttack hands to its own Square check at the end of ``run_standard_evaluation``."""
    import pyautoattack
    from pyautoattack import checks

    calls: list[dict] = []
    sizes: list[int] = []
    run, check = pyautoattack.AutoAttack.run_standard_evaluation, checks.check_square_sr

    def run_standard_evaluation(self, x_orig, y_orig, *args, **kwargs):
        sizes.append(int(x_orig.shape[0]))
        return run(self, x_orig, y_orig, *args, **kwargs)

    def check_square_sr(acc_dict, *args, **kwargs):
        calls.append({name: round(fraction * sizes[-1]) for name, fraction in acc_dict.items()})
        return check(acc_dict, *args, **kwargs)

    pyautoattack.AutoAttack.run_standard_evaluation = run_standard_evaluation
    checks.check_square_sr = check_square_sr
    return calls


# ------------------------------------------------------------------------------------------------ model


def train_model(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor, device: str) -> tuple[nn.Module, dict]:
    """The profile's model: trained here (PGD, ``bench_gpu.train``) or loaded from an earlier session's parts;
    either way the float16-rounded weights (what the parts hold)."""
    model = bench_gpu.make_model("resnet18", args.smoke).to(device)
    facts: dict = {"architecture": "TinyCNN (tests/support)" if args.smoke else "ResNet18 (evaluator.models)",
                   "parameters": sum(p.numel() for p in model.parameters())}
    if args.load_model:
        load_parts(model, sorted(args.load_model.glob("model-part-*.npz")))
        facts["loaded_from"] = str(args.load_model)
    else:
        torch.manual_seed(0)
        started = time.perf_counter()
        facts["epochs"] = bench_gpu.train(model, x, y, seconds=args.train_s, device=device,
                                          pgd_steps=2 if args.smoke else 3, batch=16 if args.smoke else 256,
                                          max_steps=4 if args.smoke else None)
        facts["train_s"] = round(time.perf_counter() - started, 1)
        facts["saved"] = [p.name for p in save_parts(model, args.out)]
        load_parts(model, sorted(args.out.glob("model-part-*.npz")))
    return model.eval(), facts


def save_parts(model: nn.Module, folder: Path) -> list[Path]:
    """The state dict in float16 (buffers as they are), in npz parts of at most ``PART_BYTES``."""
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu()
        array = (array.half() if array.is_floating_point() else array).numpy()
        if size + array.nbytes > PART_BYTES and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][name] = array
        size += array.nbytes
    paths = [folder / f"model-part-{i}.npz" for i in range(len(parts))]
    for path, arrays in zip(paths, parts):
        np.savez(path, **arrays)  # type: ignore[arg-type]
    return paths


def load_parts(model: nn.Module, paths: list[Path]) -> None:
    if not paths:
        raise SystemExit("--load-model: no model-part-*.npz in that folder (a training run's --out writes them)")
    state = model.state_dict()
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            for name in data.files:
                state[name] = torch.from_numpy(data[name]).to(state[name].dtype)
    model.load_state_dict(state)


# ------------------------------------------------------------------------------------------- profile runs


def sized(protocol: EvaluableProtocol, n: int, smoke: bool) -> EvaluableProtocol:
    """v2 on ``n`` points (one chunk up to 5,000). In the smoke mode eps is 1/1000 (the tiny CNN keeps points
    robust through APGD-CE, so that all four AutoAttack stages run; ``shrink_autoattack_for_smoke``) and HO-FMN
    is tuned with 2 trials of 5 steps and runs 10 steps."""
    protocol = dataclasses.replace(protocol, n_samples=n)
    if smoke:
        hofmn = protocol.hofmn
        tuning = dataclasses.replace(hofmn.tuning, trials=2, startup_trials=2, steps=5, batch_size=4)
        protocol = dataclasses.replace(protocol, threat_model=dataclasses.replace(protocol.threat_model,
                                                                                    eps_fraction=Fraction(1, 1000)),
                                       hofmn=dataclasses.replace(hofmn, tuning=tuning, steps=10))
    return protocol


def shrink_autoattack_for_smoke() -> None:
    """Smoke mode only: the official AutoAttack with its iteration counts cut (APGD and FAB 5 iterations, 2
    target classes, Square 40 queries) after its ``standard`` settings are set, so that all four stages run
    within seconds on a CPU. Never on the device: there every setting is the protocol's."""
    import pyautoattack

    set_version = pyautoattack.AutoAttack._set_version

    def shrunk(self, version="standard"):
        set_version(self, version)
        for attack in (self.apgd, self.apgd_targeted, self.fab):
            attack.n_iter = 5
        self.apgd_targeted.n_target_classes = self.fab.n_target_classes = 2
        self.square.n_queries = 40

    pyautoattack.AutoAttack._set_version = shrunk


def stage_work(figures: bench_gpu.StageFigures, shapes: Counter) -> StageWork:
    """A stage's passes and its rows-weighted mean batch (of the gradient passes when it has any)."""
    grad = {(b, g): c for (b, g), c in shapes.items() if g}
    chosen = grad or shapes
    rows = sum(b * c for (b, _), c in chosen.items())
    batch = round(rows / sum(c for c in chosen.values())) if chosen else 1
    return StageWork(figures.backward_rows, figures.forward_rows - figures.backward_rows, figures.wall_s,
                     max(1, batch))


def profile_run(model: nn.Module, config: Config, protocol: EvaluableProtocol, images: np.ndarray, labels: np.ndarray,
                device: str, work: Path, recorder: Recorder, robust_calls: list[dict],
                on_call: Callable[[str], None] | None = None) -> dict:
    """One evaluation through ``evaluate_loaded`` under ``config``: per-stage figures and per-sample results.
    ``on_call(stage)`` is called before every model call (the profiler's clock)."""
    from evaluator.run.evaluate import evaluate_loaded
    from evaluator.record.records import PerSample

    folder, _ = bench_gpu.write_test_set(work / "data", images, labels, protocol.n_samples)
    from evaluator.run.datasets import load_test_set

    test_set = load_test_set("CIFAR10", folder, n=protocol.n_samples)
    buckets = buckets_up_to(protocol.autoattack.batch_size) if config.graphs and device.startswith("cuda") else []
    sped = Sped(model, channels_last=config.channels_last, buckets=buckets, compile_model=config.compile)
    counted = Profiled(sped, recorder)
    counted.on_call = on_call
    recorder.model, recorder.stages = counted, {}
    del robust_calls[:]
    sync(device)
    started = time.perf_counter()
    with evaluation_backend(config.backend):
        outcome = evaluate_loaded(counted, test_set, protocol, model_key="Bench_Profile2026_R18_CIFAR10_US_0",
                                  checkpoint_sha256="0" * 64, work_dir=work / "work", out_dir=work / "out",
                                  check={"ok": True}, device=device, progress=False)
    sync(device)
    wall = time.perf_counter() - started
    per_sample = PerSample.load(outcome.path.with_suffix(".npz"))
    robust = robust_after(robust_calls, int(per_sample.clean_correct.sum()))
    stages = {name: {**dataclasses.asdict(stage_work(recorder.stages[name], counted.shapes.get(name, Counter()))),
                     "calls": recorder.stages[name].calls, "peak_mib": round(recorder.stages[name].peak_mib),
                     "robust_after": robust.get(name)}
              for name in STAGES if name in recorder.stages}
    return {"config": config.name, "n": protocol.n_samples, "wall_s": wall, "stages": stages,
            "graph_captures": sped.captures, "clean": int(per_sample.clean_correct.sum()),
            "aa_robust": int(per_sample.aa_robust.sum()), "per_sample": per_sample}


def robust_after(calls: list[dict], clean: int) -> dict[str, int]:
    """Points still AutoAttack-robust after each stage, summed over chunks; a stage AutoAttack skipped (no
    robust point left) leaves the count of the one before."""
    found: dict[str, int] = {"clean": clean}
    for stage, attack in AA_STAGES.items():
        found[stage] = sum(call.get(attack, min(call.values())) for call in calls)
    return found


# ----------------------------------------------------------------------------------------------- bare rates


def bare_rates(model: nn.Module, batches: set[int], backend: provenance.BackendSettings, device: str,
               seconds: float) -> dict[int, tuple[float, float]]:
    """Bare (grad img/s, forward img/s) of the eager, unwrapped model at each batch, under ``backend``."""
    found = {}
    with provenance.fixed_backend(backend):
        for batch in sorted(batches):
            found[batch] = (bare_rate(model, batch, device, backward=True, seconds=seconds),
                            bare_rate(model, batch, device, backward=False, seconds=seconds))
    return found


def nearest(table: dict[int, tuple[float, float]]) -> bench_gpu.BareRates:
    return lambda batch: table[min(table, key=lambda b: abs(b - batch))]


def projected_batches(run: dict, protocol: EvaluableProtocol) -> set[int]:
    """Every batch the projection asks a bare rate for: each stage's measured batch and its batch at 10,000."""
    batches = set()
    for name, stage in run["stages"].items():
        work = StageWork(**{k: stage[k] for k in ("grad_rows", "forward_rows", "wall_s", "batch")})
        batches.add(work.batch)
        if name in PER_SAMPLE:
            batches.add(min(stage_batch_limit(name, protocol),
                            round(work.batch * min(protocol.chunk_size, FULL_N) / min(protocol.chunk_size, run["n"]))))
    return batches


def projection(run: dict, protocol: EvaluableProtocol, rates: dict, ideal: dict | None) -> dict:
    stages: dict[str, dict] = {}
    full: dict = {"v2_chunk": protocol.chunk_size, "stages": stages}
    for name, stage in run["stages"].items():
        work = StageWork(**{k: stage[k] for k in ("grad_rows", "forward_rows", "wall_s", "batch")})
        stages[name] = project_stage(work, n=run["n"], full_n=FULL_N, chunk=protocol.chunk_size,
                                             attack_batch=stage_batch_limit(name, protocol),
                                             per_sample=name in PER_SAMPLE, rates=nearest(rates),
                                             ideal_rates=nearest(ideal) if ideal else None)
    for key in ("seconds", "seconds_at_bare", "seconds_at_ideal_bare"):
        full[key] = sum(s.get(key, 0.0) for s in stages.values())
    return full


# ------------------------------------------------------------------------------------------------ agreement


def agreement(strict: dict[str, np.ndarray], other: dict[str, np.ndarray], minimum: int) -> dict:
    """Per-sample AutoAttack flags, robust accuracy and HO-FMN median distance of ``other`` against ``strict``."""
    n = len(strict["aa_robust"])
    agree = float((strict["aa_robust"] == other["aa_robust"]).mean()) if n else float("nan")
    robust_points = 100.0 * abs(float(strict["aa_robust"].mean()) - float(other["aa_robust"].mean())) if n else 0.0
    medians = [float(np.median(a["hofmn_distance"][a["clean_correct"]])) if a["clean_correct"].any() else float("nan")
               for a in (strict, other)]
    relative = abs(medians[1] - medians[0]) / medians[0] if medians[0] else float("nan")
    checks = {"flags_agree": agree >= THRESHOLDS["flags_agree"],
              "robust_points": robust_points <= THRESHOLDS["robust_points"],
              "median_rel": bool(relative <= THRESHOLDS["median_rel"])}
    verdict = ("pass" if all(checks.values()) else "fail") if n >= minimum else f"too few points ({n} < {minimum})"
    return {"n": n, "flags_agree": agree, "flags_differ": int((strict["aa_robust"] != other["aa_robust"]).sum()),
            "robust_points_diff": robust_points, "hofmn_median": medians, "hofmn_median_rel_diff": relative,
            "checks": checks, "verdict": verdict}


def arrays_of(per_sample: object) -> dict[str, np.ndarray]:
    return {name: getattr(per_sample, name) for name in ("sample_index", "clean_correct", "aa_robust", "hofmn_distance")}


def save_agreement(path: Path, strict: dict[str, np.ndarray], others: dict[str, dict[str, np.ndarray]]) -> None:
    """Every configuration's per-sample arrays beside the strict ones, in one npz (``<config>__<array>``)."""
    arrays = {f"strict__{k}": v for k, v in strict.items()}
    arrays.update({f"{name}__{k}": v for name, found in others.items() for k, v in found.items()})
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def combine(folders: list[Path], minimum: int) -> list[str]:
    """One verdict per configuration over the ``agreement.npz`` of several sessions (disjoint ``--first``)."""
    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    for folder in folders:
        with np.load(folder / "agreement.npz", allow_pickle=False) as data:
            for key in data.files:
                config, array = key.split("__")
                pooled.setdefault(config, {}).setdefault(array, []).append(data[key])
    merged = {config: {k: np.concatenate(v) for k, v in arrays.items()} for config, arrays in pooled.items()}
    strict = merged.pop("strict")
    if len(np.unique(strict["sample_index"])) != len(strict["sample_index"]):
        raise SystemExit("--combine: the sessions overlap in their points; give each session its own --first range")
    return [f"{config}: {json.dumps(agreement(strict, found, minimum))}" for config, found in merged.items()]


# ------------------------------------------------------------------------------------------------ profiler


def profiler_split(model: nn.Module, config: Config, protocol: EvaluableProtocol, images: np.ndarray, labels: np.ndarray,
                   device: str, work: Path, recorder: Recorder, robust_calls: list[dict], *, warmup: int = 5,
                   calls: int = 40) -> dict:
    """Per stage, over ``calls`` model calls after ``warmup`` calls (fewer where the stage ends first): device
    time in the model's kernels (its forward, and the autograd functions of its layer kinds) against the rest,
    and the window's wall time (idle: the wall time no kernel ran)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    layer_backward = ("Convolution", "BatchNorm", "Relu", "Threshold", "Addmm", "Mm", "AvgPool", "MaxPool",
                      "AddBackward", "View", "Reshape", "Linear")
    split: dict[str, dict] = {}
    state: dict = {}

    def on_call(stage: str) -> None:
        if "window" in state and state["window"][0] != stage:
            finish()  # the stage ended within its window
        seen = state.setdefault(stage, 0)
        state[stage] = seen + 1
        if seen == warmup and stage not in split:
            sync(device)
            state["profiler"] = profile(activities=activities)
            state["profiler"].__enter__()
            state["window"] = (stage, time.perf_counter())
        elif seen == warmup + calls and "window" in state:
            finish()

    def finish() -> None:
        stage, started = state.pop("window")
        sync(device)
        wall = time.perf_counter() - started
        profiler = state.pop("profiler")
        profiler.__exit__(None, None, None)
        field = "device_time_total" if cuda else "cpu_time_total"
        events = profiler.events()
        model_us = sum(getattr(e, field) for e in events if e.name == "apb::model_forward")
        model_us += sum(getattr(e, field) for e in events if e.name.startswith("autograd::engine::evaluate_function")
                        and any(k in e.name for k in layer_backward))
        total_us = sum(getattr(e, "self_device_time_total" if cuda else "self_cpu_time_total") for e in events)
        split[stage] = {"calls": state[stage] - warmup - 1, "wall_s": wall, "model_s": model_us / 1e6, "other_s": max(0.0, total_us - model_us) / 1e6,
                        "idle_s": max(0.0, wall - total_us / 1e6) if cuda else None}

    try:
        profile_run(model, config, protocol, images, labels, device, work, recorder, robust_calls, on_call=on_call)
    finally:
        if "window" in state:
            finish()
    return split


# ----------------------------------------------------------------------------------------------------- main


def stage_lines(run: dict, full: dict) -> list[str]:
    lines = [f"\n== {run['config']}: N = {run['n']}, wall {run['wall_s']:.1f} s, clean {run['clean']}, AA robust "
             f"{run['aa_robust']} ({100 * run['aa_robust'] / run['n']:.1f}%), CUDA graphs captured "
             f"{run['graph_captures']}",
             f"{'stage':<13}{'calls':>6}{'wall s':>9}{'grad rows':>11}{'fwd rows':>11}{'batch':>7}"
             f"{'robust after':>14}{'x bare':>8}{'10k s':>9}{'10k@bare':>10}{'10k@TF32':>10}"]
    for name, stage in run["stages"].items():
        projected = full["stages"][name]
        robust = stage["robust_after"]
        robust_text = f"{robust} ({100 * robust / run['n']:.1f}%)" if robust is not None else ""
        lines.append(f"{name:<13}{stage['calls']:>6}{stage['wall_s']:>9.2f}{stage['grad_rows']:>11}"
                     f"{stage['forward_rows']:>11}{stage['batch']:>7}{robust_text:>14}{projected['efficiency']:>8.2f}"
                     f"{projected['seconds']:>9.0f}{projected['seconds_at_bare']:>10.0f}"
                     f"{projected.get('seconds_at_ideal_bare', float('nan')):>10.0f}")
    lines.append(f"projected N = {FULL_N:,} (v2, chunks of {full['v2_chunk']:,}): {full['seconds'] / 60:.1f} min at "
                 f"the measured efficiency; {full['seconds_at_bare'] / 60:.1f} min at 100% of this backend's bare "
                 f"rate; {full['seconds_at_ideal_bare'] / 60:.1f} min at 100% of the TF32 + autotuning bare rate")
    return lines


def side_by_side(runs: list[dict], projections: dict[str, dict]) -> list[str]:
    names = [run["config"] for run in runs]
    lines = ["\n== per stage, fraction of the bare rate (same backend, eager model) and wall s, side by side",
             f"{'stage':<13}" + "".join(f"{n[:18]:>20}" for n in names)]
    for stage in STAGES:
        cells = []
        for run in runs:
            projected = projections[run["config"]]["stages"].get(stage)
            cells.append(f"{projected['efficiency']:.2f} / {run['stages'][stage]['wall_s']:.1f} s" if projected else "-")
        lines.append(f"{stage:<13}" + "".join(f"{c:>20}" for c in cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the npz of real CIFAR-10 images (x_train, y_train, x_test, y_test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-profile-out")))
    parser.add_argument("--cpu-smoke", dest="smoke", action="store_true",
                        help="tiny model, a few steps, 8 points: checks every code path on a CPU")
    parser.add_argument("--train-s", type=float, default=120.0, help="PGD training seconds (ResNet18)")
    parser.add_argument("--load-model", type=Path, help="a folder with an earlier run's model-part-*.npz: no training")
    parser.add_argument("--n", type=int, default=500, help="points per profile run (one v2 chunk up to 5,000)")
    parser.add_argument("--first", type=int, default=0,
                        help="the first point: the 4,660 training images, then the 846 test images")
    parser.add_argument("--configs", default="strict,tf32,tf32+cl+graphs",
                        help="comma-separated; the first is the reference of the agreement check")
    parser.add_argument("--agreement-min", type=int, default=5000, help="points a verdict needs")
    parser.add_argument("--profile-n", type=int, default=0, help="torch.profiler run on this many points (0: none)")
    parser.add_argument("--bare-s", type=float, default=1.0, help="seconds per bare-rate measurement")
    parser.add_argument("--budget-s", type=float, default=470.0, help="configurations that would end later are skipped")
    parser.add_argument("--combine", type=Path, nargs="+", help="pool the agreement.npz of these output folders")
    args = parser.parse_args()
    if args.combine:
        print("\n".join(combine(args.combine, args.agreement_min)))
        return
    if args.data is None:
        parser.error("--data is required")
    configs = [Config.parse(name) for name in args.configs.split(",") if name]
    run_profile(args, configs)


def run_profile(args: argparse.Namespace, configs: list[Config]) -> None:
    device, smoke = args.device, args.smoke
    if smoke:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        args.n, args.train_s, args.bare_s = min(args.n, 4), 0.0, min(args.bare_s, 0.2)
    deadline = bench_gpu.STARTED + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": bench_gpu.machine(device), "device": device, "smoke": smoke,
                    "configs": [c.name for c in configs]}
    say(report["machine"])
    with np.load(args.data, allow_pickle=False) as data:
        x_train, y_train = data["x_train"], data["y_train"]
        images, labels = np.concatenate([x_train, data["x_test"]]), np.concatenate([y_train, data["y_test"]])
    if args.first + args.n > len(labels):
        raise SystemExit(f"--first {args.first} + --n {args.n} exceeds the npz's {len(labels)} images")
    train_x, train_y = (torch.from_numpy(a[:64] if smoke else a).to(device) for a in (x_train, y_train))
    model, report["model"] = train_model(args, train_x, train_y, device)
    images, labels = images[args.first:args.first + args.n], labels[args.first:args.first + args.n]
    if smoke:  # the tiny CNN trained for 4 steps is near constant: evaluate the tests' seeded one on its own labels
        from tests.support.tiny_models import tiny_cnn

        model = tiny_cnn(0).to(device)
        with torch.no_grad():
            labels = model(torch.from_numpy(images).to(device).float() / 255).argmax(1).cpu().numpy()
        report["model"]["evaluated"] = "tiny_cnn(0), labels = its own predictions (smoke)"
    points = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
    clean, pgd_robust = bench_gpu.accuracies(model, *points, device)
    report["model"].update({"points": f"[{args.first}, {args.first + args.n}) of train ++ test",
                            "clean": clean, "pgd10_robust": pgd_robust})
    say(f"model: {json.dumps(report['model'])}")

    import optuna  # noqa: F401  (imported before any stage is timed)
    import pyautoattack  # noqa: F401

    recorder = Recorder(device, Utilization(device))
    recorder.install()
    robust_calls = install_robust_fractions(recorder)
    if smoke:
        shrink_autoattack_for_smoke()
    protocol = sized(load_protocol("linf-8-255-v2").require_evaluable(), args.n, smoke)
    tmp = Path(tempfile.mkdtemp(prefix="apb-bench-profile-"))
    runs: list[dict] = []
    for index, config in enumerate(configs):
        if config.graphs and not device.startswith("cuda"):
            say(f"{config.name}: CUDA graphs are CUDA only; on {device} this configuration runs without them")
        estimate = runs[0]["wall_s"] * (0.6 if config.backend != provenance.BACKEND else 1.0) if runs else 0.0
        if runs and time.perf_counter() + estimate + (10 if smoke else 75) > deadline:  # the bare rates come after
            say(f"{config.name} skipped: about {estimate:.0f} s needed, {deadline - time.perf_counter():.0f} s left")
            continue
        try:
            run = profile_run(model, config, protocol, images, labels, device, tmp / f"run{index}", recorder,
                              robust_calls)
        except Exception as error:  # noqa: BLE001 (one configuration failing leaves the others' figures)
            say(f"{config.name} failed: {type(error).__name__}: {error}")
            report.setdefault("failed", {})[config.name] = f"{type(error).__name__}: {error}"
            if not runs:
                raise
            continue
        runs.append(run)
        say(f"{config.name}: {run['wall_s']:.1f} s, AA robust {run['aa_robust']} of {run['n']}")

    # bare rates at every batch a projection needs, under each backend (eager, unwrapped model)
    batches = set().union(*(projected_batches(run, protocol) for run in runs))
    tables = {"strict": bare_rates(model, batches, provenance.BACKEND, device, args.bare_s)}
    tables["tf32"] = (bare_rates(model, batches, TF32_AUTOTUNED, device, args.bare_s) if device.startswith("cuda")
                      else tables["strict"])  # the flags change nothing on a CPU
    report["bare"] = {backend: {str(b): [round(g), round(f)] for b, (g, f) in table.items()}
                      for backend, table in tables.items()}
    lines, projections = [], {}
    for run, config in ((run, next(c for c in configs if c.name == run["config"])) for run in runs):
        backend = "tf32" if config.backend != provenance.BACKEND else "strict"
        projections[run["config"]] = projection(run, protocol, tables[backend], tables["tf32"])
        lines += stage_lines(run, projections[run["config"]])
    lines += side_by_side(runs, projections)

    # agreement of every configuration with the first
    reference = arrays_of(runs[0]["per_sample"])
    reference["sample_index"] = reference["sample_index"] + args.first
    others = {run["config"]: arrays_of(run["per_sample"]) for run in runs[1:]}
    for found in others.values():
        found["sample_index"] = found["sample_index"] + args.first
    report["agreement"] = {name: agreement(reference, found, args.agreement_min) for name, found in others.items()}
    if others:
        save_agreement(args.out / "agreement.npz", reference, others)
    lines.append(f"\n== agreement with {runs[0]['config']} (thresholds: flags >= 99.9%, robust accuracy <= 0.1 "
                 f"points, HO-FMN median <= 1%; a verdict needs >= {args.agreement_min} points)")
    for name, found in report["agreement"].items():
        lines.append(f"{name}: {found['verdict']}: flags agree {100 * found['flags_agree']:.2f}% "
                     f"({found['flags_differ']} differ of {found['n']}), robust accuracy differs by "
                     f"{found['robust_points_diff']:.2f} points, HO-FMN median {found['hofmn_median'][1]:.5f} vs "
                     f"{found['hofmn_median'][0]:.5f} ({100 * found['hofmn_median_rel_diff']:.2f}%)")

    if args.profile_n and time.perf_counter() + 60 < deadline:
        config = next(c for c in reversed(configs) if c.name in projections)
        split = profiler_split(model, config, sized(load_protocol("linf-8-255-v2").require_evaluable(), min(args.profile_n, args.n), smoke),
                               images, labels, device, tmp / "profiler", recorder, robust_calls,
                               warmup=1 if smoke else 5, calls=3 if smoke else 40)
        report["profiler"] = {"config": config.name, "stages": split}
        lines.append(f"\n== torch.profiler, {config.name}, N = {min(args.profile_n, args.n)}, a window of model calls "
                     f"per stage ({'device' if device.startswith('cuda') else 'CPU'} time)")
        for stage, found in split.items():
            idle = "" if found["idle_s"] is None else f", idle {found['idle_s']:.3f} s"
            lines.append(f"{stage:<13} {found['calls']:>3} calls, {found['wall_s']:.3f} s: model {found['model_s']:.3f} s, "
                         f"other {found['other_s']:.3f} s{idle}")

    report["runs"] = [{k: v for k, v in run.items() if k != "per_sample"} for run in runs]
    report["projection"] = projections
    lines.append(f"\ntotal {time.perf_counter() - bench_gpu.STARTED:.0f} s; model: {report['model']['architecture']}")
    print("\n".join(lines), flush=True)
    (args.out / "bench_profile.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "bench_profile_tables.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

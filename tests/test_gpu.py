"""The evaluation on a GPU: the AutoAttack stage equals the official call per sample, the CUDA code paths run
and are deterministic, and the numerics backend is fixed and recorded. Tests marked ``gpu`` need CUDA and are
skipped without it (CPU CI); on a GPU machine run them with ``pytest -m gpu``. The unmarked tests check the
device-independent parts (backend settings, shared tuning) on CPU."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.record import provenance
from evaluator.run.datasets import load_test_set, write_cifar10_test
from evaluator.run.chunks import ChunkStore, chunk_seed
from evaluator.run.evaluate import evaluate_loaded
from evaluator.run.stages import evaluate_chunks, shared_tuning_file, shared_tuning_result
from evaluator.protocol import load_protocol
from evaluator.record.records import PerSample
from tests.support.evaluation import (CHECKPOINT_SHA256, MODEL_KEY, write_tiny_protocol,  # noqa: F401
                                      write_tiny_test_set)
from tests.support.tiny_models import exact_distances, linear_classifier, tiny_cnn

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run with pytest -m gpu there)")


# --------------------------------------------------------------------------------- CPU: backend, tuning


def test_the_backend_is_fixed_for_the_evaluation_and_restored_after():
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = True, True
    try:
        with provenance.fixed_backend() as settings:
            assert settings == provenance.BACKEND
            assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.deterministic
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = before
    facts = provenance.environment("cpu")["backend"]
    assert facts == {"tf32_matmul": False, "tf32_cudnn": False, "cudnn_benchmark": False, "cudnn_deterministic": True}


def test_shards_share_one_tuning(tmp_path):
    protocol = load_protocol("linf-8-255-v2")
    path = shared_tuning_file(tmp_path, "ab" * 32, protocol, "cpu")
    assert path.parent == tmp_path / "tuning" and path.name.startswith("ab" * 32 + "__linf-8-255-v2-")
    assert path != shared_tuning_file(tmp_path, "ab" * 32, load_protocol("linf-8-255-v1"), "cpu")
    calls = []

    def tune():
        calls.append(1)
        return {"indices": [3, 5], "params": {"lr": 1.0}, "median_distance": 0.03, "trials": [], "wall_s": 7.0}

    first = shared_tuning_result(path, tune)
    second = shared_tuning_result(path, tune)
    assert len(calls) == 1 and first["wall_s"] == 7.0 and second["wall_s"] == 0.0
    assert {k: v for k, v in second.items() if k != "wall_s"} == {k: v for k, v in first.items() if k != "wall_s"}


def test_the_gpu_protocol_differs_from_v1_only_in_its_batches():
    v1, v2 = load_protocol("linf-8-255-v1"), load_protocol("linf-8-255-v2")
    assert (v2.chunk_size, v2.autoattack.batch_size, v2.hofmn.batch_size) == (5000, 5000, 5000)
    same = dataclasses.replace(v2, id=v1.id, description=v1.description, path=v1.path, sha256=v1.sha256,
                               leaderboard=v1.leaderboard, chunk_size=v1.chunk_size,
                               autoattack=v1.autoattack, hofmn=dataclasses.replace(v2.hofmn, batch_size=500))
    assert same == v1


# ------------------------------------------------------------------------------------------ on the GPU


def linear_case(tmp_path: Path, n: int = 512):
    """A random linear classifier on 3x32x32 and a CIFAR-10-format test file of ``n`` images it classifies as
    labelled (but every 8th), with eps the median exact distance: about half of the points are robust."""
    model = linear_classifier((3, 32, 32), seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(64, 192, (n, 32, 32, 3), dtype=np.uint8)  # interior: the box hardly matters
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    labels[::8] = (labels[::8] + 1) % 10
    write_cifar10_test(tmp_path, images, labels.tolist())
    exact = exact_distances(model, inputs, labels)
    eps = Fraction(float(exact[exact > 0].median())).limit_denominator(10**6)
    return model, load_test_set("CIFAR10", tmp_path), eps


@pytest.mark.gpu
@needs_cuda
def test_autoattack_stage_equals_the_official_call_per_sample(tmp_path):
    """The project's AutoAttack stage (evaluate_chunks, clean + autoattack, on the GPU) and pyautoattack
    called directly with the same model, inputs, eps, version, seed, batch size and backend settings."""
    pyautoattack = pytest.importorskip("pyautoattack")
    model, test_set, eps = linear_case(tmp_path)
    n = len(test_set)
    base = load_protocol("linf-8-255-v2")
    protocol = dataclasses.replace(base, n_samples=n, chunk_size=n,
                                   threat_model=dataclasses.replace(base.threat_model, eps_fraction=eps))
    results = evaluate_chunks(model, test_set, protocol, device="cuda", progress=False,
                              stages=("clean", "autoattack"))
    ours = torch.from_numpy(results.per_sample.aa_robust)
    inputs, labels = test_set.batch(slice(0, n))
    model = model.to("cuda").eval().requires_grad_(False)
    with provenance.fixed_backend():
        adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=protocol.eps, version="standard",
                                            seed=chunk_seed(protocol.seed, 0), device="cuda")
        _, predicted = adversary.run_standard_evaluation(inputs.cuda(), labels.cuda(),
                                                         batch_size=protocol.autoattack.batch_size)
    official = (predicted.cpu() == labels)
    assert n >= 500 and 0.2 * n < int(ours.sum()) < 0.8 * n   # a real mix of robust and broken points
    assert torch.equal(ours, official)
    assert results.ledger["0"]["aa_attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]


def cnn_case(tmp_path: Path):
    base = tmp_path
    protocol = load_protocol(write_tiny_protocol(base / "protocols", n_samples=16, chunk_size=8))
    write_tiny_test_set(base / "data", n=16)
    return base, protocol, load_test_set("CIFAR10", base / "data", n=16)


@pytest.mark.gpu
@needs_cuda
def test_the_cuda_evaluation_is_deterministic_and_records_its_backend(tmp_path):
    base, protocol, test_set = cnn_case(tmp_path)
    outcomes = [evaluate_loaded(tiny_cnn(0), test_set, protocol, model_key=MODEL_KEY,
                                checkpoint_sha256=CHECKPOINT_SHA256, work_dir=base / f"work{i}",
                                out_dir=base / f"out{i}", check={"ok": True}, device="cuda", progress=False)
                for i in range(2)]
    first, second = (PerSample.load(o.path.with_suffix(".npz")) for o in outcomes)
    for name in ("clean_correct", "aa_robust", "hofmn_distance"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    provenance_ = outcomes[0].record["provenance"]
    assert provenance_["device"].startswith("cuda (")
    assert provenance_["backend"]["cudnn_deterministic"] is True and provenance_["backend"]["tf32_cudnn"] is False
    assert provenance_["backend"]["cuda"] and provenance_["backend"]["cudnn"]
    # the same clean predictions as on the CPU, and distances that agree up to float rounding of the steps
    cpu = evaluate_chunks(tiny_cnn(0), test_set, protocol, store=ChunkStore(None), device="cpu", progress=False)
    assert np.array_equal(cpu.per_sample.clean_correct, first.clean_correct)
    assert np.isfinite(first.hofmn_distance).all()


@pytest.mark.gpu
@needs_cuda
def test_the_cuda_batch_transfer_is_pinned_and_exact(tmp_path):
    from evaluator.run.stages import _to_device

    _, _, test_set = cnn_case(tmp_path)
    images, labels = test_set.batch(list(range(16)))
    on_gpu = _to_device((images, labels), "cuda")
    assert on_gpu[0].is_cuda and torch.equal(on_gpu[0].cpu(), images) and torch.equal(on_gpu[1].cpu(), labels)


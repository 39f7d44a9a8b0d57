"""The seed-compatible API: the same numbers as `apb evaluate`, percentages, inf for failed attacks, distances
read back from a record's sidecar, security curves."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import evaluator
from evaluator import api
from evaluator.errors import APBError
from evaluator.record.assemble import RunFacts, build_record, write_result
from evaluator.protocol import load_protocol
from evaluator.record.records import PerSample
from tests.support.evaluation import (MODEL_KEY, one_torch_thread, run_tiny, write_tiny_protocol,  # noqa: F401
                                      write_tiny_test_set)
from tests.support.tiny_models import tiny_cnn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny CNN evaluated by the pipeline under an 8-sample protocol, for comparison."""
    base = tmp_path_factory.mktemp("api")
    protocol_path = write_tiny_protocol(base / "protocols", n_samples=8, chunk_size=4)
    write_tiny_test_set(base / "data", n=8)
    outcome = run_tiny(base, load_protocol(protocol_path))
    return base, protocol_path, outcome.record, PerSample.load(base / "out" / outcome.record["per_sample"]["file"])


def test_the_api_names_are_reexported_lazily_from_evaluator():
    from evaluator.checkpoint.load import load_model
    from evaluator.repository.submissions import load_ap_taxonomy

    assert evaluator.load_model is load_model and evaluator.load_ap_taxonomy is load_ap_taxonomy
    for name in ("test_model_aa", "test_model_hofmn", "benchmark", "load_distance", "plot_sec_curve"):
        assert getattr(evaluator, name) is getattr(api, name)


def test_test_model_aa_gives_the_pipeline_numbers_in_percent(tiny):
    base, protocol, record, _ = tiny
    clean, robust = api.test_model_aa(tiny_cnn(0), dataset="CIFAR10", data_dir=base / "data", device="cpu",
                                      protocol=str(protocol), progress=False)
    assert (clean, robust) == (record["metrics"]["clean_accuracy"], record["metrics"]["aa_robust_accuracy"])
    assert clean == 75.0


def test_test_model_hofmn_gives_the_pipeline_distances(tiny, tmp_path):
    base, protocol, record, per_sample = tiny
    rob_acc, distances = api.test_model_hofmn(tiny_cnn(0), MODEL_KEY, "CIFAR10", base / "data", "cpu", loss="DLR",
                                              optimizer="SGD", scheduler="CALR", get_distances=True,
                                              save_dist_path=tmp_path, protocol=str(protocol), progress=False)
    assert rob_acc == record["metrics"]["hofmn_robust_accuracy"]
    assert distances.dtype == np.float32 and distances.tobytes() == per_sample.hofmn_distance.tobytes()
    assert (distances[::4] == 0).all()  # misclassified clean: 0
    saved = np.load(tmp_path / f"{MODEL_KEY}.npy", allow_pickle=False)
    assert saved.tobytes() == distances.tobytes()
    _, none = api.test_model_hofmn(tiny_cnn(0), MODEL_KEY, "CIFAR10", base / "data", n=4, protocol=str(protocol),
                                   progress=False)
    assert none is None
    with pytest.raises(APBError, match="unknown scheduler 'RLROP'"):
        api.test_model_hofmn(tiny_cnn(0), MODEL_KEY, "CIFAR10", base / "data", scheduler="RLROP")


def test_benchmark_prints_the_claim_and_returns_the_record(tiny, tmp_path, capsys):
    base, protocol, record, _ = tiny
    result = api.benchmark(tiny_cnn(0), MODEL_KEY, base / "data", tmp_path, "cpu", protocol=str(protocol),
                           progress=False)
    out = capsys.readouterr().out
    assert f"Results ready for a claim: {MODEL_KEY}" in out and "AutoAttack robust accuracy" in out
    assert "95% CI" in out and str(tmp_path / f"{MODEL_KEY}__tiny-v1.json") in out
    assert result["metrics"] == record["metrics"] and result["counts"] == record["counts"]
    assert result["checkpoint_sha256"] is None and result["source"] == "evaluated"
    assert result["per_sample"]["sha256"] == record["per_sample"]["sha256"]  # same per-sample bytes
    reduced = api.benchmark(tiny_cnn(0), MODEL_KEY, base / "data", None, n=4, protocol=str(protocol), progress=False)
    assert reduced["n_samples"] == 4 and reduced["flags"][-1]["code"] == "reduced-samples"
    with pytest.raises(APBError, match="make it with model_key_maker"):
        api.benchmark(tiny_cnn(0), "my_model", base / "data", None)


# ------------------------------------------------------------------------------------------- load_distance


def write_evaluated(root, protocol_id: str, date: str, distances: np.ndarray) -> None:
    protocol = load_protocol(protocol_id)
    n = len(distances)
    per_sample = PerSample(np.arange(n), clean_correct=distances > 0,
                           aa_robust=np.zeros(n, dtype=bool), hofmn_distance=distances)
    facts = {"model_key": MODEL_KEY, "checkpoint_sha256": "ab" * 32, "environment": {}, "date": date,
             "test_set": {"file": "test_batch", "official": True, "sha256": "0"}, "ledger": {}}
    protocol = dataclasses.replace(protocol, n_samples=n)
    write_result(build_record(RunFacts(**facts), per_sample, protocol), per_sample,
                 root / "submissions" / MODEL_KEY.split("_R18")[0] / "records")


def test_load_distance_reads_the_newest_leaderboard_record(tmp_path):
    leaderboard = np.array([0.0, 0.02, np.inf, 0.05], dtype=np.float32)
    write_evaluated(tmp_path, "linf-8-255-v1", "2025-01-01T00:00:00Z", leaderboard)
    write_evaluated(tmp_path, "smoke-v1", "2030-01-01T00:00:00Z", np.ones(4, dtype=np.float32))  # never used
    distances = api.load_distance(MODEL_KEY, root=tmp_path)
    assert distances.tobytes() == leaderboard.tobytes()
    sidecar = tmp_path / "submissions" / "Tiny_Doe2024Tiny" / "records" / f"{MODEL_KEY}__linf-8-255-v1.npz"
    sidecar.write_bytes(sidecar.read_bytes() + b"x")
    with pytest.raises(APBError, match="its sha256 differs from the one the record names"):
        api.load_distance(MODEL_KEY, root=tmp_path)


def test_load_distance_without_a_record_says_how_to_get_one(tmp_path):
    with pytest.raises(APBError, match=f"apb evaluate {MODEL_KEY}"):
        api.load_distance(MODEL_KEY, root=tmp_path)


# ------------------------------------------------------------------------------------------- plot_sec_curve


def test_plot_sec_curve_takes_one_model_or_several_and_saves(tmp_path):
    one = np.array([0.0, 0.01, 0.05, np.inf], dtype=np.float32)
    figure = api.plot_sec_curve(one, ["a"], title="one model")
    assert "a – 50.00%" in [t.get_text() for t in figure.axes[0].get_legend().get_texts()][0]
    seed_style = [torch.tensor(0.0), torch.tensor(0.05)]  # the original pickles: lists of 0-d tensors
    api.plot_sec_curve(seed_style, ["seed"], title="seed")
    path = tmp_path / "curves.png"
    api.plot_sec_curve([one, one[:2]], ["a", "b"], title="two", save=path)
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(APBError, match="2 distance arrays for 3 names"):
        api.plot_sec_curve([one, one], ["a", "b", "c"], title="bad")

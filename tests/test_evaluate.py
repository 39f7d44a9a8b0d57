"""The evaluation pipeline: chunks and shards, per-sample semantics, sanity flags, records, the work dir, and
the `apb evaluate` command (skipping, refusing, stopping on a failed check)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from evaluator.record import provenance
from evaluator.cli import main
from evaluator.run.datasets import load_test_set, write_cifar10_test
from evaluator.errors import APBError
from evaluator.record.assemble import RunFacts, build_record, refuse_smoke_in_submissions, sanity_flags
from evaluator.run.chunks import ChunkStore, chunk_ranges, chunk_seed
from evaluator.run.stages import evaluate_chunks
from evaluator.protocol import load_protocol
from evaluator.record.records import PerSample
from evaluator.untrusted.safeio import dump_json, load_json, sha256_file
from evaluator.run.shards import Shard, parse_shard
from evaluator.repository.record_acceptance import record_problems
from tests.support.evaluation import (CHECKPOINT_SHA256, MODEL_KEY, TINY_PROTOCOL, comparable,  # noqa: F401
                                      one_torch_thread, run_tiny, write_tiny_protocol, write_tiny_test_set)
from tests.support.tiny_models import tiny_cnn

SMOKE = load_protocol("smoke-v1")
EPS = 8 / 255


# --------------------------------------------------------------------------------------------- chunks, shards


def test_chunks_are_fixed_ranges_and_shards_partition_them():
    assert chunk_ranges(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert chunk_ranges(10000, 500)[-1] == range(9500, 10000)
    shards = [parse_shard(f"{i}/3") for i in (1, 2, 3)]
    owners = [[s.owns(c) for s in shards].index(True) for c in range(7)]
    assert owners == [0, 1, 2, 0, 1, 2, 0]
    assert all(sum(s.owns(c) for s in shards) == 1 for c in range(50))
    assert parse_shard(" 2 / 5 ") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"
    assert chunk_seed(0, 3) == 3 and chunk_seed(7, 0) == 7


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "", "1/0"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(APBError, match="expected i/n"):
        parse_shard(text)


# ------------------------------------------------------------------------------------------- per sample


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    protocol = load_protocol(write_tiny_protocol(base / "protocols", n_samples=8, chunk_size=4))
    write_tiny_test_set(base / "data", n=8)
    return base, protocol, run_tiny(base, protocol)


def test_per_sample_results_follow_the_protocol_semantics(tiny):
    base, protocol, outcome = tiny
    per_sample = PerSample.load(base / "out" / outcome.record["per_sample"]["file"])
    assert per_sample.sample_index.tolist() == list(range(8))
    assert per_sample.clean_correct.tolist() == [i % 4 != 0 for i in range(8)]  # every 4th label is wrong
    assert not (per_sample.aa_robust & ~per_sample.clean_correct).any()
    misclassified = ~per_sample.clean_correct
    assert (per_sample.hofmn_distance[misclassified] == 0).all()
    assert (per_sample.hofmn_distance[~misclassified] > 0).all()
    # the distances are the verified ones: the tiny CNN's adversarials lie in the box at those distances
    assert np.isfinite(per_sample.hofmn_distance).all() and (per_sample.hofmn_distance < 1).all()


def test_the_record_is_valid_and_agrees_with_its_sidecar(tiny):
    base, protocol, outcome = tiny
    path = outcome.path
    data, lines = load_json(path)
    assert record_problems(data, lines, path.name) == []
    assert data["source"] == "evaluated" and data["protocol"] == TINY_PROTOCOL and data["n_samples"] == 8
    assert data["checkpoint_sha256"] == CHECKPOINT_SHA256
    assert data["per_sample"] == {"file": f"{MODEL_KEY}__{TINY_PROTOCOL}.npz",
                                  "sha256": sha256_file(base / "out" / f"{MODEL_KEY}__{TINY_PROTOCOL}.npz")}
    assert data["counts"]["clean_correct"] == 6 and data["metrics"]["clean_accuracy"] == 75.0
    prov = data["provenance"]
    assert prov["protocol_sha256"] == protocol.sha256
    assert set(prov["packages"]) == {"torch", "torchvision", "pyautoattack", "optuna", "numpy"}
    assert prov["autoattack"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert set(prov["hofmn_tuning"]["params"]) == {"lr", "momentum", "weight_decay", "dampening"}
    assert prov["hofmn_tuning"]["samples"] == 4  # the protocol's tuning batch: the first 4 clean-correct
    assert set(prov["wall_time_s"]) >= {"clean", "autoattack", "hofmn_tuning", "hofmn", "total"}
    assert prov["test_set"]["official"] is False
    codes = [flag["code"] for flag in data["flags"]]
    assert "unofficial-test-set" in codes
    assert set(codes) <= {"unofficial-test-set", "hofmn-weaker-than-aa", "aa-weaker-than-hofmn", "hofmn-no-adversarial"}


class Exploding(nn.Module):
    def forward(self, x):
        raise AssertionError("a finished chunk was computed again")


def test_finished_stages_are_read_back_not_recomputed(tiny):
    base, protocol, outcome = tiny
    again = run_tiny(base, protocol, out="again", model=Exploding())  # same work dir: everything is done
    assert comparable(again.record) == comparable(outcome.record)
    assert (base / "again" / outcome.record["per_sample"]["file"]).read_bytes() == \
        (base / "out" / outcome.record["per_sample"]["file"]).read_bytes()


def test_a_work_dir_of_another_evaluation_is_refused(tiny, tmp_path):
    base, protocol, _ = tiny
    other = dataclasses.replace(protocol, sha256="0" * 64)
    with pytest.raises(APBError, match=r"belongs to another evaluation \(differs in protocol_sha256\)"):
        run_tiny(base, other)


def test_a_test_set_smaller_than_the_protocol_is_refused(tmp_path):
    write_tiny_test_set(tmp_path, n=4)
    with pytest.raises(APBError, match="holds 4 samples; protocol smoke-v1 needs the first 8"):
        evaluate_chunks(tiny_cnn(0), load_test_set("CIFAR10", tmp_path), SMOKE, progress=False)


class Constant(nn.Module):
    """Always class 0 whatever the input (the input enters the graph through zero weights)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, 10)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.eye(10)[0] * 5.0)

    def forward(self, x):
        return self.linear(x.flatten(1))


@pytest.mark.slow
def test_a_model_no_attack_can_move_is_robust_with_infinite_distances(tmp_path):
    images = np.full((2, 32, 32, 3), 128, dtype=np.uint8)
    write_cifar10_test(tmp_path, images, [0, 1])
    protocol = dataclasses.replace(SMOKE, n_samples=2)
    results = evaluate_chunks(Constant(), load_test_set("CIFAR10", tmp_path), protocol, progress=False)
    per_sample = results.per_sample
    assert per_sample.clean_correct.tolist() == [True, False]
    assert per_sample.aa_robust.tolist() == [True, False]
    assert per_sample.hofmn_distance.tolist() == [np.inf, 0.0]
    warnings = [w for entry in results.ledger.values() for w in entry["aa_warnings"]]
    assert any("zero gradient" in w for w in warnings)  # AutoAttack's own check, captured per chunk
    codes = [flag["code"] for flag in sanity_flags(per_sample, protocol, aa_warnings=warnings[:1])]
    assert codes == ["autoattack-check", "hofmn-no-adversarial"]


# ------------------------------------------------------------------------------------------------ flags


def per_sample_of(n: int, *, aa_only: int = 0, hofmn_only: int = 0, unbroken: int = 0) -> PerSample:
    """n clean-correct samples: ``aa_only`` broken by AA alone, ``hofmn_only`` by HO-FMN alone, ``unbroken``
    with no HO-FMN adversarial (and AA-robust); the rest broken by both."""
    aa_robust = np.zeros(n, dtype=bool)
    distance = np.full(n, 0.01, dtype=np.float32)
    distance[:aa_only] = 0.1
    aa_robust[aa_only:aa_only + hofmn_only] = True
    start = aa_only + hofmn_only
    aa_robust[start:start + unbroken] = True
    distance[start:start + unbroken] = np.inf
    return PerSample(np.arange(n), clean_correct=np.ones(n, dtype=bool), aa_robust=aa_robust, hofmn_distance=distance)


def test_disagreement_flags_fire_above_their_limits_only():
    limits = SMOKE.sanity  # aa_only 2%, hofmn_only 1%, no adversarial 1%
    assert sanity_flags(per_sample_of(100, aa_only=2, hofmn_only=1, unbroken=1), SMOKE, aa_warnings=[]) == []
    flags = sanity_flags(per_sample_of(100, aa_only=3, hofmn_only=2, unbroken=2), SMOKE, aa_warnings=[])
    assert [f["code"] for f in flags] == ["hofmn-weaker-than-aa", "aa-weaker-than-hofmn", "hofmn-no-adversarial"]
    assert "3.00%" in flags[0]["message"] and f"{100 * limits.max_aa_only:.2f}%" in flags[0]["message"]


def test_misclassified_samples_are_no_disagreement():
    n = 10
    per_sample = PerSample(np.arange(n), clean_correct=np.zeros(n, dtype=bool),
                           aa_robust=np.zeros(n, dtype=bool), hofmn_distance=np.zeros(n, dtype=np.float32))
    assert sanity_flags(per_sample, SMOKE, aa_warnings=[]) == []


def test_autoattack_warnings_randomized_output_and_unofficial_data_are_flagged():
    flags = sanity_flags(per_sample_of(10), SMOKE, aa_warnings=["it seems that more than 25% of the points"],
                         randomized_output="randomized output: two passes differ", official_test_set=False)
    assert [f["code"] for f in flags] == ["autoattack-check", "randomized-output", "unofficial-test-set"]
    assert flags[0]["message"].startswith("AutoAttack: it seems")


def test_build_record_of_merged_facts_orders_warnings_by_chunk():
    facts = {"model_key": MODEL_KEY, "checkpoint_sha256": CHECKPOINT_SHA256, "environment": {"device": "cpu"},
             "date": "2025-01-01T00:00:00Z", "test_set": {"file": "test_batch", "official": True, "sha256": "0"},
             "ledger": {"1": {"wall_s": {"autoattack": 1.0}, "aa_warnings": ["b", "a"], "aa_attacks": [],
                              "aa_implementation": ""},
                        "0": {"wall_s": {"autoattack": 2.0}, "aa_warnings": ["a"], "aa_attacks": ["apgd-ce"],
                              "aa_implementation": "pyautoattack"}}}
    record = build_record(RunFacts(**facts), per_sample_of(4), SMOKE)
    assert [f["message"] for f in record["flags"]] == ["AutoAttack: a", "AutoAttack: b"]
    assert record["provenance"]["wall_time_s"] == {"autoattack": 3.0, "total": 3.0}
    assert record["provenance"]["autoattack"] == {"implementation": "pyautoattack", "attacks": ["apgd-ce"]}


def test_the_memory_store_keeps_what_it_is_given():
    store = ChunkStore(None)
    assert store.load_stage("clean", 0) is None and store.load_tuning() is None
    store.save_stage("clean", 0, {"clean_correct": np.array([True])})
    store.save_tuning({"params": None})
    assert store.load_stage("clean", 0)["clean_correct"].tolist() == [True]
    assert store.load_tuning() == {"params": None}


def test_provenance_names_versions_device_and_commit(tmp_path):
    versions = provenance.package_versions()
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"].startswith(torch.__version__[:4])
    assert provenance.git_commit(tmp_path) is None
    assert provenance.device_name("cpu").startswith("cpu (")
    assert provenance.utc_now().endswith("Z") and len(provenance.utc_now()) == 20


# ------------------------------------------------------------------------------------------- the command


AP_KEY = "Tiny_Doe2024Tiny"
KEY_90 = f"{AP_KEY}_V16_CIFAR10_US_90"


def write_repo(root: Path, url: str, sha: str) -> None:
    """A one-AP repository whose manifest has the three VGG16 CIFAR10 weights entries."""
    models = "".join(f"  - {{architecture: vgg16, dataset: CIFAR10, structure: weights, sparsity: {s}, "
                     f"url: \"{url}\", sha256: \"{sha}\", claimed: {{clean_accuracy: 10.0}}}}\n" for s in (90, 95, 99))
    folder = root / "submissions" / AP_KEY
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(f"schema_version: 1\nap_key: {AP_KEY}\n"
                                          f"defaults: {{format: torch, state_dict_key: null}}\nmodels:\n{models}")
    (root / "taxonomy").mkdir()


def test_evaluate_skips_a_model_whose_record_exists(tmp_path, capsys):
    sha = "cd" * 32
    write_repo(tmp_path, (tmp_path / "missing.pt").as_uri(), sha)  # never fetched
    out = tmp_path / "records"
    out.mkdir()
    (out / f"{KEY_90}__smoke-v1.json").write_bytes(dump_json({"checkpoint_sha256": sha, "protocol": "smoke-v1"}))
    code = main(["evaluate", KEY_90, "--root", str(tmp_path), "--protocol", "smoke-v1", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert f"{KEY_90}: skipped" in captured.out and "already holds its smoke-v1 record" in captured.err


def test_evaluate_refuses_smoke_records_under_submissions(tmp_path, capsys):
    write_repo(tmp_path, (tmp_path / "missing.pt").as_uri(), "cd" * 32)
    out = tmp_path / "submissions" / AP_KEY / "records"
    code = main(["evaluate", KEY_90, "--root", str(tmp_path), "--protocol", "smoke-v1", "--out", str(out)])
    assert code == 1 and "never written under submissions/" in capsys.readouterr().err
    assert not out.exists()
    refuse_smoke_in_submissions(load_protocol("linf-8-255-v1"), out, tmp_path)  # leaderboard protocols go there


def test_evaluate_refuses_a_protocol_of_imported_results_and_a_bad_shard(tmp_path, capsys):
    write_repo(tmp_path, (tmp_path / "missing.pt").as_uri(), "cd" * 32)
    published = tmp_path / "published-2024.yaml"
    published.write_text("id: published-2024\nleaderboard: true\ndescription: imported numbers\n")
    assert main(["evaluate", KEY_90, "--root", str(tmp_path), "--protocol", str(published)]) == 1
    assert "cannot be evaluated" in capsys.readouterr().err
    assert main(["evaluate", KEY_90, "--root", str(tmp_path), "--shard", "4/3"]) == 1
    assert "expected i/n" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_stops_with_the_report_when_the_check_fails(tmp_path, capsys):
    from evaluator.registry.variants import build_model

    torch.manual_seed(0)
    checkpoint = tmp_path / "dense.pt"
    torch.save(build_model("vgg16").state_dict(), checkpoint)  # dense: not 90% sparse as the manifest claims
    write_repo(tmp_path, checkpoint.as_uri(), sha256_file(checkpoint))
    write_tiny_test_set(tmp_path / "data", n=8)
    code = main(["evaluate", KEY_90, "--root", str(tmp_path), "--protocol", "smoke-v1", "--data-dir",
                 str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert "sparsity    FAILED" in captured.out and "result      FAILED" in captured.out
    assert "the check failed; nothing was evaluated" in captured.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "work").exists()


def test_records_json_is_deterministic_bytes(tiny):
    _, _, outcome = tiny
    assert outcome.path.read_bytes() == dump_json(json.loads(outcome.path.read_text()))


def test_one_evaluation_builds_the_model_once_and_computes_compliance_once(tmp_path, monkeypatch):
    """apb evaluate checks the checkpoint and attacks the very model it checked (issue 11: one model build and
    one compliance computation per evaluation)."""
    from evaluator.checkpoint import compliance, load
    from evaluator.demo import PROTOCOL, build_example
    from evaluator.run.evaluate import evaluate_model

    example = build_example(tmp_path / "example")
    counts = {"build": 0, "compliance": 0}
    real_build, real_compliance = load.build_variant, compliance.check_compliance

    def counted_build(name, classes):
        counts["build"] += 1
        return real_build(name, classes)

    def counted_compliance(state, variant, classes):
        counts["compliance"] += 1
        return real_compliance(state, variant, classes)

    monkeypatch.setattr(load, "build_variant", counted_build)
    monkeypatch.setattr(compliance, "check_compliance", counted_compliance)
    monkeypatch.setattr("evaluator.run.check.check_compliance", counted_compliance)
    outcome = evaluate_model(example.model_keys[-1], protocol=PROTOCOL, root=example.root, data_dir=example.data_dir,
                             out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert outcome.record is not None and counts == {"build": 1, "compliance": 1}


def test_every_array_of_metrics_yaml_comes_from_a_stage_of_the_table():
    from evaluator.record.records import ARRAY_STAGES
    from evaluator.run.stages import STAGE_TABLE, STAGES

    assert STAGES == ("clean", "autoattack", "hofmn")
    assert {stage for stage in ARRAY_STAGES.values() if stage} == set(STAGES)
    assert {name for stage in STAGE_TABLE for name in stage.arrays} == {n for n, s in ARRAY_STAGES.items() if s}

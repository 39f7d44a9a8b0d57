"""Records and per-sample sidecars: round trips, statistics, size."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from evaluator.record import records
from evaluator.registry.norms import threat_model
from evaluator.untrusted.safeio import sha256_file


def _per_sample(n: int, seed: int = 0) -> records.PerSample:
    rng = np.random.default_rng(seed)
    clean = rng.random(n) < 0.8
    distance = np.where(clean, rng.random(n).astype(np.float32) * 0.1, 0).astype(np.float32)
    distance[rng.random(n) < 0.01] = np.inf
    aa = clean & (distance > 8 / 255) & (rng.random(n) < 0.95)
    return records.PerSample(np.arange(n), clean, aa, distance)


def test_sidecar_round_trip_is_exact(tmp_path):
    data = _per_sample(1001)
    digest = data.save(tmp_path / "x.npz")
    assert digest == sha256_file(tmp_path / "x.npz")
    back = records.PerSample.load(tmp_path / "x.npz")
    for name in ("sample_index", "clean_correct", "aa_robust", "hofmn_distance"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    assert back.hofmn_distance.dtype == np.float32 and back.clean_correct.dtype == bool


def test_sidecar_at_protocol_size_stays_under_60_kb(tmp_path):
    _per_sample(10_000).save(tmp_path / "full.npz")
    assert (tmp_path / "full.npz").stat().st_size <= 60_000


def test_sidecar_is_deterministic(tmp_path):
    data = _per_sample(500)
    assert data.save(tmp_path / "a.npz") == data.save(tmp_path / "b.npz")


def test_concatenate_orders_by_index_and_refuses_overlap():
    data = _per_sample(30)
    parts = [records.PerSample(data.sample_index[i::3], data.clean_correct[i::3], data.aa_robust[i::3],
                               data.hofmn_distance[i::3]) for i in (2, 0, 1)]
    merged = records.PerSample.concatenate(parts)
    np.testing.assert_array_equal(merged.sample_index, data.sample_index)
    np.testing.assert_array_equal(merged.hofmn_distance, data.hofmn_distance)
    with pytest.raises(ValueError, match="twice"):
        records.PerSample.concatenate([parts[0], parts[0]])


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="one length"):
        records.PerSample(np.arange(3), [True, False], [False] * 3, [0.0] * 3)


def test_summarize_semantics():
    eps = 8 / 255
    data = records.PerSample(
        np.arange(5),
        clean_correct=[False, True, True, True, True],
        aa_robust=[False, True, True, False, True],
        hofmn_distance=[0.0, np.inf, eps / 2, 0.1, eps],  # eps exactly is broken: robust needs distance > eps
    )
    summary = records.summarize(data, threat_model("Linf", Fraction(8, 255)))
    assert summary["counts"] == {"clean_correct": 4, "aa_robust": 3, "hofmn_robust": 2, "worst_case_robust": 1}
    assert summary["metrics"]["clean_accuracy"] == 80.0
    assert summary["metrics"]["worst_case_robust_accuracy"] == 20.0
    lo, hi = summary["intervals"]["clean_accuracy"]
    assert lo < 80.0 < hi


def test_wilson_interval_matches_closed_form():
    lo, hi = records.wilson_interval(81, 100)
    # textbook values for 81/100 at 95%
    assert math.isclose(lo, 0.7222, abs_tol=1e-4) and math.isclose(hi, 0.8749, abs_tol=1e-4)
    assert records.wilson_interval(0, 10)[0] == 0.0
    assert records.wilson_interval(10, 10)[1] == 1.0


def test_write_record_is_atomic_and_canonical(tmp_path):
    record = {"model_key": "X_Abc2020Foo_R18_CIFAR10_US_90", "protocol": "published-2024", "metrics": {"a": 1.5}}
    path = records.write_record(record, tmp_path)
    assert path.name == "X_Abc2020Foo_R18_CIFAR10_US_90__published-2024.json"
    assert path.read_bytes() == (json.dumps(record, indent=2) + "\n").encode()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind
    with pytest.raises(ValueError):
        records.write_record({**record, "metrics": {"a": float("nan")}}, tmp_path)
    assert records.read_record(path) == record  # the failed write left the old file intact


def test_recorded_sha256_finds_the_record_of_a_model_and_protocol(tmp_path):
    key = "X_Abc2020Foo_R18_CIFAR10_US_90"
    assert records.recorded_sha256(tmp_path, key, "linf-8-255-v1") is None
    records.write_record({"model_key": key, "protocol": "linf-8-255-v1", "checkpoint_sha256": "ab" * 32}, tmp_path)
    assert records.recorded_sha256(tmp_path, key, "linf-8-255-v1") == "ab" * 32
    assert records.recorded_sha256(tmp_path, key, "smoke-v1") is None
    (tmp_path / f"{key}__linf-8-255-v1.json").write_text("{broken")
    with pytest.raises(ValueError):
        records.recorded_sha256(tmp_path, key, "linf-8-255-v1")


def test_one_metric_table_names_every_metric_for_every_view():
    from evaluator.record.records import COUNT_FIELDS, METRICS, metric_label

    assert METRICS == ("clean_accuracy", "aa_robust_accuracy", "hofmn_robust_accuracy", "worst_case_robust_accuracy")
    assert set(COUNT_FIELDS) == set(METRICS)
    for metric in METRICS:
        assert all(metric_label(metric, kind) for kind in ("short", "title", "long"))


def test_record_paths_are_globs_matches_in_path_order_listed_folder_by_folder(tmp_path):
    """The lazy walk yields exactly ``sorted(Path.glob("*/records/*.json"))``: prefixes of other AP names, hidden
    names, files where folders belong and other suffixes included."""
    from evaluator.record.records import iter_record_paths

    base = tmp_path / "submissions"
    for ap_key, names in {"HYDRA": ["b.json", "a.json", ".hidden.json", "c.npz"], "HYDRA_x": ["a.json"],
                          "Hy": ["z.json"], ".git": ["a.json"], "A-1": ["x.json", "x.JSON"]}.items():
        (base / ap_key / "records").mkdir(parents=True)
        for name in names:
            (base / ap_key / "records" / name).write_text("{}")
    (base / "plain_file").write_text("")
    (base / "NoRecords").mkdir()
    (base / "FileRecords").mkdir()
    (base / "FileRecords" / "records").write_text("")
    assert list(iter_record_paths(tmp_path)) == sorted(base.glob("*/records/*.json"))
    assert len(list(iter_record_paths(tmp_path))) == 7
    assert list(iter_record_paths(tmp_path / "nowhere")) == []

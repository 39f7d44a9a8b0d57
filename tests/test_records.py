"""Records and per-sample sidecars: round trips, statistics, size."""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from evaluator.record import records
from evaluator.registry.norms import threat_model
from evaluator.untrusted.safeio import sha256_file

LINF_8 = threat_model("Linf", Fraction(8, 255))


def _per_sample(n: int, seed: int = 0) -> records.PerSample:
    rng = np.random.default_rng(seed)
    clean = rng.random(n) < 0.8
    distance = np.where(clean, rng.random(n).astype(np.float32) * 0.1, 0).astype(np.float32)
    distance[rng.random(n) < 0.01] = np.inf
    aa = clean & (distance > 8 / 255) & (rng.random(n) < 0.95)
    return records.PerSample(np.arange(n), clean_correct=clean, aa_robust=aa, hofmn_distance=distance)


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
    parts = [records.PerSample(data.sample_index[i::3], clean_correct=data.clean_correct[i::3],
                               aa_robust=data.aa_robust[i::3],
                               hofmn_distance=data.hofmn_distance[i::3]) for i in (2, 0, 1)]
    merged = records.PerSample.concatenate(parts)
    np.testing.assert_array_equal(merged.sample_index, data.sample_index)
    np.testing.assert_array_equal(merged.hofmn_distance, data.hofmn_distance)
    with pytest.raises(ValueError, match="twice"):
        records.PerSample.concatenate([parts[0], parts[0]])


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="one length"):
        records.PerSample(np.arange(3), clean_correct=[True, False], aa_robust=[False] * 3, hofmn_distance=[0.0] * 3)


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


OLD_SIDECAR = Path(__file__).parent / "data" / "sidecars" / "v1_sidecar.npz"  # written by the positional PerSample
OLD_SIDECAR_SHA256 = "1899f80e45c837a35119796f9fee9b61f5b38e6945d6c78655f21bc6aa53cffa"


def test_a_sidecar_written_before_named_arrays_still_reads():
    data = OLD_SIDECAR.read_bytes()
    per_sample = records.load_sidecar(data, OLD_SIDECAR_SHA256, OLD_SIDECAR.name, n_samples=20)
    assert set(per_sample.arrays) == set(records.SIDECAR_ARRAYS)
    assert per_sample["clean_correct"].dtype == bool and per_sample.hofmn_distance.dtype == np.float32
    assert records.count_results(per_sample, LINF_8) == {"clean_correct": 15, "aa_robust": 9, "hofmn_robust": 10,
                                                         "worst_case_robust": 9}
    assert np.isinf(per_sample.hofmn_distance[[5, 9]]).all()


def test_an_attack_declared_after_a_sidecar_was_written_leaves_its_numbers_as_they_were(monkeypatch):
    """A new attack counting toward the worst case (an optional array and a metric in metrics.yaml): an old
    sidecar still reads, without the array, and gives the counts its record holds (worst case over AA and
    HO-FMN); a result with the array counts it, and its worst case is robust under all three."""
    arrays = {**records._ARRAYS, "pgd_robust": {"dtype": "bool", "stage": "pgd", "optional": True}}
    pgd = records.Metric("pgd_robust_accuracy", "pgd_robust", "flag", "pgd_robust", True, {}, {})
    *before, worst = records.METRICS
    table = {**{m: records.METRIC_TABLE[m] for m in before}, pgd.name: pgd, worst: records.METRIC_TABLE[worst]}
    for name, value in {"_ARRAYS": arrays, "SIDECAR_ARRAYS": tuple(arrays), "METRIC_TABLE": table,
                        "ARRAY_DTYPES": {**records.ARRAY_DTYPES, "pgd_robust": np.dtype(bool)},
                        "METRICS": tuple(table), "COUNT_FIELDS": {m: row.count for m, row in table.items()},
                        "WORST_CASE_PARTS": (*records.WORST_CASE_PARTS, pgd.name)}.items():
        monkeypatch.setattr(records, name, value)
    per_sample = records.load_sidecar(OLD_SIDECAR.read_bytes(), OLD_SIDECAR_SHA256, OLD_SIDECAR.name, n_samples=20)
    assert "pgd_robust" not in per_sample.arrays and len(per_sample) == 20
    assert records.count_results(per_sample, LINF_8) == {"clean_correct": 15, "aa_robust": 9, "hofmn_robust": 10,
                                                         "worst_case_robust": 9}
    pgd_robust = per_sample.aa_robust.copy()
    pgd_robust[np.flatnonzero(pgd_robust)[:2]] = False
    with_pgd = records.PerSample(**per_sample.arrays, pgd_robust=pgd_robust)
    assert records.count_results(with_pgd, LINF_8) == {"clean_correct": 15, "aa_robust": 9, "hofmn_robust": 10,
                                                       "pgd_robust": 7, "worst_case_robust": 7}
    assert list(records.summarize(with_pgd, LINF_8)["metrics"]) == list(table)


def test_the_worst_case_is_robust_under_every_metric_that_counts_toward_it():
    per_sample = _per_sample(300)
    parts = [per_sample.robust(metric, LINF_8) for metric in records.WORST_CASE_PARTS]
    assert records.WORST_CASE_PARTS == ("aa_robust_accuracy", "hofmn_robust_accuracy")
    np.testing.assert_array_equal(per_sample.worst_case_robust(LINF_8), np.logical_and.reduce(parts))
    assert records.metric_stages("worst_case_robust_accuracy") == ("autoattack", "hofmn")


def test_an_undeclared_per_sample_array_is_refused():
    with pytest.raises(ValueError, match="unknown per-sample arrays"):
        records.PerSample(np.arange(3), clean_correct=[True] * 3, pgd_robust=[True] * 3)


def test_the_record_type_states_the_schema_s_keys():
    """``Record`` (and its nested types) name exactly the schema's properties, required where the schema
    requires them; the schema's metric and count names are metrics.yaml's."""
    from evaluator.record.types import Flag, Record, SidecarRef
    from evaluator.repository.schema import load_schema

    schema = load_schema("record")
    for typed, part in ((Record, schema), (Flag, schema["properties"]["flags"]["items"]),
                        (SidecarRef, schema["$defs"]["per_sample"])):
        assert set(typed.__annotations__) == set(part["properties"]), typed.__name__
        assert typed.__required_keys__ == set(part.get("required", [])), typed.__name__
    metrics, counts = schema["properties"]["metrics"], schema["$defs"]["counts"]  # a metric added later: optional
    assert list(metrics["properties"]) == list(records.METRICS) and set(metrics["required"]) <= set(records.METRICS)
    assert list(counts["properties"]) == [records.COUNT_FIELDS[m] for m in records.METRICS]
    assert set(counts["required"]) <= set(counts["properties"])
    assert list(schema["$defs"]["intervals"]["properties"]) == list(records.METRICS)


def test_a_sidecar_stores_its_arrays_in_the_declared_order_however_they_were_given(tmp_path):
    data = _per_sample(50)
    backwards = records.PerSample(**dict(reversed(list(data.arrays.items()))))
    assert list(backwards.arrays) == list(records.SIDECAR_ARRAYS)
    assert backwards.save(tmp_path / "a.npz") == data.save(tmp_path / "b.npz")

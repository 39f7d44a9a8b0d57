"""Adding an attack that counts toward the worst case touches the attack, its stage in ``run/stages.py``,
``metrics.yaml`` and a new protocol file: the record schema's metrics, counts and intervals are filled from
``metrics.yaml``, and a protocol's section named after the new stage is kept for the stage to check. Here a toy
attack stage is added through seams (the metrics table, the stage table, ``$APB_PROTOCOLS_DIR``), not by
editing shipped files, and a tiny model is evaluated under a protocol that configures it."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import evaluator
from evaluator.errors import APBError
from evaluator.protocol import PROTOCOLS_DIR_VARIABLE, load_protocol, read_protocol_file
from evaluator.record import records
from evaluator.registry import metrics_file
from evaluator.registry.norms import threat_model
from evaluator.record.summary import record_numbers
from evaluator.render.inputs import read_result
from evaluator.render.rows import row_of
from evaluator.repository.record_acceptance import check_record_data
from evaluator.repository.schema import load_schema
from evaluator.run import stages
from tests.support.evaluation import (TINY_PROTOCOL, one_torch_thread, run_tiny,  # noqa: F401  (fixture)
                                      write_tiny_protocol, write_tiny_test_set)

PERCENT = {"type": ["number", "null"], "minimum": 0, "maximum": 100}
COUNT = {"type": "integer", "minimum": 0}
INTERVAL = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"$ref": "#/$defs/percent"}}
METRIC_NAMES = ["clean_accuracy", "aa_robust_accuracy", "hofmn_robust_accuracy", "worst_case_robust_accuracy"]
COUNT_NAMES = ["clean_correct", "aa_robust", "hofmn_robust", "worst_case_robust"]


def test_the_record_schema_s_metrics_counts_and_intervals_are_those_it_stated_before_they_were_filled():
    """The filled schema is the one whose metric parts were written out by hand (until the x-metrics marker)."""
    schema = load_schema("record")
    assert schema["properties"]["metrics"] == {"type": "object", "additionalProperties": False,
                                               "required": METRIC_NAMES,
                                               "properties": {name: PERCENT for name in METRIC_NAMES}}
    assert schema["$defs"]["counts"] == {"additionalProperties": False, "required": COUNT_NAMES,
                                         "properties": {name: COUNT for name in COUNT_NAMES}}
    assert schema["$defs"]["intervals"] == {"additionalProperties": False,
                                            "properties": {name: INTERVAL for name in METRIC_NAMES}}
    assert "x-metrics" not in str(schema)


TOY_ARRAY = {"dtype": "bool", "stage": "toy", "optional": True,
             "meaning": "clean-correct and the toy attack, which breaks every `every`-th sample, did not break it"}
TOY = records.Metric("toy_robust_accuracy", "toy_robust", "flag", "toy_robust", True,
                     {"short": "toy", "title": "Toy attack", "long": "toy attack robust accuracy"},
                     {"readme": False, "site": "toy", "bot": True})
TABLE_NAMES = ("SIDECAR_ARRAYS", "ARRAY_DTYPES", "ARRAY_STAGES", "METRIC_TABLE", "METRICS", "COUNT_FIELDS",
               "WORST_CASE_PARTS")


def _toy_stage(run: stages.StageRun, chunk: int) -> dict[str, np.ndarray]:
    """The toy attack: breaks the samples whose index is a multiple of the protocol's ``toy.every``; its
    settings checked with the protocol's reader (errors name the protocol file and field)."""
    settings = run.protocol.stage_settings("toy")
    assert settings is not None  # the stage runs only under a protocol with its section
    reader = run.protocol.reader()
    reader.mapping(settings, ("toy",), ("every",))
    every = reader.integer(dict(settings), ("toy", "every"), 2)
    indices = np.asarray(run.ranges[chunk])
    return {"toy_robust": run.clean_of(chunk) & (indices % every != 0)}


@pytest.fixture
def toy_attack(monkeypatch):
    """metrics.yaml with the toy attack's optional array and its metric (counting toward the worst case, shown
    by the bot, not the README) before the worst case; the toy stage at the end of the stage table. Every
    evaluator module that bound a table of records.py by name sees the new one."""
    for found in pkgutil.walk_packages(evaluator.__path__, "evaluator."):  # every module imported before the patch,
        importlib.import_module(found.name)  # so none binds a patched table by importing it later (never restored)
    *before, worst = records.METRICS
    table = {**{m: records.METRIC_TABLE[m] for m in before}, TOY.name: TOY, worst: records.METRIC_TABLE[worst]}
    monkeypatch.setitem(metrics_file.ARRAYS, "toy_robust", TOY_ARRAY)
    new = {"SIDECAR_ARRAYS": tuple(metrics_file.ARRAYS), "METRIC_TABLE": table, "METRICS": tuple(table),
           "ARRAY_DTYPES": {**records.ARRAY_DTYPES, "toy_robust": np.dtype(bool)},
           "ARRAY_STAGES": {**records.ARRAY_STAGES, "toy_robust": "toy"},
           "COUNT_FIELDS": {m: row.count for m, row in table.items()},
           "WORST_CASE_PARTS": (*records.WORST_CASE_PARTS, TOY.name)}
    old = {name: getattr(records, name) for name in TABLE_NAMES}
    for module in [m for name, m in sys.modules.items() if name.startswith("evaluator")]:
        for name in TABLE_NAMES:
            if getattr(module, name, None) is old[name]:
                monkeypatch.setattr(module, name, new[name])
    monkeypatch.setattr(stages, "STAGE_TABLE", (*stages.STAGE_TABLE, stages.Stage("toy", _toy_stage)))
    load_schema.cache_clear()
    yield
    load_schema.cache_clear()


def per_sample_worst(record_path: Path) -> list[int]:
    """The worst case of AutoAttack and HO-FMN, per sample, from a record's sidecar (Linf 8/255)."""
    per_sample = records.PerSample.load(record_path.with_suffix(".npz"))
    return (per_sample.aa_robust & per_sample.hofmn_robust(threat_model("Linf", Fraction(8, 255)))).astype(int).tolist()


def _protocols(folder: Path, section: str) -> Path:
    text = write_tiny_protocol(folder).read_text(encoding="utf-8")
    (folder / f"{TINY_PROTOCOL}.yaml").write_text(text + section, encoding="utf-8")
    return folder / f"{TINY_PROTOCOL}.yaml"


def test_the_schema_and_the_protocols_take_the_new_attack_and_refuse_what_they_refused(toy_attack, tmp_path):
    schema = load_schema("record")
    assert list(schema["properties"]["metrics"]["properties"]) == [*METRIC_NAMES[:3], TOY.name, METRIC_NAMES[3]]
    assert schema["properties"]["metrics"]["required"] == METRIC_NAMES  # older records stay valid
    assert list(schema["$defs"]["counts"]["properties"]) == [*COUNT_NAMES[:3], "toy_robust", COUNT_NAMES[3]]
    assert TOY.name in schema["$defs"]["intervals"]["properties"]
    protocol = read_protocol_file(_protocols(tmp_path, "toy:\n  every: 3\n"))
    assert dict(protocol.stage_settings("toy") or {}) == {"every": 3}
    assert read_protocol_file(_protocols(tmp_path, "")).stage_settings("toy") is None
    with pytest.raises(APBError, match="tooy: unknown field; allowed here: id, .*, sanity, toy$"):
        read_protocol_file(_protocols(tmp_path, "tooy:\n  every: 3\n"))
    with pytest.raises(APBError, match="toy: must be a mapping of the toy stage's settings"):
        read_protocol_file(_protocols(tmp_path, "toy: 3\n"))


def test_a_new_attack_stage_counts_toward_the_worst_case_of_an_accepted_record(toy_attack, tmp_path, monkeypatch):
    monkeypatch.setenv(PROTOCOLS_DIR_VARIABLE, str(tmp_path / "protocols"))
    _protocols(tmp_path / "protocols", "toy:\n  every: 3\n")
    write_tiny_test_set(tmp_path / "data")
    outcome = run_tiny(tmp_path, load_protocol(TINY_PROTOCOL).require_evaluable())
    record = outcome.record
    assert record is not None and list(record["metrics"]) == list(records.METRICS)
    per_sample = records.PerSample.load(outcome.path.with_suffix(".npz"))
    np.testing.assert_array_equal(per_sample["toy_robust"], per_sample.clean_correct & (np.arange(12) % 3 != 0))
    threat = load_protocol(TINY_PROTOCOL).threat_model
    assert threat is not None
    worst = per_sample.aa_robust & per_sample.hofmn_robust(threat) & per_sample["toy_robust"]
    assert record["counts"]["toy_robust"] == int(per_sample["toy_robust"].sum())
    assert record["counts"]["worst_case_robust"] == int(worst.sum())
    sidecar = outcome.path.with_suffix(".npz").read_bytes()
    check = check_record_data(record, outcome.path.name, read_sidecar=lambda name: sidecar)
    assert check.problems == []
    from evaluator.render.pages import metrics_table

    assert "| Toy attack |" in metrics_table(record)  # the model pages show every metric
    assert TOY.name in records.metrics_in("bot") and TOY.name not in records.metrics_in("readme")


def test_a_protocol_without_the_new_stage_s_section_leaves_its_metric_unmeasured(toy_attack, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv(PROTOCOLS_DIR_VARIABLE, str(tmp_path / "protocols"))
    _protocols(tmp_path / "protocols", "")
    write_tiny_test_set(tmp_path / "data")
    outcome = run_tiny(tmp_path, load_protocol(TINY_PROTOCOL).require_evaluable())
    record = outcome.record
    assert record is not None and TOY.name not in record["metrics"] and "toy_robust" not in (record["counts"] or {})
    sidecar = outcome.path.with_suffix(".npz").read_bytes()  # a record without the new metric stays accepted
    assert check_record_data(record, outcome.path.name, read_sidecar=lambda name: sidecar).problems == []
    assert not any("toy" in line for line in record_numbers(record))
    row = row_of(tmp_path, read_result(tmp_path, outcome.path), threat_model("Linf", Fraction(8, 255)))
    assert row.robust_bits(TOY.name) is None  # the renderer reads the record; its worst case is over what it measured
    worst = per_sample_worst(outcome.path)
    assert np.unpackbits(np.frombuffer(row.robust_bits(records.METRICS[-1]) or b"", np.uint8))[:12].tolist() == worst
    edited = {**record, "counts": {**record["counts"], "toy_robust": 0}}  # a count without its metric is refused
    assert any("written together" in p.message
               for p in check_record_data(edited, outcome.path.name, read_sidecar=lambda name: sidecar).problems)


def test_a_wrong_stage_setting_is_an_error_that_names_the_protocol_file_and_field(toy_attack, tmp_path, monkeypatch):
    monkeypatch.setenv(PROTOCOLS_DIR_VARIABLE, str(tmp_path / "protocols"))
    path = _protocols(tmp_path / "protocols", "toy:\n  every: 1\n")
    write_tiny_test_set(tmp_path / "data")
    with pytest.raises(APBError) as error:
        run_tiny(tmp_path, load_protocol(TINY_PROTOCOL).require_evaluable())
    problem = error.value.problems[0]
    assert (problem.file, problem.field, problem.line) == (str(path), "toy.every", path.read_text().count("\n"))
    assert "must be an integer >= 2" in problem.message

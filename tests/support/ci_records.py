"""Real evaluated records (JSON + ``.npz`` sidecar, valid under the record schema) and manifests, for the
tests of ``apb ci``. The numbers come from seeded random per-sample results run through ``evaluator.record.records``."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from evaluator.registry.model_keys import parse_model_key
from evaluator.registry.norms import threat_model
from evaluator.record.records import PerSample, record_stem, summarize, write_record

EPS = 8 / 255
LINF_8 = threat_model("Linf", Fraction(8, 255))
PROTOCOL = "linf-8-255-v1"


def sha(char: str) -> str:
    return char * 64


def per_sample(n: int = 200, seed: int = 0) -> PerSample:
    rng = np.random.default_rng(seed)
    clean = rng.random(n) < 0.8
    distance = np.where(clean, rng.uniform(0.0, 0.08, n), 0.0).astype(np.float32)
    aa = clean & (distance > EPS) & (rng.random(n) < 0.95)
    return PerSample(np.arange(n), clean_correct=clean, aa_robust=aa, hofmn_distance=distance)


def check_dict(model_key: str, *, ok: bool = True) -> dict:
    """What ``CheckReport.to_dict(layers=False)`` holds, for a record's ``check`` field."""
    claimed = parse_model_key(model_key).sparsity
    measured = claimed + 0.02
    return {"model_key": model_key, "ok": ok, "failures": [] if ok else ["compliance: 2 keys missing"],
            "warnings": [], "compliance": {"ok": ok, "architecture": "resnet18", "n_keys": 122, "missing": [],
                                           "unexpected": [], "shape_mismatched": []},
            "sparsity": {"ok": True, "structure": "weights", "claimed": claimed, "measured": measured,
                         "weights": measured, "filters": 0.0, "channels": 0.0, "tolerance_pp": 0.5,
                         "message": f"measured weights sparsity {measured:.2f}% matches the claimed {claimed}%"},
            "clean": {"n": 200, "correct": 160, "accuracy": 80.0, "test_set_official": True}}


def evaluated_record(model_key: str, checkpoint_sha256: str, samples: PerSample, *, protocol: str = PROTOCOL,
                     flags: list | None = None, check: dict | None | str = "default", wall: float = 3723.0) -> dict:
    key = parse_model_key(model_key)
    summary = summarize(samples, LINF_8)
    return {"schema_version": 1, "model_key": model_key, "ap_key": key.ap_key, "architecture": key.architecture,
            "dataset": key.dataset, "structure_kind": key.structure_kind, "sparsity": key.sparsity,
            "source": "evaluated", "protocol": protocol, "n_samples": summary["n_samples"],
            "metrics": summary["metrics"], "counts": summary["counts"], "intervals": summary["intervals"],
            "checkpoint_sha256": checkpoint_sha256,
            "provenance": {"evaluator_version": "0.1.0", "device": "cpu", "wall_time_s": {"total": wall}},
            "flags": flags or [], "check": check_dict(model_key) if check == "default" else check,
            "per_sample": None}


def write_evaluated(directory: Path, model_key: str, checkpoint_sha256: str, *, seed: int = 0, n: int | None = None,
                    **fields) -> Path:
    """Write a record and its sidecar into *directory* the way ``apb evaluate`` does (by default with the
    protocol's number of samples); returns the JSON path."""
    from evaluator.protocol import load_protocol

    samples = per_sample(n or load_protocol(fields.get("protocol", PROTOCOL)).n_samples, seed)
    record = evaluated_record(model_key, checkpoint_sha256, samples, **fields)
    stem = record_stem(model_key, record["protocol"])
    digest = samples.save(directory / f"{stem}.npz")
    return write_record({**record, "per_sample": {"file": f"{stem}.npz", "sha256": digest}}, directory)


def manifest_text(ap_key: str, models: list[dict], defaults: dict | None = None) -> str:
    """A manifest (JSON is YAML) with the given model entries."""
    data = {"schema_version": 1, "ap_key": ap_key, "models": models}
    if defaults:
        data["defaults"] = defaults
    return json.dumps(data, indent=2) + "\n"


def model(architecture: str = "resnet18", sparsity: int = 90, checkpoint: str | None = "1", *,
          url: str | None = None, claimed: dict | None = None, **extra) -> dict:
    entry = {"architecture": architecture, "dataset": "CIFAR10", "structure": "weights", "sparsity": sparsity,
             "url": url or f"https://example.org/{architecture}-{sparsity}.pt",
             "sha256": sha(checkpoint) if checkpoint else None, **extra}
    if checkpoint is None:
        entry["imported"] = "original-benchmark"
    if claimed or checkpoint is not None:  # a new entry carries its author's claim (the schema requires it)
        entry["claimed"] = claimed or {"clean_accuracy": 10.0}
    return entry


def write_shard_outputs(out_dir: Path, model_key: str, checkpoint_sha256: str, count: int, *,
                        protocol: str = "smoke-v1", seed: int = 0) -> list[Path]:
    """The shard outputs ``apb evaluate --shard i/count`` writes for one model (D's ``write_shard``), from
    seeded per-sample results; returns one folder per shard, in shard order."""
    from evaluator.run.chunks import chunk_ranges
    from evaluator.record.assemble import RunFacts
    from evaluator.run.shards import Shard, shard_dir, write_shard
    from evaluator.protocol import load_protocol

    spec = load_protocol(protocol)
    ranges = chunk_ranges(spec.n_samples, spec.chunk_size)
    samples = per_sample(spec.n_samples, seed)
    facts = {"model_key": model_key, "checkpoint_sha256": checkpoint_sha256, "protocol": spec.id,
             "protocol_sha256": spec.sha256, "n_chunks": len(ranges),
             "test_set": {"file": "test_batch", "official": True, "sha256": sha("e")},
             "tuning": {"indices": [0, 1], "params": {"lr": 1.0}, "median_distance": 0.03}, "check": None,
             "randomized_output": None, "environment": {"device": "cpu", "evaluator_version": "0.1.0"},
             "date": "2026-01-01T00:00:00Z", "wall_s": {"fetch": 1.0, "check": 2.0}}
    folders = []
    for index in range(1, count + 1):
        shard = Shard(index, count)
        chunks = [c for c in range(len(ranges)) if shard.owns(c)]
        mask = np.isin(samples.sample_index, [i for c in chunks for i in ranges[c]])
        part = PerSample(samples.sample_index[mask], clean_correct=samples.clean_correct[mask],
                         aa_robust=samples.aa_robust[mask],
                         hofmn_distance=samples.hofmn_distance[mask])
        ledger = {str(c): {"wall_s": {"clean": 1.0, "autoattack": 5.0, "hofmn": 7.0}, "aa_warnings": [],
                           "aa_attacks": ["apgd-ce"], "aa_implementation": "pyautoattack"} for c in chunks}
        folders.append(write_shard(RunFacts(**facts, shard=str(shard), ledger=ledger), part, chunks,
                                   shard_dir(out_dir, model_key, spec.id, shard)))
    return folders

"""Record assembly: an evaluation's facts and per-sample results -> the result record (design.md) and its
sidecar on disk. Torch-free, so merging shards (``apb merge``, ``apb ci collect``) runs without torch."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.errors import APBError, Problem
from evaluator.registry.model_keys import parse_model_key
from evaluator.protocol import EvaluableProtocol, Protocol
from evaluator.record.flags import THRESHOLD_FLAGS, flag, flag_with_message
from evaluator.record.types import Flag, Record
from evaluator.record.records import SCHEMA_VERSION, PerSample, record_stem, summarize, write_record
from evaluator.registry.norms import ThreatModel


IDENTITY_FIELDS = ("model_key", "checkpoint_sha256", "protocol", "protocol_sha256", "n_chunks", "test_set")


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What an evaluation knows besides its per-sample results: which model, checkpoint, protocol and test
    set, the per-chunk ledger, the HO-FMN tuning, the check, the environment and the times. Stored in a shard
    output as JSON (``to_dict``, keys in field order); ``build_record`` turns it into the record."""

    model_key: str
    checkpoint_sha256: str | None
    protocol: str | None = None
    protocol_sha256: str | None = None
    n_chunks: int | None = None
    test_set: dict[str, Any]
    shard: str | None = None
    ledger: dict[str, dict[str, Any]]
    tuning: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    randomized_output: str | None = None
    environment: dict[str, Any]
    date: str
    wall_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The facts as the JSON object a shard output stores."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunFacts:
        """The facts from a stored JSON object (other keys ignored); ``KeyError`` names a missing field."""
        names = {item.name for item in fields(cls)}
        required = [name for name in ("model_key", "checkpoint_sha256", "test_set", "ledger", "environment", "date")
                    if name not in data]
        if required:
            raise KeyError(required[0])
        return cls(**{name: value for name, value in data.items() if name in names})

    def identity(self) -> dict[str, Any]:
        """The fields that make two runs parts of one evaluation."""
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}


def _share(mask: np.ndarray) -> float:
    return float(mask.sum()) / len(mask) if len(mask) else 0.0


def _percent(share: float) -> str:
    return f"{100 * share:.2f}%"


def sanity_flags(per_sample: PerSample, protocol: EvaluableProtocol, *, aa_warnings: list[str],
                 randomized_output: str | None = None, official_test_set: bool = True) -> list[Flag]:
    """The record's flags: AutoAttack's own warnings, a randomized-output check that failed, disagreements
    between AutoAttack and HO-FMN beyond the protocol's limits, too many samples without any adversarial,
    and a test file that is not the official one."""
    flags = [flag("autoattack-check", warning=warning) for warning in aa_warnings]
    if randomized_output:
        flags.append(flag_with_message("randomized-output", randomized_output))
    shares = measured_shares(per_sample, protocol.threat_model)
    for code, threshold in THRESHOLD_FLAGS:  # flags.yaml: each share above the protocol's sanity limit of that name
        limit = getattr(protocol.sanity, threshold)
        if shares[threshold] > limit:
            flags.append(flag(code, share=_percent(shares[threshold]), limit=_percent(limit)))
    if not official_test_set:
        flags.append(flag("unofficial-test-set"))
    return flags


def measured_shares(per_sample: PerSample, threat: ThreatModel) -> dict[str, float]:
    """The shares of the samples that the threshold flags of ``flags.yaml`` compare, by the name of the
    protocol's ``sanity`` limit each is compared with: broken by AutoAttack only, by HO-FMN only (misclassified
    clean samples count as broken by both), and without any HO-FMN adversarial."""
    aa_broken = ~per_sample.robust("aa_robust_accuracy", threat)
    hofmn_broken = ~per_sample.robust("hofmn_robust_accuracy", threat)
    return {"max_aa_only": _share(aa_broken & ~hofmn_broken), "max_hofmn_only": _share(hofmn_broken & ~aa_broken),
            "max_no_adversarial": _share(np.isinf(per_sample.hofmn_distance))}


def ordered_warnings(ledger: dict[str, dict]) -> list[str]:
    """AutoAttack's warnings over all chunks, each once, in chunk order."""
    seen: list[str] = []
    for chunk in sorted(ledger, key=int):
        seen.extend(w for w in ledger[chunk]["aa_warnings"] if w not in seen)
    return seen


def wall_times(ledger: dict[str, dict], extra: dict[str, float]) -> dict[str, float]:
    """Seconds per stage summed over chunks (compute time; several shards add up), plus ``extra`` stages."""
    totals = dict(extra)
    for entry in ledger.values():
        for stage, seconds in entry["wall_s"].items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    order = ("fetch", "check", "clean", "autoattack", "hofmn_tuning", "hofmn")  # a stage added later: after these
    result = {stage: round(totals[stage], 3) for stage in (*order, *(s for s in totals if s not in order))
              if stage in totals}
    result["total"] = round(sum(result.values()), 3)
    return result


def build_record(facts: RunFacts, per_sample: PerSample, protocol: EvaluableProtocol) -> Record:
    """The result record (design.md) of an evaluation from its facts and per-sample results."""
    key = parse_model_key(facts.model_key)
    summary = summarize(per_sample, protocol.threat_model)
    ledger = facts.ledger
    first = ledger[min(ledger, key=int)] if ledger else {}
    tuning = facts.tuning or {}
    record_provenance = {
        "protocol_sha256": protocol.sha256,
        **facts.environment,
        "date": facts.date,
        "wall_time_s": wall_times(ledger, facts.wall_s),
        "test_set": facts.test_set,
        "autoattack": {"implementation": first.get("aa_implementation", ""), "attacks": first.get("aa_attacks", [])},
        "hofmn_tuning": {"samples": len(tuning.get("indices", [])), "params": tuning.get("params"),
                         "median_distance": tuning.get("median_distance")},
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "model_key": facts.model_key,
        "ap_key": key.ap_key,
        "architecture": key.architecture, "dataset": key.dataset, "structure_kind": key.structure_kind,
        "sparsity": key.sparsity,
        "source": "evaluated",
        "protocol": protocol.id,
        "n_samples": summary["n_samples"],
        "metrics": summary["metrics"],
        "counts": summary["counts"],
        "intervals": summary["intervals"],
        "checkpoint_sha256": facts.checkpoint_sha256,
        "provenance": record_provenance,
        "flags": sanity_flags(per_sample, protocol, aa_warnings=ordered_warnings(ledger),
                              randomized_output=facts.randomized_output,
                              official_test_set=facts.test_set["official"]),
        "check": facts.check,
        "per_sample": None,
    }


def write_result(record: Record, per_sample: PerSample, out_dir: Path) -> Path:
    """Write the sidecar, then the record that names it (with its sha256), atomically; the record's path."""
    stem = record_stem(record["model_key"], record["protocol"])
    sha = per_sample.save(Path(out_dir) / f"{stem}.npz")
    return write_record({**record, "per_sample": {"file": f"{stem}.npz", "sha256": sha}}, Path(out_dir))


def refuse_smoke_in_submissions(protocol: Protocol, out_dir: Path, root: Path | None) -> None:
    """Records of a non-leaderboard protocol never go under ``submissions/``."""
    if protocol.leaderboard:
        return
    from evaluator.paths import SUBMISSIONS, repo_root, submissions_dir

    submissions = submissions_dir(root or repo_root()).resolve()
    target = Path(out_dir).resolve()
    if target == submissions or submissions in target.parents or SUBMISSIONS in target.parts:
        raise APBError(Problem(str(out_dir), f"protocol {protocol.id} is not a leaderboard protocol: its "
                                             "records are never written under submissions/; give another --out",
                               field="--out"))

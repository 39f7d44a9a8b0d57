"""Shards of one evaluation: ``--shard i/n`` runs the chunks with ``chunk % n == i - 1`` and writes a *shard
output* (``shard.json`` and ``per_sample.npz`` in a folder); ``merge_shards`` checks that the shards belong to
one evaluation and cover every chunk exactly once, and writes the record a single run gives. Torch-free:
``apb merge`` and ``apb ci collect`` run without torch."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from evaluator.record.assemble import IDENTITY_FIELDS, RunFacts, build_record, refuse_smoke_in_submissions, write_result
from evaluator.errors import APBError, Problem
from evaluator.protocol import Protocol, load_protocol
from evaluator.record.records import PerSample, load_sidecar, record_stem
from evaluator.untrusted.safeio import atomic_write_bytes, dump_json, load_json

SHARD_FILE = "shard.json"
SHARD_SIDECAR = "per_sample.npz"
SHARD_FORMAT = "apb-shard-1"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the chunks with ``chunk % count == index - 1``."""

    index: int = 1
    count: int = 1

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/3"`` -> ``Shard(2, 3)``; an error says what is expected."""
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text or "")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise APBError(Problem("--shard", f"expected i/n with 1 <= i <= n (e.g. 2/3), got {text!r}"))
    return Shard(int(match[1]), int(match[2]))


def shard_dir(out_dir: Path, model_key: str, protocol: str, shard: Shard) -> Path:
    return Path(out_dir) / f"{record_stem(model_key, protocol)}__shard-{shard.index}-of-{shard.count}"


def write_shard(facts: RunFacts, per_sample: PerSample, chunks: list[int], directory: Path) -> Path:
    """Write one shard's output: ``per_sample.npz`` and ``shard.json`` (written last: its presence means done)."""
    sha = per_sample.save(directory / SHARD_SIDECAR)
    atomic_write_bytes(directory / SHARD_FILE, dump_json({
        "format": SHARD_FORMAT, **facts.to_dict(), "chunks": chunks,
        "per_sample": {"file": SHARD_SIDECAR, "sha256": sha}}))
    return directory


@dataclass(frozen=True)
class ShardOutput:
    """One shard output as read back: its facts, the chunks it ran, its per-sample results, its json's path."""

    facts: RunFacts
    chunks: list[int]
    per_sample: PerSample
    path: Path


def read_shard(path: Path) -> ShardOutput:
    """A shard output (its folder or its ``shard.json``)."""
    path = Path(path)
    json_path = path / SHARD_FILE if path.is_dir() else path
    if not json_path.is_file():
        raise APBError(Problem(str(path), f"not a shard output: no {SHARD_FILE}; give the folders that "
                                          "`apb evaluate --shard i/n` wrote"))
    data, _ = load_json(json_path)
    if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
        raise APBError(Problem(str(json_path), f"not a shard output (format is not {SHARD_FORMAT})", field="format"))
    sidecar = json_path.parent / data["per_sample"]["file"]
    if not sidecar.is_file():
        raise APBError(Problem(str(sidecar), "missing: the shard's per-sample results are gone; re-run that shard"))
    missing = [name for name in (*IDENTITY_FIELDS, "chunks") if name not in data]
    try:
        facts = RunFacts.from_dict(data)
    except KeyError as error:
        missing.append(str(error.args[0]))
    if missing:
        raise APBError(Problem(str(json_path), f"not a complete shard output: {missing[0]} is missing; re-run "
                                               "that shard", field=missing[0]))
    per_sample = load_sidecar(sidecar.read_bytes(), data["per_sample"]["sha256"], str(sidecar))
    return ShardOutput(facts, list(data["chunks"]), per_sample, json_path)


def merge_facts(shards: list[ShardOutput]) -> tuple[RunFacts, PerSample]:
    """Check that shard outputs belong to one evaluation and cover every chunk once; join them."""
    if not shards:
        raise APBError(Problem("apb merge", "no shard outputs given"))
    first, first_path = shards[0].facts, shards[0].path
    for shard in shards[1:]:
        for name in IDENTITY_FIELDS:
            mine, theirs = getattr(shard.facts, name), getattr(first, name)
            if mine != theirs:
                raise APBError(Problem(str(shard.path), f"belongs to another evaluation than {first_path}: "
                                                        f"{theirs!r} != {mine!r}", field=name))
        if (shard.facts.tuning or {}).get("params") != (first.tuning or {}).get("params"):
            raise APBError(Problem(str(shard.path), f"its HO-FMN tuning differs from {first_path}'s (run on another "
                                                    "device?); run the shards where they tune alike", field="tuning"))
    owner: dict[int, Path] = {}
    for shard in shards:
        for chunk in shard.chunks:
            if chunk in owner:
                raise APBError(Problem(str(shard.path), f"chunk {chunk} is also in {owner[chunk]}: the shards "
                                                        "overlap; give each shard once", field="chunks"))
            owner[chunk] = shard.path
    n_chunks = int(first.n_chunks or 0)
    missing = sorted(set(range(n_chunks)) - set(owner))
    if missing:
        raise APBError(Problem("apb merge", f"chunks {', '.join(map(str, missing[:10]))} are in no given shard "
                                            f"({len(owner)} of {n_chunks} chunks covered); "
                                            "run and give the missing shards"))
    devices = sorted({shard.facts.environment["device"] for shard in shards})
    merged = replace(
        first,
        ledger={k: v for shard in shards for k, v in shard.facts.ledger.items()},
        date=max(shard.facts.date for shard in shards),
        environment={**first.environment, "device": " + ".join(devices)},
        wall_s={stage: max(shard.facts.wall_s.get(stage, 0.0) for shard in shards) for stage in first.wall_s})
    return merged, PerSample.concatenate([shard.per_sample for shard in shards])


def merge_shards(paths: list[Path], out_dir: Path, *, root: Path | None = None,
                 protocol: Protocol | str | None = None) -> Path:
    """Merge shard outputs into the record (and sidecar) a single run gives; returns the record's path.
    ``protocol`` (default: the id the shards name) must be the very file the shards ran with."""
    facts, per_sample = merge_facts([read_shard(Path(p)) for p in paths])
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol or str(facts.protocol))
    if protocol.id != facts.protocol or protocol.sha256 != facts.protocol_sha256:
        raise APBError(Problem(str(protocol.path), f"differs from the protocol the shards ran with ({facts.protocol}, "
                                                   f"sha256 {facts.protocol_sha256}); merge with the evaluator "
                                                   "version that made them", field="protocol"))
    refuse_smoke_in_submissions(protocol, Path(out_dir), root)
    return write_result(build_record(facts, per_sample, protocol.require_evaluable()), per_sample, Path(out_dir))

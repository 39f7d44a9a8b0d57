"""The evaluation's stages as a table (``STAGE_TABLE``: clean -> AutoAttack -> HO-FMN), each computing the
per-sample arrays ``metrics.yaml`` says it produces, one chunk at a time, resumable per chunk in a
:class:`~evaluator.run.chunks.ChunkStore`; and the run of the table over some chunks (``evaluate_chunks``).

Per-sample semantics: ``clean_correct``; ``aa_robust`` = clean-correct and no verified AutoAttack
adversarial within eps; ``hofmn_distance`` = 0 when misclassified clean, the verified distance (in the threat
model's norm) of the HO-FMN adversarial, ``inf`` when none was found. An attack stage attacks the clean-correct samples only.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from evaluator.errors import APBError, Problem
from evaluator.protocol import EvaluableProtocol
from evaluator.record import provenance
from evaluator.record import records
from evaluator.record.records import PerSample
from evaluator.registry.metrics_file import added_stages
from evaluator.run.chunks import ChunkStore, chunk_ranges, chunk_seed
from evaluator.untrusted.safeio import atomic_write_bytes, dump_json


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _to_device(batch: tuple[torch.Tensor, torch.Tensor], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on ``device``; to a GPU through pinned host memory, without waiting for the copy (the
    attack's kernels queue behind it on the same stream). The values are the same bits either way."""
    if torch.device(device).type != "cuda":
        return batch[0].to(device), batch[1].to(device)
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in batch)  # type: ignore[return-value]


def clean_chunk(model: nn.Module, test_set: Any, indices: range, *, batch_size: int, device: str) -> np.ndarray:
    """Per sample of the chunk: does the model classify it correctly?"""
    from evaluator.run.check import clean_predictions

    correct = clean_predictions(model, test_set, batch_size=batch_size, device=device, indices=list(indices),
                                progress=False)
    return np.asarray(torch.as_tensor(correct).cpu().numpy(), dtype=bool)


def autoattack_chunk(model: nn.Module, test_set: Any, indices: range, clean_correct: np.ndarray,
                     protocol: EvaluableProtocol, *, seed: int, device: str) -> dict[str, np.ndarray]:
    """AutoAttack on one chunk: verified robust flags (clean-correct only), AutoAttack's warnings."""
    from evaluator.attacks.autoattack import autoattack

    inputs, labels = _to_device(test_set.batch(list(indices)), device)
    result = autoattack(model, inputs, labels, norm=protocol.threat_model.norm, eps=protocol.eps,
                        version=protocol.autoattack.version, seed=seed, batch_size=protocol.autoattack.batch_size,
                        device=device,
                        attacks=list(protocol.autoattack.attacks) if protocol.autoattack.attacks else None)
    robust = np.asarray(result.robust.cpu().numpy(), dtype=bool) & clean_correct
    return {"aa_robust": robust, "warnings": np.array(list(result.warnings), dtype=str),
            "attacks": np.array(list(result.attacks_to_run), dtype=str),
            "implementation": np.array(getattr(result, "implementation", ""), dtype=str)}


def tuning_indices(model: nn.Module, test_set: Any, protocol: EvaluableProtocol, *, batch_size: int,
                   device: str) -> list[int]:
    """The tuning batch: the first ``tuning.batch_size`` clean-correct samples among the first ``n_samples``."""
    wanted = protocol.hofmn.tuning.batch_size
    found: list[int] = []
    for chunk in chunk_ranges(protocol.n_samples, protocol.chunk_size):
        correct = clean_chunk(model, test_set, chunk, batch_size=batch_size, device=device)
        found.extend(index for index, ok in zip(chunk, correct) if ok)
        if len(found) >= wanted:
            break
    return found[:wanted]


def tune_hofmn(model: nn.Module, test_set: Any, protocol: EvaluableProtocol, *, batch_size: int, device: str,
               progress: bool) -> dict:
    """Tune HO-FMN on the protocol's tuning batch (deterministic); a JSON-able result."""
    from evaluator.attacks.hofmn import tune_fmn

    settings = protocol.hofmn
    indices = tuning_indices(model, test_set, protocol, batch_size=batch_size, device=device)
    if not indices:  # no clean-correct sample: nothing to attack, so no parameters are needed
        return {"indices": [], "params": None, "median_distance": None, "trials": []}
    inputs, labels = _to_device(test_set.batch(indices), device)
    torch.manual_seed(protocol.seed)
    result = tune_fmn(model, inputs, labels, norm=protocol.threat_model.norm,
                      search_space=settings.tuning.search_space_dict(),
                      trials=settings.tuning.trials, steps=settings.tuning.steps, seed=protocol.seed,
                      loss=settings.loss, optimizer=settings.optimizer, scheduler=settings.scheduler,
                      startup_trials=settings.tuning.startup_trials, progress=progress)
    return {"indices": indices, "params": {k: float(v) for k, v in result.best_params.items()},
            "median_distance": _finite_or_none(result.best_value),
            "trials": [[{k: float(v) for k, v in params.items()}, _finite_or_none(value)]
                       for params, value in result.trials]}


def hofmn_chunk(model: nn.Module, test_set: Any, indices: range, clean_correct: np.ndarray,
                protocol: EvaluableProtocol, params: dict, *, seed: int, device: str) -> np.ndarray:
    """Verified HO-FMN distances of one chunk: 0 misclassified, the distance found (in the threat model's norm),
    inf none found."""
    from evaluator.attacks.hofmn import hofmn_attack
    from evaluator.attacks.verify import verified_distances

    settings, norm = protocol.hofmn, protocol.threat_model.norm
    distances = np.zeros(len(indices), dtype=np.float32)
    targets = [index for index, ok in zip(indices, clean_correct) if ok]
    positions = np.flatnonzero(clean_correct)
    torch.manual_seed(seed)
    for start in range(0, len(targets), settings.batch_size):
        inputs, labels = _to_device(test_set.batch(targets[start:start + settings.batch_size]), device)
        adv = hofmn_attack(model, inputs, labels, norm=norm, params=params, steps=settings.steps,
                           loss=settings.loss, optimizer=settings.optimizer, scheduler=settings.scheduler)
        found = verified_distances(model, inputs, labels, adv, norm=norm, batch_size=settings.batch_size)
        distances[positions[start:start + settings.batch_size]] = found.cpu().numpy().astype(np.float32)
    return distances


def shared_tuning_file(cache_dir: Path, checkpoint_sha256: str, protocol: EvaluableProtocol, device: str) -> Path:
    """Where the shards of one evaluation share its HO-FMN tuning: named by the checkpoint, the protocol
    file's sha256 and a digest of what the tuning's numbers depend on (device model, numerics backend,
    torch/optuna/evaluator versions), so that only an identical computation is ever reused."""
    import hashlib

    environment = provenance.environment(device)
    basis = dump_json({"device": environment["device"], "backend": environment["backend"],
                       "packages": environment["packages"], "evaluator": environment["evaluator_version"]})
    digest = hashlib.sha256(basis).hexdigest()[:16]
    return Path(cache_dir) / "tuning" / f"{checkpoint_sha256}__{protocol.id}-{protocol.sha256[:16]}__{digest}.json"


def shared_tuning_result(path: Path, tune: Callable[[], dict]) -> dict:
    """The tuning stored at ``path``, or ``tune()``'s result written there; a lock beside the file makes
    concurrent shards on one machine wait for the first one's tuning instead of tuning again. A stored
    tuning is reused with ``wall_s`` 0 (this shard spent no time tuning)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(stored, dict) and {"indices", "params"} <= set(stored):
                return {**stored, "wall_s": 0.0}
        tuning = tune()
        atomic_write_bytes(path, dump_json(tuning))
        return tuning


# ----------------------------------------------------------------------------------------------- the table


@dataclass
class StageRun:
    """What every stage of one run reads: the model, the samples, the protocol, the chunks' ranges, the store,
    and the HO-FMN tuning once ``_tune`` has prepared it."""

    model: nn.Module
    test_set: Any
    protocol: EvaluableProtocol
    ranges: list[range]
    store: ChunkStore
    device: str
    batch_size: int
    progress: bool
    shared_tuning: Path | None
    tuning: dict = field(default_factory=dict)

    def clean_of(self, chunk: int) -> np.ndarray:
        return self.store.stored_stage("clean", chunk)["clean_correct"].astype(bool)

    def seed(self, chunk: int) -> int:
        return chunk_seed(self.protocol.seed, chunk)


@dataclass(frozen=True)
class Stage:
    """One stage: ``name`` (its work-dir folder, its ``wall_s`` key and its ``stage`` in ``metrics.yaml``),
    ``run`` (a chunk's arrays: those ``metrics.yaml`` says the stage produces, and what ``ledger`` reads),
    ``prepare`` (once, before the chunks still to run; given them), ``ledger`` (a chunk's ledger entries from its
    stored arrays, None where the stage did not run) and ``always`` (runs whatever stages are asked for). A stage
    added after the first sidecars (``metrics_file.added_stages``: its arrays are ``optional``) reads its settings from
    the protocol's section named after it (``protocol.stage_settings(name)``, checked with ``protocol.reader()``)
    and runs only under a protocol that has one; where it did not run, its arrays are absent (not measured)."""

    name: str
    run: Callable[[StageRun, int], dict[str, np.ndarray]]
    prepare: Callable[[StageRun, list[int]], None] | None = None
    ledger: Callable[[dict[str, np.ndarray] | None], dict[str, Any]] | None = None
    always: bool = False

    @property
    def arrays(self) -> tuple[str, ...]:
        """The per-sample arrays this stage produces (``metrics.yaml``)."""
        return tuple(name for name, stage in records.ARRAY_STAGES.items() if stage == self.name)

    @property
    def added(self) -> bool:
        """Declared after the first sidecars: runs only under a protocol with its section."""
        return self.name in added_stages()

    def runs(self, protocol: EvaluableProtocol, stages: tuple[str, ...]) -> bool:
        """Does this stage run when *stages* are asked for under *protocol*?"""
        wanted = self.name in stages and (not self.added or protocol.stage_settings(self.name) is not None)
        return self.always or wanted


def _clean(run: StageRun, chunk: int) -> dict[str, np.ndarray]:
    return {"clean_correct": clean_chunk(run.model, run.test_set, run.ranges[chunk], batch_size=run.batch_size,
                                         device=run.device)}


def _autoattack(run: StageRun, chunk: int) -> dict[str, np.ndarray]:
    return autoattack_chunk(run.model, run.test_set, run.ranges[chunk], run.clean_of(chunk), run.protocol,
                            seed=run.seed(chunk), device=run.device)


def _autoattack_ledger(arrays: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """AutoAttack's warnings, attacks and implementation of one chunk."""
    return {"aa_warnings": [] if arrays is None else [str(w) for w in arrays["warnings"]],
            "aa_attacks": [] if arrays is None else [str(a) for a in arrays["attacks"]],
            "aa_implementation": "" if arrays is None else str(arrays["implementation"])}


def _tune(run: StageRun, pending: list[int]) -> None:
    """HO-FMN's tuning: stored, shared by another shard, or computed now when chunks are still to attack."""
    run.tuning = run.store.load_tuning() or {}
    if run.tuning or not pending:
        return

    def tune() -> dict:
        started = time.perf_counter()
        found = tune_hofmn(run.model, run.test_set, run.protocol, batch_size=run.batch_size, device=run.device,
                           progress=run.progress)
        return {**found, "wall_s": time.perf_counter() - started}

    run.tuning = tune() if run.shared_tuning is None else shared_tuning_result(Path(run.shared_tuning), tune)
    run.store.save_tuning(run.tuning)


def _hofmn(run: StageRun, chunk: int) -> dict[str, np.ndarray]:
    return {"hofmn_distance": hofmn_chunk(run.model, run.test_set, run.ranges[chunk], run.clean_of(chunk),
                                          run.protocol, run.tuning["params"], seed=run.seed(chunk),
                                          device=run.device)}


STAGE_TABLE = (Stage("clean", _clean, always=True),
               Stage("autoattack", _autoattack, ledger=_autoattack_ledger),
               Stage("hofmn", _hofmn, prepare=_tune))
STAGES = tuple(stage.name for stage in STAGE_TABLE)


# ------------------------------------------------------------------------------------------------- the run


@dataclass
class ChunkResults:
    """What the stages produced for some chunks: per-sample arrays and a ledger per chunk (wall times,
    AutoAttack's warnings and attacks), plus the tuning."""

    per_sample: PerSample
    ledger: dict[str, dict]  # str(chunk) -> {"wall_s": {stage: s}, "aa_warnings": [...], ...}
    tuning: dict
    chunks: list[int] = field(default_factory=list)


def _progress(items: list, stage: str, enabled: bool) -> Any:
    return tqdm(items, desc=stage, unit="chunk", file=sys.stderr, disable=not enabled or not items)


def evaluate_chunks(model: nn.Module, test_set: Any, protocol: EvaluableProtocol, *, chunks: list[int] | None = None,
                    store: ChunkStore | None = None, device: str = "cpu", batch_size: int = 500,
                    progress: bool = True, stages: tuple[str, ...] | None = None,
                    shared_tuning: Path | None = None) -> ChunkResults:
    """Run the stages of ``STAGE_TABLE`` on the given chunks (default: all), stage by stage, skipping every
    chunk whose stage result is already in ``store``. ``batch_size`` is the batch of plain forward passes
    (clean predictions); the attacks' batches are the protocol's. ``stages`` (default: the whole table) may leave
    stages out (the API's ``test_model_aa`` runs only clean and AutoAttack). Runs under the fixed numerics backend
    (``provenance.fixed_backend``). ``shared_tuning``: a file where the HO-FMN tuning of this very
    evaluation is shared between shards (``shared_tuning_file``): the first shard tunes, the others reuse."""
    protocol.require_evaluable()
    if len(test_set) < protocol.n_samples:
        raise APBError(Problem(str(getattr(test_set, "source", "test set")),
                               f"holds {len(test_set)} samples; protocol {protocol.id} needs the first "
                               f"{protocol.n_samples}", field="n_samples"))
    ranges = chunk_ranges(protocol.n_samples, protocol.chunk_size)
    chunks = list(range(len(ranges))) if chunks is None else sorted(chunks)
    run = StageRun(model, test_set, protocol, ranges, store or ChunkStore(None), device, batch_size, progress,
                   shared_tuning)
    asked = tuple(stage.name for stage in STAGE_TABLE) if stages is None else stages
    ran = tuple(stage.name for stage in STAGE_TABLE if stage.runs(protocol, asked))
    with provenance.fixed_backend():
        run.model = model.to(device).eval()
        for stage in STAGE_TABLE:
            if stage.name in ran:
                _run_stage(run, stage, chunks)
    return collect_results(run.store, ranges, chunks, run.tuning, ran)


def _run_stage(run: StageRun, stage: Stage, chunks: list[int]) -> None:
    """*stage* on every chunk of *chunks* without a stored result, each result stored with its wall time."""
    pending = [c for c in chunks if run.store.load_stage(stage.name, c) is None]
    if stage.prepare is not None:
        stage.prepare(run, pending)
    for chunk in _progress(pending, stage.name, run.progress):
        started = time.perf_counter()
        arrays = stage.run(run, chunk)
        run.store.save_stage(stage.name, chunk, {**arrays, "wall_s": np.asarray(time.perf_counter() - started)})


def collect_results(store: ChunkStore, ranges: list[range], chunks: list[int], tuning: dict,
                    stages: tuple[str, ...] = STAGES) -> ChunkResults:
    """Assemble the stored stage results of ``chunks`` into per-sample arrays (zeros for a stage left out, none
    for an added stage that did not run) and a ledger."""
    parts, ledger = [], {}
    for chunk in chunks:
        size = len(ranges[chunk])
        arrays: dict[str, np.ndarray] = {}
        wall: dict[str, float] = {}
        entries: dict[str, Any] = {}
        for stage in STAGE_TABLE:
            data = store.stored_stage(stage.name, chunk) if stage.always else \
                store.load_stage(stage.name, chunk) if stage.name in stages else None
            for name in stage.arrays if data is not None or not stage.added else ():
                arrays[name] = data[name] if data is not None else np.zeros(size, dtype=records.ARRAY_DTYPES[name])
            if data is not None:
                wall[stage.name] = float(data["wall_s"])
            if stage.ledger is not None:
                entries.update(stage.ledger(data))
        parts.append(PerSample(np.arange(ranges[chunk].start, ranges[chunk].stop, dtype=np.int32), **arrays))
        ledger[str(chunk)] = {"wall_s": wall, **entries}
    return ChunkResults(PerSample.concatenate(parts), ledger, tuning, list(chunks))

"""Chunked, resumable, shardable evaluation of a model under a protocol (shards.py merges the shards,
assemble.py builds the record).

Stages: fetch -> check -> clean -> AutoAttack -> HO-FMN (tuning once, then the attack) -> record.

The protocol's first ``n_samples`` test samples are split into fixed chunks (chunk ``i`` = samples
``[i * chunk_size, (i + 1) * chunk_size)``). Each stage's result for a chunk is written atomically into the
work dir as it finishes, and a finished chunk is never recomputed: a run killed at any point and started
again continues where it stopped and ends with the same per-sample results as an uninterrupted run, because
every random seed is derived from the protocol's seed and the chunk index (``chunk_seed``), never from time.
HO-FMN is tuned once per model, on the first ``tuning.batch_size`` clean-correct samples; the result is kept
in the work dir, and every shard derives the same tuning.

``--shard i/n`` runs the chunks with ``chunk % n == i - 1`` and writes a shard output (see shards.py).

Per-sample semantics: ``clean_correct``; ``aa_robust`` = clean-correct and no verified AutoAttack
adversarial within eps; ``hofmn_distance`` = 0 when misclassified clean, the verified distance (in the threat
model's norm) of the
HO-FMN adversarial, ``inf`` when none was found.
"""
from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from evaluator.record import provenance
from evaluator.record.assemble import RunFacts, build_record, refuse_smoke_in_submissions, write_result
from evaluator.errors import APBError, Problem
from evaluator.registry.model_keys import parse_model_key
from evaluator.protocol import DEFAULT_PROTOCOL, EvaluableProtocol, Protocol, load_protocol
from evaluator.paths import records_dir
from evaluator.record.records import PerSample, read_record, record_stem, recorded_sha256
from evaluator.untrusted.safeio import atomic_write_bytes, dump_json
from evaluator.run.shards import Shard, shard_dir, write_shard

if TYPE_CHECKING:
    from evaluator.run.check import CheckReport

STAGES = ("clean", "autoattack", "hofmn")
JOB_FILE = "job.json"
TUNING_FILE = "tuning.json"


# ------------------------------------------------------------------------------------------------- chunks


def chunk_ranges(n_samples: int, chunk_size: int) -> list[range]:
    """The fixed chunks of the first ``n_samples`` samples."""
    return [range(start, min(start + chunk_size, n_samples)) for start in range(0, n_samples, chunk_size)]


def chunk_seed(protocol_seed: int, chunk: int) -> int:
    """The seed of every random draw for one chunk: the protocol's seed plus the chunk index."""
    return protocol_seed + chunk


# ----------------------------------------------------------------------------------------------- the store


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **cast(dict[str, Any], arrays))  # numpy's stub takes allow_pickle for an array name
    return buffer.getvalue()


class ChunkStore:
    """Finished stage results per chunk, the HO-FMN tuning and the job's identity: in a work dir on disk
    (every file written atomically), or in memory when ``path`` is None (the Python API)."""

    def __init__(self, path: Path | None, identity: dict | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._memory: dict[str, Any] = {}
        if self.path is not None and identity is not None:
            self._claim(identity)

    def _claim(self, identity: dict) -> None:
        """Write the job's identity, or refuse a work dir that belongs to another job."""
        assert self.path is not None  # the constructor claims a work dir only
        job = self.path / JOB_FILE
        if job.is_file():
            existing = json.loads(job.read_text(encoding="utf-8"))
            if existing != identity:
                differing = sorted(k for k in set(existing) | set(identity) if existing.get(k) != identity.get(k))
                raise APBError(Problem(str(job), f"this work dir belongs to another evaluation (differs in "
                                                 f"{', '.join(differing)}); give another --work-dir or delete it"))
        else:
            atomic_write_bytes(job, dump_json(identity))

    def _file(self, stage: str, chunk: int) -> Path:
        assert self.path is not None  # callers use the in-memory store when there is no work dir
        return self.path / stage / f"chunk-{chunk:05d}.npz"

    def load_stage(self, stage: str, chunk: int) -> dict[str, np.ndarray] | None:
        if self.path is None:
            return self._memory.get(f"{stage}/{chunk}")
        path = self._file(stage, chunk)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def stored_stage(self, stage: str, chunk: int) -> dict[str, np.ndarray]:
        """The results of a stage that has run for *chunk*."""
        arrays = self.load_stage(stage, chunk)
        if arrays is None:
            raise APBError(Problem(str(self.path or "memory"), f"no {stage} results for chunk {chunk}; "
                                                               "run that stage first"))
        return arrays

    def save_stage(self, stage: str, chunk: int, arrays: dict[str, np.ndarray]) -> None:
        if self.path is None:
            self._memory[f"{stage}/{chunk}"] = arrays
        else:
            atomic_write_bytes(self._file(stage, chunk), _npz_bytes(arrays))

    def load_tuning(self) -> dict | None:
        if self.path is None:
            return self._memory.get(TUNING_FILE)
        path = self.path / TUNING_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def save_tuning(self, tuning: dict) -> None:
        if self.path is None:
            self._memory[TUNING_FILE] = tuning
        else:
            atomic_write_bytes(self.path / TUNING_FILE, dump_json(tuning))


# ---------------------------------------------------------------------------------------------- the stages


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
    """Verified HO-FMN distances of one chunk: 0 misclassified, the distance found, inf none found."""
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
                    progress: bool = True, stages: tuple[str, ...] = STAGES,
                    shared_tuning: Path | None = None) -> ChunkResults:
    """Run the clean, AutoAttack and HO-FMN stages on the given chunks (default: all), stage by stage,
    skipping every chunk whose stage result is already in ``store``. ``batch_size`` is the batch of plain
    forward passes (clean predictions); the attacks' batches are the protocol's. ``stages`` may stop early
    (the API's ``test_model_aa`` runs only clean and AutoAttack). Runs under the fixed numerics backend
    (``provenance.fixed_backend``). ``shared_tuning``: a file where the HO-FMN tuning of this very
    evaluation is shared between shards (``shared_tuning_file``): the first shard tunes, the others reuse."""
    with provenance.fixed_backend():
        return _evaluate_chunks(model, test_set, protocol, chunks=chunks, store=store or ChunkStore(None),
                                device=device, batch_size=batch_size, progress=progress, stages=stages,
                                shared_tuning=shared_tuning)


def _evaluate_chunks(model: nn.Module, test_set: Any, protocol: EvaluableProtocol, *, chunks: list[int] | None,
                     store: ChunkStore, device: str, batch_size: int, progress: bool, stages: tuple[str, ...],
                     shared_tuning: Path | None) -> ChunkResults:
    protocol.require_evaluable()
    if len(test_set) < protocol.n_samples:
        raise APBError(Problem(str(getattr(test_set, "source", "test set")),
                               f"holds {len(test_set)} samples; protocol {protocol.id} needs the first "
                               f"{protocol.n_samples}", field="n_samples"))
    ranges = chunk_ranges(protocol.n_samples, protocol.chunk_size)
    chunks = list(range(len(ranges))) if chunks is None else sorted(chunks)
    model = model.to(device).eval()

    def run_stage(stage: str, compute: Callable[[int], dict[str, np.ndarray]]) -> None:
        for chunk in _progress([c for c in chunks if store.load_stage(stage, c) is None], stage, progress):
            started = time.perf_counter()
            arrays = compute(chunk)
            store.save_stage(stage, chunk, {**arrays, "wall_s": np.asarray(time.perf_counter() - started)})

    def clean_of(chunk: int) -> np.ndarray:
        return store.stored_stage("clean", chunk)["clean_correct"].astype(bool)

    run_stage("clean", lambda c: {"clean_correct": clean_chunk(model, test_set, ranges[c], batch_size=batch_size,
                                                                device=device)})
    if "autoattack" in stages:
        run_stage("autoattack", lambda c: autoattack_chunk(model, test_set, ranges[c], clean_of(c), protocol,
                                                           seed=chunk_seed(protocol.seed, c), device=device))
    tuning: dict = {}
    if "hofmn" in stages:
        tuning = store.load_tuning() or {}
        if not tuning and any(store.load_stage("hofmn", c) is None for c in chunks):
            def tune() -> dict:
                started = time.perf_counter()
                found = tune_hofmn(model, test_set, protocol, batch_size=batch_size, device=device,
                                   progress=progress)
                return {**found, "wall_s": time.perf_counter() - started}

            tuning = tune() if shared_tuning is None else shared_tuning_result(Path(shared_tuning), tune)
            store.save_tuning(tuning)
        run_stage("hofmn", lambda c: {"hofmn_distance": hofmn_chunk(
            model, test_set, ranges[c], clean_of(c), protocol, tuning["params"],
            seed=chunk_seed(protocol.seed, c), device=device)})
    return collect_results(store, ranges, chunks, tuning, stages)


def collect_results(store: ChunkStore, ranges: list[range], chunks: list[int], tuning: dict,
                    stages: tuple[str, ...] = STAGES) -> ChunkResults:
    """Assemble the stored stage results of ``chunks`` into per-sample arrays and a ledger."""
    parts, ledger = [], {}
    for chunk in chunks:
        size = len(ranges[chunk])
        clean = store.stored_stage("clean", chunk)
        aa = store.load_stage("autoattack", chunk) if "autoattack" in stages else None
        fmn = store.load_stage("hofmn", chunk) if "hofmn" in stages else None
        parts.append(PerSample(
            np.arange(ranges[chunk].start, ranges[chunk].stop, dtype=np.int32), clean["clean_correct"],
            aa["aa_robust"] if aa is not None else np.zeros(size, dtype=bool),
            fmn["hofmn_distance"] if fmn is not None else np.zeros(size, dtype=np.float32)))
        wall = {stage: float(data["wall_s"]) for stage, data in
                (("clean", clean), ("autoattack", aa), ("hofmn", fmn)) if data is not None}
        ledger[str(chunk)] = {"wall_s": wall,
                              "aa_warnings": [] if aa is None else [str(w) for w in aa["warnings"]],
                              "aa_attacks": [] if aa is None else [str(a) for a in aa["attacks"]],
                              "aa_implementation": "" if aa is None else str(aa["implementation"])}
    return ChunkResults(PerSample.concatenate(parts), ledger, tuning, list(chunks))


def test_set_facts(test_set: Any) -> dict:
    """Which test file the samples came from: name, official or not, sha256 of the evaluated samples."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(test_set.images.numpy()).tobytes())
    digest.update(np.ascontiguousarray(test_set.labels.numpy()).tobytes())
    return {"file": Path(str(getattr(test_set, "source", ""))).name, "official": bool(getattr(test_set, "official", True)),
            "sha256": digest.hexdigest()}


# ------------------------------------------------------------------------------------ one model, end to end


class CheckFailed(APBError):
    """``apb check`` failed for a model: the evaluation stops; ``report`` says why."""

    def __init__(self, model_key: str, report: Any) -> None:
        self.report = report
        super().__init__(Problem(model_key, "the check failed; fix what the report says before evaluating"))


def default_out_dir(protocol: Protocol, root: Path, ap_key: str, shard: Shard | None) -> Path:
    """Where results go without ``--out``: the AP's records folder for a leaderboard protocol's full run,
    else ``out/`` in the current directory."""
    if protocol.leaderboard and shard is None:
        return records_dir(root, ap_key)
    return Path("out")


def existing_record(model_key: str, protocol: Protocol, checkpoint_sha256: str, folders: list[Path]) -> Path | None:
    """A record of this model under this protocol for this exact checkpoint, in any of ``folders`` (an
    unreadable record counts as absent: the run then writes a good one)."""
    for folder in folders:
        try:
            if recorded_sha256(Path(folder), model_key, protocol.id) == checkpoint_sha256:
                return Path(folder) / f"{record_stem(model_key, protocol.id)}.json"
        except (OSError, ValueError):
            continue
    return None


def job_work_dir(work_root: Path | None, cache_dir: Path | None, model_key: str, checkpoint_sha256: str,
                 protocol: Protocol) -> Path:
    """The work dir of one evaluation: ``<work_root>/<model_key>__<sha256[:16]>__<protocol>``, the work root
    defaulting to ``<cache_dir>/work``."""
    from evaluator import paths

    base = Path(work_root) if work_root is not None else (Path(cache_dir) if cache_dir else paths.cache_dir()) / paths.WORK_DIR
    return base / f"{model_key}__{checkpoint_sha256[:16]}__{protocol.id}"


@dataclass
class Outcome:
    """What ``evaluate_model`` did for one model: ``status`` is evaluated, skipped or shard."""

    model_key: str
    status: str
    path: Path
    record: dict | None = None


# Forward+backward passes per sample of each AutoAttack attack when the sample stays robust through it: APGD-CE
# 100 iterations, APGD-T 9 targets x 100, FAB-T 9 targets x 100 (about two passes each), Square 5,000 queries
# (forward only, about a third of a forward+backward each). A sample that falls to an attack skips the later ones.
ATTACK_PASSES = {"apgd-ce": 100, "apgd-dlr": 100, "apgd-t": 9 * 100, "fab": 2 * 100, "fab-t": 9 * 100 * 2,
                 "square": 5000 // 3}
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
CUSTOM_RESTARTS = {"apgd-ce": 5 * 100, "apgd-dlr": 5 * 100, "fab": 5 * 2 * 100}  # version custom: 5 restarts


def time_estimate(model: nn.Module, protocol: EvaluableProtocol, image_shape: tuple[int, ...], device: str,
                  n: int) -> tuple[float, float, float]:
    """(seconds per image of one forward+backward measured here, low, high) for the attacks on the *n* clean-
    correct samples (the only ones attacked): low when each falls to APGD-CE, high when each stays robust
    through all of AutoAttack. The timing is the fastest of three passes on a batch of the protocol's size."""
    batch = max(1, min(protocol.autoattack.batch_size, 16))
    images = torch.rand(batch, *image_shape, device=device, requires_grad=True)
    model.eval()

    def one_pass() -> None:
        model(images).sum().backward()

    one_pass()  # warm-up (allocations, autotuning)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        one_pass()
        timings.append(time.perf_counter() - start)
    per_sample = min(timings) / batch
    hofmn = protocol.hofmn
    tuning = hofmn.tuning.trials * hofmn.tuning.steps * hofmn.tuning.batch_size
    attacks = protocol.autoattack.attacks or STANDARD_ATTACKS
    passes = dict(ATTACK_PASSES)
    if protocol.autoattack.version == "custom":  # AutoAttack keeps its classes' default restarts there
        passes.update(CUSTOM_RESTARTS)
    low = per_sample * (n * (passes[attacks[0]] + hofmn.steps) + tuning)
    high = per_sample * (n * (sum(passes[name] for name in attacks) + hofmn.steps) + tuning)
    return per_sample, low, high


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else \
        f"{seconds:.0f} s"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def evaluate_model(model_key: str, *, protocol: Protocol | str = DEFAULT_PROTOCOL, root: Path | None = None,
                   data_dir: Path = Path("data"), device: str = "cpu", out_dir: Path | None = None,
                   cache_dir: Path | None = None, work_root: Path | None = None, shard: Shard | None = None,
                   download: bool = False, batch_size: int = 500, progress: bool = True) -> Outcome:
    """fetch -> check -> clean -> AutoAttack -> HO-FMN -> record (or shard output) for one model key.

    Skips the model when ``out_dir`` or the repository already holds its record for this checkpoint and
    protocol; raises ``CheckFailed`` (with the report) when the check fails."""
    from evaluator.paths import repo_root
    from evaluator.repository.submissions import find_entry

    protocol = (load_protocol(protocol) if not isinstance(protocol, Protocol) else protocol).require_evaluable()
    root = Path(root) if root is not None else repo_root()
    entry = find_entry(model_key, root)
    key = parse_model_key(model_key)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(protocol, root, key.ap_key, shard)
    refuse_smoke_in_submissions(protocol, out_dir, root)
    known_folders = [out_dir, records_dir(root, key.ap_key)]
    if entry.sha256 and (found := existing_record(model_key, protocol, entry.sha256, known_folders)):
        _say(f"{model_key}: skipped, {found} already holds its {protocol.id} record")
        return Outcome(model_key, "skipped", found)
    timer = provenance.StageTimer()
    with timer.stage("fetch"):
        from evaluator.checkpoint.load import read_entry

        checkpoint = read_entry(entry, cache_dir=cache_dir, progress=progress)  # read once, verified in memory
        checkpoint_sha256 = checkpoint.sha256
    if not entry.sha256 and (found := existing_record(model_key, protocol, checkpoint_sha256, known_folders)):
        _say(f"{model_key}: skipped, {found} already holds its {protocol.id} record")
        return Outcome(model_key, "skipped", found)
    with timer.stage("check"):
        from evaluator.run.check import check_loaded
        from evaluator.run.datasets import load_test_set
        from evaluator.checkpoint.load import load_state_dict

        # the test set and the state dict are read once, for the check and for the attacks
        test_set = load_test_set(key.dataset, Path(data_dir), n=protocol.n_samples, download=download)
        state = load_state_dict(checkpoint, entry)
        report = check_loaded(entry, checkpoint_sha256, state, test_set, device=device, batch_size=batch_size,
                              progress=progress)
    if not report.ok or report.model is None:
        raise CheckFailed(model_key, report)
    model = report.model  # built and checked once, in check_loaded
    attacked = report.clean_correct or 0  # AutoAttack and HO-FMN attack the clean-correct samples only
    per_sample, low, high = time_estimate(model, protocol, tuple(test_set.batch(slice(0, 1))[0].shape[1:]), device,
                                          attacked if shard is None else math.ceil(attacked / shard.count))
    _say(f"{model_key}: estimate {_duration(low)} to {_duration(high)} on {device} under {protocol.id} (one forward+"
         f"backward takes {per_sample * 1000:.1f} ms per image here; {report.clean_correct} clean-correct samples "
         "are attacked; the high end if every one stays robust through all of AutoAttack)")
    shared_tuning = None
    if shard is not None and shard.count > 1:  # the shards of one model tune once (on one machine, or a shared cache)
        from evaluator import paths

        shared_tuning = shared_tuning_file(Path(cache_dir) if cache_dir else paths.cache_dir(), checkpoint_sha256,
                                           protocol, device)
    return evaluate_loaded(model, test_set, protocol, model_key=model_key, checkpoint_sha256=checkpoint_sha256,
                           check=report.to_dict(layers=False), randomized_output=randomized_output_message(report),
                           work_dir=job_work_dir(work_root, cache_dir, model_key, checkpoint_sha256, protocol),
                           out_dir=out_dir, shard=shard, device=device, batch_size=batch_size, progress=progress,
                           wall_s=timer.seconds, shared_tuning=shared_tuning)


def evaluate_loaded(model: nn.Module, test_set: Any, protocol: EvaluableProtocol, *, model_key: str, checkpoint_sha256: str,
                    work_dir: Path, out_dir: Path, check: dict | None = None, randomized_output: str | None = None,
                    shard: Shard | None = None, device: str = "cpu", batch_size: int = 500, progress: bool = True,
                    wall_s: dict[str, float] | None = None, shared_tuning: Path | None = None) -> Outcome:
    """The stages after the check, on a loaded model: resumable in ``work_dir``; writes the record and sidecar
    into ``out_dir``, or, for a shard ``i/n`` with n > 1, a shard output folder there. ``shared_tuning``: see
    ``evaluate_chunks``."""
    shard = shard or Shard()
    ranges = chunk_ranges(protocol.n_samples, protocol.chunk_size)
    identity: dict[str, Any] = {"model_key": model_key, "checkpoint_sha256": checkpoint_sha256, "protocol": protocol.id,
                                "protocol_sha256": protocol.sha256, "n_chunks": len(ranges),
                                "test_set": test_set_facts(test_set)}
    store = ChunkStore(work_dir, identity=identity)
    results = evaluate_chunks(model, test_set, protocol, chunks=[c for c in range(len(ranges)) if shard.owns(c)],
                              store=store, device=device, batch_size=batch_size, progress=progress,
                              shared_tuning=shared_tuning)
    facts = RunFacts(
        **identity, shard=str(shard), ledger=results.ledger, tuning=_tuning_facts(results.tuning),
        check=check, randomized_output=randomized_output,
        environment=provenance.environment(device), date=provenance.utc_now(),
        wall_s={**(wall_s or {}), "hofmn_tuning": float(results.tuning.get("wall_s", 0.0))})
    if shard.count > 1:
        path = write_shard(facts, results.per_sample, results.chunks, shard_dir(out_dir, model_key, protocol.id, shard))
        _say(f"{model_key}: shard {shard} written to {path}; merge all {shard.count} with `apb merge`")
        return Outcome(model_key, "shard", path)
    record = build_record(facts, results.per_sample, protocol)
    path = write_result(record, results.per_sample, out_dir)
    _say(f"{model_key}: record written to {path}")
    return Outcome(model_key, "evaluated", path, read_record(path))


def _tuning_facts(tuning: dict) -> dict:
    """The part of the tuning a record keeps (not every trial)."""
    return {key: tuning.get(key) for key in ("indices", "params", "median_distance")}


def randomized_output_message(report: CheckReport) -> str | None:
    """The check's randomized-output finding as a flag message, or None when the outputs are deterministic."""
    sanity = report.sanity
    if sanity is None or not sanity.randomized:
        return None
    detail = sanity.message or "the model gave different outputs for the same input"
    return f"randomized output: {detail}; attack results on a randomized model overstate robustness"

"""One model, end to end: fetch -> check -> the stages of stages.py (clean, AutoAttack, HO-FMN: chunked,
resumable, shardable) -> record (assemble.py) or shard output (shards.py merges the shards).

The protocol's first ``n_samples`` test samples are split into fixed chunks (chunk ``i`` = samples
``[i * chunk_size, (i + 1) * chunk_size)``; chunks.py). Each stage's result for a chunk is written atomically
into the work dir as it finishes, and a finished chunk is never recomputed: a run killed at any point and
started again continues where it stopped and ends with the same per-sample results as an uninterrupted run,
because every random seed is derived from the protocol's seed and the chunk index (``chunk_seed``), never
from time. HO-FMN is tuned once per model, on the first ``tuning.batch_size`` clean-correct samples; the
result is kept in the work dir, and every shard derives the same tuning.

``--shard i/n`` runs the chunks with ``chunk % n == i - 1`` and writes a shard output (see shards.py).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from evaluator.record import provenance
from evaluator.record.assemble import RunFacts, build_record, refuse_smoke_in_submissions, write_result
from evaluator.errors import APBError, Problem
from evaluator.registry.model_keys import parse_model_key
from evaluator.protocol import DEFAULT_PROTOCOL, EvaluableProtocol, Protocol, load_protocol
from evaluator.paths import records_dir
from evaluator.record.records import read_record, record_stem, recorded_sha256
from evaluator.record.types import Record
from evaluator.run.chunks import ChunkStore, chunk_ranges
from evaluator.run.stages import evaluate_chunks, shared_tuning_file
from evaluator.run.shards import Shard, shard_dir, write_shard

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
    record: Record | None = None


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
                           check=report.to_dict(layers=False), randomized_output=report.randomized_output(),
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


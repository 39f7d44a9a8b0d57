"""The fixed chunks of a protocol's samples, their seeds, and the store of finished stage results per chunk
(a work dir on disk, or memory), which makes an evaluation resumable (see evaluate.py)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, cast

import numpy as np

from evaluator.errors import APBError, Problem
from evaluator.untrusted.safeio import atomic_write_bytes, dump_json

JOB_FILE = "job.json"
TUNING_FILE = "tuning.json"


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

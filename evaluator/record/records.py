"""Result records (one JSON per model key and protocol) and their per-sample sidecars (``.npz``)."""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from evaluator.errors import APBError, Problem
from evaluator.untrusted.npz_reader import MAX_NPY_HEADER, read_npz
from evaluator.paths import PACKAGE_DIR, RECORDS, submissions_dir
from evaluator.untrusted.safeio import atomic_write_bytes, dump_json, load_yaml

SCHEMA_VERSION = 1
# A sample is broken at eps when its verified Linf distance is <= eps + LINF_TOLERANCE. The tolerance (about
# 1/4000 of one 8-bit grey level) absorbs float32 rounding of x + delta, so an attack that projects exactly onto
# the eps-ball is not refused for rounding, while no perturbation meaningfully larger than eps counts. One rule
# for AutoAttack flags, HO-FMN distances, metrics and curves.
LINF_TOLERANCE = 1e-6
METRICS_FILE = PACKAGE_DIR / "metrics.yaml"
_METRIC_TABLE: dict[str, dict[str, str]] = dict(load_yaml(METRICS_FILE)[0]["metrics"])
METRICS = tuple(_METRIC_TABLE)  # in display order
COUNT_FIELDS = {metric: row["count"] for metric, row in _METRIC_TABLE.items()}


def metric_label(metric: str, kind: str) -> str:
    """How a view names *metric*: ``short`` (bot comment), ``title`` (model pages) or ``long`` (printed lines)."""
    return _METRIC_TABLE[metric][kind]


def record_stem(model_key: str, protocol: str) -> str:
    return f"{model_key}__{protocol}"


def write_record(record: dict, directory: Path) -> Path:
    """Write *record* as ``<model_key>__<protocol>.json`` under *directory*, atomically."""
    path = directory / f"{record_stem(record['model_key'], record['protocol'])}.json"
    atomic_write_bytes(path, dump_json(record))
    return path


def read_record(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def recorded_sha256(folder: Path, model_key: str, protocol: str, *,
                    load: Callable[[Path], object] = read_record) -> str | None:
    """The checkpoint sha256 of the record of *model_key* under *protocol* in *folder*, or None if there is none.

    *load* reads the file (default ``read_record``; callers that want ``safeio``'s checked reading pass it)."""
    path = Path(folder) / f"{record_stem(model_key, protocol)}.json"
    if not path.is_file():
        return None
    record = load(path)
    if not isinstance(record, dict) or record.get("protocol") != protocol:
        return None
    return record.get("checkpoint_sha256")


def iter_record_paths(root: Path) -> Iterator[Path]:
    """Every record JSON under ``submissions/*/records/`` (what ``Path.glob`` matches, hidden names included),
    sorted as paths sort, listed one AP folder at a time (24,000 records are never held as paths at once)."""
    base = submissions_dir(root)
    for ap_key in sorted(_listing(base)):
        folder = base / ap_key / RECORDS
        if folder.is_dir():
            yield from (folder / name for name in sorted(_listing(folder)) if name.endswith(".json"))


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


@functools.lru_cache(maxsize=8)
def protocol_samples(n: int) -> np.ndarray:
    """The sample indices of a protocol of *n* samples, 0 .. n-1 (read-only; shared by every caller)."""
    indices = np.arange(n, dtype=np.int32)
    indices.flags.writeable = False
    return indices


@dataclass
class PerSample:
    """Per-sample results of one model under one protocol, in test-file order."""

    sample_index: np.ndarray  # int32, position in the test file
    clean_correct: np.ndarray  # bool
    aa_robust: np.ndarray  # bool: clean-correct and AutoAttack found no adversarial within eps
    hofmn_distance: np.ndarray  # float32: 0 = misclassified clean, inf = no adversarial found

    def __post_init__(self) -> None:
        self.sample_index = np.asarray(self.sample_index, dtype=np.int32)
        self.clean_correct = np.asarray(self.clean_correct, dtype=bool)
        self.aa_robust = np.asarray(self.aa_robust, dtype=bool)
        self.hofmn_distance = np.asarray(self.hofmn_distance, dtype=np.float32)
        sizes = {a.shape for a in (self.sample_index, self.clean_correct, self.aa_robust, self.hofmn_distance)}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"per-sample arrays must be 1-D and of one length, got shapes {sorted(sizes)}")

    def __len__(self) -> int:
        return int(self.sample_index.shape[0])

    def hofmn_robust(self, eps: float) -> np.ndarray:
        """Robust at *eps*: the minimal distance HO-FMN found exceeds ``eps + LINF_TOLERANCE``."""
        return self.hofmn_distance > np.float32(eps + LINF_TOLERANCE)

    def worst_case_robust(self, eps: float) -> np.ndarray:
        return self.aa_robust & self.hofmn_robust(eps)

    def save(self, path: Path) -> str:
        """Write the sidecar atomically; returns its sha256."""
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, sample_index=self.sample_index, clean_correct=np.packbits(self.clean_correct),
                            aa_robust=np.packbits(self.aa_robust), hofmn_distance=self.hofmn_distance)
        data = buffer.getvalue()
        atomic_write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path) -> "PerSample":
        with np.load(path, allow_pickle=False) as data:
            return cls.from_stored(data)

    @classmethod
    def from_stored(cls, data: Mapping[str, np.ndarray]) -> "PerSample":
        """The per-sample results from the arrays :meth:`save` stores (the boolean arrays bit-packed)."""
        index = data["sample_index"]
        n = index.shape[0]
        return cls(index, np.unpackbits(data["clean_correct"])[:n], np.unpackbits(data["aa_robust"])[:n],
                   data["hofmn_distance"])

    @classmethod
    def concatenate(cls, parts: list["PerSample"]) -> "PerSample":
        """Join parts and order them by sample index (shards and chunks merge to one run's arrays)."""
        index = np.concatenate([p.sample_index for p in parts])
        order = np.argsort(index, kind="stable")
        if len(np.unique(index)) != len(index):
            raise ValueError("per-sample parts overlap: a sample index occurs twice")
        return cls(index[order], np.concatenate([p.clean_correct for p in parts])[order],
                   np.concatenate([p.aa_robust for p in parts])[order],
                   np.concatenate([p.hofmn_distance for p in parts])[order])


def load_sidecar(data: bytes, sha256: str | None, name: str, n_samples: int | None = None) -> PerSample:
    """The per-sample arrays of a sidecar's *data*, after checking that the bytes have the *sha256* its record
    (or shard file) names; they are read with ``allow_pickle=False``, so an npz cannot run code, and no member
    is inflated beyond what *n_samples* (the record's; at most ``MAX_SIDECAR_SAMPLES``) allows. The one
    sidecar check of every reader (``apb validate``, ``apb ci``, the renderer, ``apb merge``)."""
    if sha256 is None or sha256_hex(data) != sha256:
        raise APBError(Problem(name, "the sidecar was changed: its sha256 differs from the one the record names; "
                                     "restore the sidecar that belongs to the record", field="per_sample.sha256"))
    try:
        return PerSample.from_stored(read_npz(data, SIDECAR_ARRAYS, repeated=("sample_index",),
                                              max_member_bytes=sidecar_member_bound(n_samples)))
    except (ValueError, KeyError, OSError, EOFError) as error:
        raise APBError(Problem(name, f"not a per-sample sidecar ({error})", field="per_sample.file")) from None


_LAST_DIGEST: list = [None, ""]  # [the bytes object hashed last, its sha256]


def sha256_hex(data: bytes) -> str:
    """The sha256 of *data*; the last ``bytes`` object's is remembered (immutable, and held, so the same object
    has the same digest): ``apb validate`` hashes a sidecar for its cache key, then :func:`load_sidecar` checks it."""
    if type(data) is not bytes:
        return hashlib.sha256(data).hexdigest()
    if _LAST_DIGEST[0] is not data:
        _LAST_DIGEST[:] = [data, hashlib.sha256(data).hexdigest()]
    return _LAST_DIGEST[1]


SIDECAR_ARRAYS = ("sample_index", "clean_correct", "aa_robust", "hofmn_distance")
MAX_SIDECAR_SAMPLES = 100_000  # above every test set (SVHN: 26,032)
_SIDECAR_ITEM_BYTES = 8  # the widest item a sidecar array may hold (int64/float64; stored ones are narrower)


def sidecar_member_bound(n_samples: int | None) -> int:
    """The most bytes one ``.npy`` member of a sidecar of *n_samples* samples may declare: its items and the
    largest header ``np.load`` accepts."""
    count = MAX_SIDECAR_SAMPLES if n_samples is None else max(0, min(int(n_samples), MAX_SIDECAR_SAMPLES))
    return count * _SIDECAR_ITEM_BYTES + MAX_NPY_HEADER + 16


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, as fractions."""
    low, high = wilson_intervals(np.array([successes]), n, z)
    return (float(low[0]), float(high[0]))


def wilson_intervals(successes: np.ndarray, n: int, z: float = 1.959963984540054) -> tuple[np.ndarray, np.ndarray]:
    """:func:`wilson_interval` of each count in *successes* (float64 arithmetic, so the same bits as one at a
    time): the bands of a security curve, one interval per budget."""
    k = np.asarray(successes, dtype=np.float64)
    if n == 0:
        return np.zeros_like(k), np.ones_like(k)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = np.where(k == 0, 0.0, np.maximum(0.0, centre - half))  # exact bounds at the ends (no rounding residue)
    high = np.where(k == n, 1.0, np.minimum(1.0, centre + half))
    return low, high


def count_results(per_sample: PerSample, eps: float) -> dict[str, int]:
    """The record's ``counts``: samples clean-correct, robust to AutoAttack, to HO-FMN and to both at *eps*."""
    return {"clean_correct": int(np.count_nonzero(per_sample.clean_correct)),
            "aa_robust": int(np.count_nonzero(per_sample.aa_robust)),
            "hofmn_robust": int(np.count_nonzero(per_sample.hofmn_robust(eps))),
            "worst_case_robust": int(np.count_nonzero(per_sample.worst_case_robust(eps)))}


def summarize(per_sample: PerSample, eps: float) -> dict:
    """Metrics (percent), counts and 95% Wilson intervals (percent) of a per-sample result."""
    n = len(per_sample)
    counts = count_results(per_sample, eps)
    metrics, intervals = {}, {}
    for metric in METRICS:
        k = counts[COUNT_FIELDS[metric]]
        metrics[metric] = round(100.0 * k / n, 4) if n else None
        lo, hi = wilson_interval(k, n)
        intervals[metric] = [round(100.0 * lo, 4), round(100.0 * hi, 4)]
    return {"n_samples": n, "metrics": metrics, "counts": counts, "intervals": intervals}

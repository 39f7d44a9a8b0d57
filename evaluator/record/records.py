"""Result records (one JSON per model key and protocol) and their per-sample sidecars (``.npz``)."""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, cast

import numpy as np

from evaluator.errors import APBError, Problem
from evaluator.untrusted.npz_reader import MAX_NPY_HEADER, read_npz
from evaluator.paths import RECORDS, submissions_dir
from evaluator.record.types import Record
from evaluator.registry.metrics_file import ARRAYS as _ARRAYS, METRICS_FILE, TABLE as _TABLE
from evaluator.registry.norms import ThreatModel
from evaluator.untrusted.safeio import atomic_write_bytes, dump_json

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Metric:
    """One metric of ``metrics.yaml``: its ``counts`` field, how a sample counts (``rule`` flag, distance or
    worst_case, on ``array``), whether it makes up the worst case, its labels and its views."""

    name: str
    count: str
    rule: str
    array: str | None
    worst_case: bool
    labels: Mapping[str, str]
    views: Mapping[str, Any]


def _metric(name: str, row: dict) -> Metric:
    robust = row["robust"]
    rule, array = (robust, None) if isinstance(robust, str) else next(iter(robust.items()))
    if rule not in ("flag", "distance", "worst_case") or (array is not None and array not in _ARRAYS):
        raise APBError(Problem(str(METRICS_FILE), f"metric {name}: robust must be {{flag: ARRAY}}, {{distance: ARRAY}} "
                                                  f"or worst_case with ARRAY one of {', '.join(_ARRAYS)}",
                               field=f"metrics.{name}.robust"))
    return Metric(name, row["count"], rule, array, bool(row.get("worst_case", False)), row["labels"], row["views"])


SIDECAR_ARRAYS = tuple(_ARRAYS)  # the sidecar's members, in the order they are stored
ARRAY_DTYPES = {name: np.dtype(row["dtype"]) for name, row in _ARRAYS.items()}
ARRAY_STAGES = {name: row["stage"] for name, row in _ARRAYS.items()}  # which evaluation stage produces each array
METRIC_TABLE = {name: _metric(name, row) for name, row in _TABLE["metrics"].items()}
METRICS = tuple(METRIC_TABLE)  # in display order
COUNT_FIELDS = {metric: row.count for metric, row in METRIC_TABLE.items()}
WORST_CASE_PARTS = tuple(m for m in METRICS if METRIC_TABLE[m].worst_case)  # robust under all = worst case


def metric_label(metric: str, kind: str) -> str:
    """How a view names *metric*: ``short`` (bot comment, site), ``title`` (model pages), ``long`` (printed
    lines), ``ranking`` (a README ranking) or ``readme`` (a README table; the title where not given)."""
    labels = METRIC_TABLE[metric].labels
    return (labels.get(kind) or labels["title"]) if kind == "readme" else labels[kind]


def metrics_in(view: str) -> tuple[str, ...]:
    """The metrics a *view* (``readme``, ``site``, ``bot``) shows, in display order."""
    return tuple(m for m in METRICS if METRIC_TABLE[m].views.get(view))


def metric_stages(metric: str) -> tuple[str, ...]:
    """The evaluation stages that produce *metric* (the worst case: those of its parts)."""
    row = METRIC_TABLE[metric]
    if row.rule == "worst_case":
        return tuple(stage for part in WORST_CASE_PARTS for stage in metric_stages(part))
    return (ARRAY_STAGES[row.array],) if row.array else ()


def metric_optional(metric: str) -> bool:
    """May a record lack *metric* (and its count)? Yes where it counts an ``optional`` array (one declared after
    records were written without it); the schema requires the others (``repository.schema.with_metrics``)."""
    array = METRIC_TABLE[metric].array
    return array is not None and bool(_ARRAYS[array].get("optional"))


def record_stem(model_key: str, protocol: str) -> str:
    return f"{model_key}__{protocol}"


def write_record(record: Mapping[str, Any], directory: Path) -> Path:
    """Write *record* as ``<model_key>__<protocol>.json`` under *directory*, atomically."""
    path = directory / f"{record_stem(record['model_key'], record['protocol'])}.json"
    atomic_write_bytes(path, dump_json(dict(record)))
    return path


def read_record(path: Path) -> Record:
    """The record at *path*, as written (``apb validate`` checks it against the schema)."""
    with open(path, encoding="utf-8") as handle:
        return cast(Record, json.load(handle))


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


LINK_REFUSED = "symbolic links are not allowed in submissions/; commit the real directory or file"


def iter_record_paths(root: Path) -> Iterator[Path]:
    """Every record JSON under ``submissions/*/records/`` (what ``Path.glob`` matches, hidden names included),
    sorted as paths sort, listed one AP folder at a time (24,000 records are never held as paths at once). An AP
    folder or records folder that is a symbolic link is an ``APBError``, as ``apb validate`` refuses it."""
    base = submissions_dir(root)
    for ap_key in sorted(_listing(base)):
        folder = base / ap_key / RECORDS
        if folder.is_dir():
            for linked in (folder.parent, folder):
                if linked.is_symlink():
                    raise APBError(Problem(linked.relative_to(root).as_posix(), LINK_REFUSED))
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


class PerSample:
    """Per-sample results of one model under one protocol, in test-file order: the named arrays of
    ``metrics.yaml`` (``PerSample(index, clean_correct=..., aa_robust=..., hofmn_distance=...)``), each 1-D,
    of one length, in its declared dtype. ``per_sample[name]`` reads any of them."""

    def __init__(self, sample_index: Any, **arrays: Any) -> None:
        unknown = sorted(set(arrays) - set(SIDECAR_ARRAYS))
        if unknown:
            raise ValueError(f"unknown per-sample arrays {unknown}: {METRICS_FILE.name} declares {list(SIDECAR_ARRAYS)}")
        given = {"sample_index": sample_index, **arrays}
        self.arrays: dict[str, np.ndarray] = {  # in the declared order, the order a sidecar stores them
            name: np.asarray(given[name], dtype=ARRAY_DTYPES[name]) for name in SIDECAR_ARRAYS if name in given}
        sizes = {a.shape for a in self.arrays.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"per-sample arrays must be 1-D and of one length, got shapes {sorted(sizes)}")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __len__(self) -> int:
        return int(self.sample_index.shape[0])

    @property
    def sample_index(self) -> np.ndarray:
        return self.arrays["sample_index"]

    @property
    def clean_correct(self) -> np.ndarray:
        return self.arrays["clean_correct"]

    @property
    def aa_robust(self) -> np.ndarray:
        return self.arrays["aa_robust"]

    @property
    def hofmn_distance(self) -> np.ndarray:
        return self.arrays["hofmn_distance"]

    def measured(self, metric: str) -> bool:
        """Does this result hold the array *metric* counts? (A sidecar written before an ``optional`` array was
        declared lacks it: that metric is not measured, and its worst case is over the parts it holds.)"""
        row = METRIC_TABLE[metric]
        if row.rule == "worst_case":
            return any(self.measured(part) for part in WORST_CASE_PARTS)
        return row.array in self.arrays

    def robust(self, metric: str, threat: ThreatModel) -> np.ndarray:
        """Per sample: does it count toward *metric* under *threat* (``metrics.yaml``'s ``robust`` rule)? A
        distance counts when it exceeds the threat model's eps plus its norm's tolerance (one rule for metrics,
        flags and curves); the worst case is robust under every measured part."""
        row = METRIC_TABLE[metric]
        if row.rule == "worst_case":
            return np.logical_and.reduce([self.robust(part, threat) for part in WORST_CASE_PARTS if self.measured(part)])
        assert row.array is not None  # _metric gives flag and distance rules their array
        if row.rule == "distance":
            return self.arrays[row.array] > np.float32(threat.eps + threat.tolerance)
        return self.arrays[row.array]

    def hofmn_robust(self, threat: ThreatModel) -> np.ndarray:
        """Robust under *threat*: the minimal distance HO-FMN found exceeds eps plus the norm's tolerance."""
        return self.robust("hofmn_robust_accuracy", threat)

    def worst_case_robust(self, threat: ThreatModel) -> np.ndarray:
        return self.robust("worst_case_robust_accuracy", threat)

    def save(self, path: Path) -> str:
        """Write the sidecar atomically; returns its sha256."""
        import io

        buffer = io.BytesIO()
        stored = {name: np.packbits(values) if values.dtype == bool else values for name, values in self.arrays.items()}
        np.savez_compressed(buffer, **stored)  # type: ignore[arg-type]
        data = buffer.getvalue()
        atomic_write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path) -> "PerSample":
        with np.load(path, allow_pickle=False) as data:
            return cls.from_stored({name: data[name] for name in SIDECAR_ARRAYS if name in data.files})

    @classmethod
    def from_stored(cls, data: Mapping[str, np.ndarray]) -> "PerSample":
        """The per-sample results from the arrays :meth:`save` stores (the boolean arrays bit-packed); an array
        the sidecar lacks (one declared after it was written) is absent from the result."""
        index = data["sample_index"]
        n = index.shape[0]
        return cls(index, **{name: np.unpackbits(data[name])[:n] if ARRAY_DTYPES[name] == bool else data[name]
                             for name in SIDECAR_ARRAYS[1:] if name in data})

    @classmethod
    def concatenate(cls, parts: list["PerSample"]) -> "PerSample":
        """Join parts and order them by sample index (shards and chunks merge to one run's arrays)."""
        index = np.concatenate([p.sample_index for p in parts])
        order = np.argsort(index, kind="stable")
        if len(np.unique(index)) != len(index):
            raise ValueError("per-sample parts overlap: a sample index occurs twice")
        names = [name for name in SIDECAR_ARRAYS[1:] if all(name in p.arrays for p in parts)]
        return cls(index[order], **{name: np.concatenate([p.arrays[name] for p in parts])[order] for name in names})


def load_sidecar(data: bytes, sha256: str | None, name: str, n_samples: int | None = None) -> PerSample:
    """The per-sample arrays of a sidecar's *data*, after checking that the bytes have the *sha256* its record
    (or shard file) names; they are read with ``allow_pickle=False``, so an npz cannot run code, and no member
    is inflated beyond what *n_samples* (the record's; at most ``MAX_SIDECAR_SAMPLES``) allows. The one
    sidecar check of every reader (``apb validate``, ``apb ci``, the renderer, ``apb merge``)."""
    if sha256 is None or sha256_hex(data) != sha256:
        raise APBError(Problem(name, "the sidecar was changed: its sha256 differs from the one the record names; "
                                     "restore the sidecar that belongs to the record", field="per_sample.sha256"))
    try:
        # an optional array (declared after sidecars were written without it) is read where the sidecar has it
        optional = [name for name in SIDECAR_ARRAYS if _ARRAYS[name].get("optional")]
        return PerSample.from_stored(read_npz(data, SIDECAR_ARRAYS, repeated=("sample_index",), optional=optional,
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


def count_results(per_sample: PerSample, threat: ThreatModel) -> dict[str, int]:
    """The record's ``counts``: per measured metric, the samples that count toward it under *threat*
    (``PerSample.robust``)."""
    return {COUNT_FIELDS[metric]: int(np.count_nonzero(per_sample.robust(metric, threat))) for metric in METRICS
            if per_sample.measured(metric)}


def summarize(per_sample: PerSample, threat: ThreatModel) -> dict:
    """Metrics (percent), counts and 95% Wilson intervals (percent) of a per-sample result."""
    n = len(per_sample)
    counts = count_results(per_sample, threat)
    metrics, intervals = {}, {}
    for metric in (m for m in METRICS if COUNT_FIELDS[m] in counts):
        k = counts[COUNT_FIELDS[metric]]
        metrics[metric] = round(100.0 * k / n, 4) if n else None
        intervals[metric] = percent_interval(k, n)
    return {"n_samples": n, "metrics": metrics, "counts": counts, "intervals": intervals}


def count_of_percent(value: float, n: int) -> int:
    """The samples an accuracy of *value* percent of *n* counts (exact where *value* has the digits *n* needs:
    two decimals at 10,000 samples, as published numbers have)."""
    return round(value * n / 100)


def percent_interval(successes: int, n: int) -> list[float]:
    """The 95% Wilson interval of *successes* of *n* in percent, as records hold it (4 decimals)."""
    low, high = wilson_interval(successes, n)
    return [round(100.0 * low, 4), round(100.0 * high, 4)]

"""The original benchmark's HO-FMN distance files, read safely and stored as per-sample sidecars of the
``published-2024`` records, so that curves exist before a model is evaluated again.

The format (pralab/AdversarialPruningBenchmark, ``utils/test.py``): ``pickle.dump`` of a Python list of 0-d
float tensors, one per sample in test-set order (``distances.extend(norms)`` over batches of the first test
samples; the published files hold 128). Pickling a tensor with the standard pickle module writes
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())`` whose storage
is ``torch.storage._load_from_bytes(bytes)``, the bytes being a legacy ``torch.save`` of the whole batch's
storage (magic number, protocol 1001, system info, the storage's persistent id, its key, then its raw
little-endian data).

Nothing here calls ``pickle.load`` or ``torch.load``: :class:`DistanceUnpickler` resolves exactly those three
globals to functions of this module that only rebuild numbers, and refuses every other global, persistent id
or storage type, so a file crafted to run code is refused before anything runs. Sizes are capped.
"""
from __future__ import annotations

import hashlib
import io
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.errors import APBError, Problem

PROTOCOL = "published-2024"
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_SAMPLES = 100_000
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2"}


class RefusedPickle(ValueError):
    """The file holds something the distance format does not (a global, persistent id or shape it never has)."""


@dataclass(frozen=True)
class _StorageType:
    name: str


def _empty_hooks(*args: Any) -> dict:
    """``collections.OrderedDict()``: the (empty) backward hooks of a pickled tensor."""
    if args:
        raise RefusedPickle("OrderedDict with content: tensor backward hooks are not part of the distance format")
    return {}


def _rebuild_scalar(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, *metadata: Any) -> float:
    """``torch._utils._rebuild_tensor_v2`` for a 0-d tensor: the storage's element at *offset*."""
    if not isinstance(storage, np.ndarray) or tuple(size) != () or not isinstance(offset, int):
        raise RefusedPickle(f"a tensor of size {tuple(size) if isinstance(size, tuple) else size!r}: the distance "
                            "format holds 0-d tensors only")
    if not 0 <= offset < storage.size:
        raise RefusedPickle(f"tensor offset {offset} outside its storage of {storage.size} values")
    return float(storage[offset])


class _StorageUnpickler(pickle.Unpickler):
    """The pickles inside a legacy ``torch.save`` of one storage: plain values and the storage's id."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise RefusedPickle(f"refused global {module}.{name} inside a tensor storage")

    def persistent_load(self, pid: Any) -> Any:
        if (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            return pid
        raise RefusedPickle("refused persistent id: not a tensor storage")


def _load_storage(data: Any) -> np.ndarray:
    """``torch.storage._load_from_bytes``: the values of one storage from a legacy ``torch.save``."""
    if not isinstance(data, bytes) or len(data) > MAX_FILE_BYTES:
        raise RefusedPickle("a storage must be bytes within the size limit")
    stream = io.BytesIO(data)

    def load() -> Any:
        return _StorageUnpickler(stream).load()

    if load() != LEGACY_MAGIC or load() != LEGACY_PROTOCOL:
        raise RefusedPickle("a storage that is not a legacy torch.save (magic number, protocol 1001)")
    info = load()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise RefusedPickle("a storage saved on a big-endian machine or without system info")
    pid = load()
    keys = load()
    if not (isinstance(pid, tuple) and isinstance(keys, list) and keys == [pid[2]]):
        raise RefusedPickle("a storage file must hold exactly one storage")
    dtype = np.dtype(STORAGE_DTYPES[pid[1].name])
    header = stream.read(8)
    if len(header) != 8:
        raise RefusedPickle("a storage's data is cut short")
    (count,) = struct.unpack("<q", header)
    if count != pid[4] or not 0 < count <= MAX_SAMPLES * 1024:
        raise RefusedPickle(f"a storage of {count} values where its id says {pid[4]}")
    body = stream.read(count * dtype.itemsize)
    if len(body) != count * dtype.itemsize or stream.read(1):
        raise RefusedPickle("a storage's data does not have the size its header says")
    return np.frombuffer(body, dtype=dtype)


class DistanceUnpickler(pickle.Unpickler):
    """Unpickles the original benchmark's distance lists and nothing else (see the module docstring)."""

    ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_scalar,
               ("torch.storage", "_load_from_bytes"): _load_storage,
               ("collections", "OrderedDict"): _empty_hooks}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"refused global {module}.{name}: a distance file holds 0-d float tensors only") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("refused persistent id at the top level")


def read_distances(data: bytes, name: str = "distances") -> np.ndarray:
    """The distances of one file's bytes (float32, test-set order); ``APBError`` naming *name* otherwise."""
    if len(data) > MAX_FILE_BYTES:
        raise APBError(Problem(name, f"{len(data):,} bytes: larger than the {MAX_FILE_BYTES:,}-byte limit"))
    if data[:2] == b"PK":
        raise APBError(Problem(name, "a zip file (torch.save); the original benchmark's distance files are "
                                     "pickle.dump files of a list of 0-d tensors"))
    try:
        values = DistanceUnpickler(io.BytesIO(data)).load()
    except RefusedPickle as error:
        raise APBError(Problem(name, f"not a distance file of the original benchmark: {error}; nothing was "
                                     "imported")) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            struct.error, UnicodeDecodeError) as error:
        raise APBError(Problem(name, f"cannot read this pickle ({type(error).__name__}: {error}); nothing was "
                                     "imported")) from None
    if not isinstance(values, list) or not values or not all(isinstance(v, float) for v in values):
        raise APBError(Problem(name, "the pickle does not hold a non-empty list of 0-d tensors"))
    if len(values) > MAX_SAMPLES:
        raise APBError(Problem(name, f"{len(values)} distances: more than {MAX_SAMPLES}"))
    if any(math.isnan(v) or v < 0 for v in values):
        raise APBError(Problem(name, "NaN or negative distances; a distance is >= 0 (inf: no adversarial found)"))
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class Import:
    """One distance file to import: its model key, distances and where they start in the test set."""

    source: Path
    model_key: str
    distances: np.ndarray
    first_sample: int
    sha256: str


def prepare(path: Path, model_key: str | None, first_sample: int) -> Import:
    """Read and check one file (its model key: *model_key*, else the file's stem as the original named it)."""
    from evaluator.registry.model_keys import parse_model_key

    key = model_key or path.stem
    try:
        parse_model_key(key)
    except ValueError as error:
        raise APBError(Problem(str(path), f"{error}; name the file <model_key>.pickle or pass --model-key",
                               field="model_key")) from None
    if path.stat().st_size > MAX_FILE_BYTES:
        raise APBError(Problem(str(path), f"larger than the {MAX_FILE_BYTES:,}-byte limit"))
    data = path.read_bytes()
    return Import(path, key, read_distances(data, str(path)), first_sample, hashlib.sha256(data).hexdigest())


def import_distances(root: Path, items: list[Import]) -> list[Path]:
    """Write each import's sidecar and point its published record at it; every record is checked first, so a
    bad item changes nothing. Returns the records written."""
    from evaluator.registry.model_keys import parse_model_key
    from evaluator.paths import records_dir
    from evaluator.record.records import read_record, record_stem, write_record
    from evaluator.untrusted.safeio import atomic_write_bytes

    planned = []
    for item in items:
        folder = records_dir(root, parse_model_key(item.model_key).ap_key)
        path = folder / f"{record_stem(item.model_key, PROTOCOL)}.json"
        if not path.is_file():
            raise APBError(Problem(str(item.source), f"no published record {path.relative_to(root)} to attach these "
                                                     "distances to; only the published cells can get published "
                                                     "distances", field="model_key"))
        record = read_record(path)
        if record.get("source") != "published" or record.get("model_key") != item.model_key:
            raise APBError(Problem(str(path.relative_to(root)), "is not the published record of "
                                                                f"{item.model_key}; run `apb validate`"))
        planned.append((item, folder, record))
    written = []
    for item, folder, record in planned:
        stem = record_stem(item.model_key, PROTOCOL)
        sidecar = io.BytesIO()
        n = int(item.distances.size)
        np.savez_compressed(sidecar, sample_index=np.arange(item.first_sample, item.first_sample + n, dtype=np.int32),
                            hofmn_distance=item.distances)
        data = sidecar.getvalue()
        atomic_write_bytes(folder / f"{stem}.npz", data)
        provenance = {**(record.get("provenance") or {}),
                      "distances": {"source": item.source.name, "sha256": item.sha256,
                                    "format": "original benchmark HO-FMN distances (pickle of 0-d tensors)"}}
        written.append(write_record({**record, "provenance": provenance, "per_sample": {
            "file": f"{stem}.npz", "sha256": hashlib.sha256(data).hexdigest(), "kind": "distances",
            "sample_range": [item.first_sample, item.first_sample + n]}}, folder))
    return written

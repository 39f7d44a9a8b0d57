"""Plain ``.npz`` archives (as ``np.savez``/``np.savez_compressed`` write them) read without ``np.load``'s
per-array overhead: a leaderboard reads 24,000 sidecars. The archive's directory comes from :mod:`zipfile`;
each member's deflate stream is inflated once, bounded by its declared size and checked against its CRC, and
its ``.npy`` header is parsed by numpy's own reader with ``np.load``'s header cap. Anything but the plain case
(encryption, other compression, object arrays, trailing bytes, a member whose local header disagrees with the
directory) gives None: the caller then uses ``np.load(allow_pickle=False)``, which reads it or says why not.

A member whose compressed bytes repeat from archive to archive (every sidecar of a protocol holds the same
``sample_index``) is inflated once per process: equal deflate streams inflate to equal bytes."""
from __future__ import annotations

import functools
import io
import lzma
import math
import zipfile
import zlib
from typing import Collection

import numpy as np

from evaluator.untrusted.zip_checks import ZIP_MAGIC, declared_size_problem, directory, member_stream

_NPY_MAGIC, MAX_NPY_HEADER = b"\x93NUMPY", 10_000  # np.load's default header cap


def read_npz(data: bytes, names: Collection[str], *, max_member_bytes: int, repeated: Collection[str] = (),
             optional: Collection[str] = ()) -> dict[str, np.ndarray]:
    """The arrays *names* of the archive *data* (those in *optional* only where the directory lists their
    ``.npy``): by :func:`read_plain_npz` where the archive is plain, else by ``np.load(allow_pickle=False)``,
    whose errors (``ValueError``, ``KeyError``, ``OSError``, ``EOFError``; any other it raises on a hostile
    archive as a ``ValueError``, see ``_UNREADABLE``) say why it cannot be read. A member declaring more than *max_member_bytes* is a ``ValueError`` before anything is inflated
    (both readers inflate no more than a member declares). The directory is read once, for all of this."""
    members = directory(data)
    too_big = declared_size_problem(members or [], max_member_bytes)
    if too_big:
        raise ValueError(too_big)
    if optional:
        listed = {info.filename for info in members or []}
        names = tuple(name for name in names if name not in optional or f"{name}.npy" in listed)
    arrays = read_plain_npz(data, names, repeated=repeated, members=members)
    if arrays is not None:
        return arrays
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive of named arrays")
        with loaded as archive:
            return {name: archive[name] for name in names}
    except _UNREADABLE as error:
        raise ValueError(str(error) or type(error).__name__) from None


_UNREADABLE = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError, MemoryError)
"""What ``np.load`` raises on a hostile archive besides the errors read_npz names: a broken zip (truncated, a
bad CRC, a local header that disagrees), a broken deflate or lzma stream, an unknown compression method, an
encrypted member, an ``.npy`` header declaring more items than memory holds. Each is a ``ValueError`` here."""


def read_plain_npz(data: bytes, names: Collection[str], *, repeated: Collection[str] = (),
                   members: list[zipfile.ZipInfo] | None = None) -> dict[str, np.ndarray] | None:
    """The arrays *names* of the archive *data*, exactly as ``np.load(allow_pickle=False)`` reads them, or None
    where the archive is not plain. Members in *repeated* are expected to recur byte for byte across archives.
    *members*: the archive's directory, when the caller has read it."""
    if data[:4] != ZIP_MAGIC:
        return None
    listed = members if members is not None else directory(data)
    if listed is None:
        return None
    by_name = {info.filename: info for info in listed}
    arrays = {}
    for name in names:
        info = by_name.get(f"{name}.npy")
        if name in by_name or info is None:
            return None
        stream = member_stream(data, info)
        if stream is None:
            return None
        inflate = _inflate_repeated if name in repeated else _inflate
        raw = inflate(stream, info.compress_type, info.file_size, info.CRC)
        array = None if raw is None else _plain_npy_array(raw)
        if array is None:
            return None
        arrays[name] = array
    return arrays


def _inflate(stream: bytes, method: int, size: int, crc: int) -> bytes | None:
    """The member's bytes: exactly *size* of them (never more are produced), with the directory's CRC-32."""
    if method == zipfile.ZIP_STORED:
        raw = stream
    else:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(stream, size + 1)
        except zlib.error:
            return None
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            return None
    if len(raw) != size or zlib.crc32(raw) != crc:
        return None
    return raw


_inflate_repeated = functools.lru_cache(maxsize=4)(_inflate)


@functools.lru_cache(maxsize=64)
def _npy_header(prefix: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, Fortran order) of an ``.npy`` header (sidecars share a handful of headers)."""
    stream = io.BytesIO(prefix)
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream, max_header_size=MAX_NPY_HEADER)
    return dtype, shape, fortran


def _plain_npy_array(raw: bytes) -> np.ndarray | None:
    """The array of a plain ``.npy`` (format 1.0 or 2.0, no objects, exactly its data after the header), or None
    for anything else."""
    if raw[:6] != _NPY_MAGIC or raw[6:8] not in (b"\x01\x00", b"\x02\x00"):
        return None
    size_bytes = 2 if raw[6] == 1 else 4
    start = 8 + size_bytes + int.from_bytes(raw[8:8 + size_bytes], "little")
    if start - 8 - size_bytes > MAX_NPY_HEADER:
        return None
    try:
        dtype, shape, fortran = _npy_header(raw[:start])
    except ValueError:
        return None
    count = math.prod(shape)
    if dtype.hasobject or len(raw) - start != count * dtype.itemsize:
        return None
    return np.frombuffer(raw, dtype, count, start).reshape(shape, order="F" if fortran else "C").copy()

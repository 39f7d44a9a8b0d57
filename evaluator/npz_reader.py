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
import math
import struct
import zipfile
import zlib
from typing import Collection

import numpy as np

_ZIP_MAGIC, _NPY_MAGIC, _MAX_NPY_HEADER = b"PK\x03\x04", b"\x93NUMPY", 10_000  # np.load's default header cap
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, name, extra


def read_npz(data: bytes, names: Collection[str], *, repeated: Collection[str] = ()) -> dict[str, np.ndarray]:
    """The arrays *names* of the archive *data*: by :func:`read_plain_npz` where the archive is plain, else by
    ``np.load(allow_pickle=False)``, whose errors (``ValueError``, ``KeyError``, ``OSError``, ``EOFError``, zip
    errors) say why it cannot be read."""
    arrays = read_plain_npz(data, names, repeated=repeated)
    if arrays is not None:
        return arrays
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in names}


def read_plain_npz(data: bytes, names: Collection[str], *,
                   repeated: Collection[str] = ()) -> dict[str, np.ndarray] | None:
    """The arrays *names* of the archive *data*, exactly as ``np.load(allow_pickle=False)`` reads them, or None
    where the archive is not plain. Members in *repeated* are expected to recur byte for byte across archives."""
    if data[:4] != _ZIP_MAGIC:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError):
        return None
    arrays = {}
    for name in names:
        info = members.get(f"{name}.npy")
        if name in members or info is None:
            return None
        stream = _member_stream(data, info)
        if stream is None:
            return None
        inflate = _inflate_repeated if name in repeated else _inflate
        raw = inflate(stream, info.compress_type, info.file_size, info.CRC)
        array = None if raw is None else _plain_npy_array(raw)
        if array is None:
            return None
        arrays[name] = array
    return arrays


def _member_stream(data: bytes, info: zipfile.ZipInfo) -> bytes | None:
    """The stored (compressed) bytes of one member, after checking its local header against the directory."""
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return None  # encrypted, or a compression np.savez never writes
    start = info.header_offset
    if start < 0 or start + _LOCAL_HEADER.size > len(data):
        return None
    fields = _LOCAL_HEADER.unpack_from(data, start)
    signature, method, name_size, extra_size = fields[0], fields[3], fields[9], fields[10]
    name_at = start + _LOCAL_HEADER.size
    if (signature != _ZIP_MAGIC or method != info.compress_type
            or data[name_at:name_at + name_size] != info.orig_filename.encode("utf-8")):
        return None
    begin = name_at + name_size + extra_size
    end = begin + info.compress_size
    return data[begin:end] if end <= len(data) else None


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
    shape, fortran, dtype = read(stream, max_header_size=_MAX_NPY_HEADER)
    return dtype, shape, fortran


def _plain_npy_array(raw: bytes) -> np.ndarray | None:
    """The array of a plain ``.npy`` (format 1.0 or 2.0, no objects, exactly its data after the header), or None
    for anything else."""
    if raw[:6] != _NPY_MAGIC or raw[6:8] not in (b"\x01\x00", b"\x02\x00"):
        return None
    size_bytes = 2 if raw[6] == 1 else 4
    start = 8 + size_bytes + int.from_bytes(raw[8:8 + size_bytes], "little")
    if start - 8 - size_bytes > _MAX_NPY_HEADER:
        return None
    try:
        dtype, shape, fortran = _npy_header(raw[:start])
    except ValueError:
        return None
    count = math.prod(shape)
    if dtype.hasobject or len(raw) - start != count * dtype.itemsize:
        return None
    return np.frombuffer(raw, dtype, count, start).reshape(shape, order="F" if fortran else "C").copy()

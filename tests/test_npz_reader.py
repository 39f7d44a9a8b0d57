"""The plain-npz reader returns what np.load(allow_pickle=False) returns, and None (np.load's turn) for every
archive that is not plain: the sidecar reader's fast path never accepts what np.load would refuse."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest

from evaluator.untrusted.npz_reader import read_npz, read_plain_npz
from evaluator.record.records import PerSample, load_sidecar
from tests.support.ci_records import per_sample

ARRAYS = {"a": np.arange(1000, dtype=np.int32), "b": np.linspace(0, 1, 77, dtype=np.float32),
          "c": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)), "d": np.zeros(0, dtype=np.uint8),
          "e": np.array([np.inf, 0.0, 2.5], dtype=np.float64), "f": np.packbits(np.arange(20) % 3 == 0)}


def _archive(compressed: bool, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("compressed", [True, False])
def test_reads_what_np_load_reads(compressed: bool) -> None:
    data = _archive(compressed, **ARRAYS)
    read = read_plain_npz(data, tuple(ARRAYS), repeated=("a",))
    assert read is not None
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        for name in ARRAYS:
            assert read[name].dtype == loaded[name].dtype and read[name].shape == loaded[name].shape
            assert np.array_equal(read[name], loaded[name]) and read[name].flags.writeable
    again = read_plain_npz(data, ("a",), repeated=("a",))
    read["a"][0] = 99  # an array from the repeated-member cache is the caller's own
    assert again is not None and again["a"][0] == 0


def _replace_member(data: bytes, name: str, raw: bytes, *, declared_size: int | None = None) -> bytes:
    """The archive with member *name* deflated from *raw*, its directory claiming *declared_size* bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, raw if info.filename == name else source.read(info.filename))
    result = out.getvalue()
    if declared_size is not None:  # patch the uncompressed size (offset 24) of its central directory entry
        entry = result.find(b"PK\x01\x02")
        while result[entry + 46:entry + 46 + struct.unpack_from("<H", result, entry + 28)[0]] != name.encode():
            entry = result.find(b"PK\x01\x02", entry + 4)
        result = result[:entry + 24] + struct.pack("<L", declared_size) + result[entry + 28:]
    return result


def test_refuses_what_is_not_plain() -> None:
    data = _archive(True, a=np.arange(10), b=np.ones(3))
    with pytest.raises(ValueError):  # np.load refuses object arrays; the reader leaves them to it
        np.load(io.BytesIO(_archive(False, a=np.array([{"x": 1}], dtype=object))), allow_pickle=False)["a"]
    cases = {
        "object array": _archive(False, a=np.array([{"x": 1}], dtype=object)),
        "not a zip": b"\x93NUMPY" + data[6:],
        "missing member": _archive(True, a=np.arange(10)),
        "truncated": data[: len(data) // 2],
        "trailing bytes in a member": _replace_member(data, "b.npy", _npy(np.ones(3)) + b"xx"),
        "member inflates past its declared size": _replace_member(data, "a.npy", _npy(np.arange(10_000)),
                                                                  declared_size=200),
    }
    for why, archive in cases.items():
        assert read_plain_npz(archive, ("a", "b")) is None, why


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_a_changed_byte_is_caught_by_the_crc() -> None:
    data = bytearray(_archive(False, a=np.arange(50, dtype=np.int64), b=np.ones(3)))
    data[data.index(_npy(np.arange(50, dtype=np.int64))[-16:]) + 3] ^= 0xFF  # inside a's stored data
    assert read_plain_npz(bytes(data), ("a", "b")) is None


def test_encrypted_and_other_methods_are_left_to_np_load() -> None:
    data = bytearray(_archive(True, a=np.arange(10), b=np.ones(3)))
    entry = data.find(b"PK\x01\x02")
    data[entry + 8] |= 0x1  # the encryption flag in the central directory
    assert read_plain_npz(bytes(data), ("a", "b")) is None
    bz = io.BytesIO()
    with zipfile.ZipFile(bz, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("a.npy", _npy(np.arange(10)))
        archive.writestr("b.npy", _npy(np.ones(3)))
    assert read_plain_npz(bz.getvalue(), ("a", "b")) is None
    assert np.array_equal(read_npz(bz.getvalue(), ("a", "b"), max_member_bytes=1000)["a"], np.arange(10))  # np.load's turn: it reads it
    with pytest.raises(ValueError):  # and refuses what it must
        read_npz(_archive(False, a=np.array([{"x": 1}], dtype=object), b=np.ones(3)), ("a", "b"), max_member_bytes=1000)


def _hostile_archives() -> dict[str, bytes]:
    good = _archive(True, a=np.arange(1000, dtype=np.int32), b=np.ones(1000, dtype=np.float32))
    found = {"truncated": good[:-30], "a local header naming another member": good.replace(b"b.npy", b"c.npy", 1),
             "a single .npy": _npy(np.arange(5))}
    entry = good.find(b"PK\x01\x02")
    for name, (offset, change) in {"encrypted": (entry + 8, 0x1), "a bad CRC": (entry + 16, 0xFF),
                                   "a broken deflate stream": (60, 0xFF)}.items():
        data = bytearray(good)
        data[offset] ^= change
        found[name] = bytes(data)
    data = bytearray(good)
    data[8:10] = data[entry + 10:entry + 12] = struct.pack("<H", 99)
    found["compression method 99"] = bytes(data)
    lzma = io.BytesIO()
    with zipfile.ZipFile(lzma, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr("a.npy", _npy(np.arange(5)))
        archive.writestr("b.npy", _npy(np.arange(5)))
    data = bytearray(lzma.getvalue())
    data[50] ^= 0xFF
    found["a broken lzma stream"] = bytes(data)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**11,)})
    found["a header declaring 800 GB"] = _replace_member(good, "a.npy", header.getvalue() + bytes(80))
    return found


@pytest.mark.parametrize("name,data", _hostile_archives().items(), ids=list(_hostile_archives()))
def test_a_hostile_archive_np_load_cannot_read_is_a_value_error(name: str, data: bytes) -> None:
    """Whatever np.load raises on it (a zip, inflate, lzma or allocation error, or an array where an archive
    belongs), read_npz says ValueError, which every sidecar reader reports as a problem (not a crash)."""
    with pytest.raises(ValueError):
        read_npz(data, ("a", "b"), max_member_bytes=100_000)


def test_a_bomb_is_never_inflated_past_its_declared_size() -> None:
    huge = _npy(np.zeros(20_000_000, dtype=np.uint8))  # 20 MB of zeros deflate to ~20 KB
    archive = _replace_member(_archive(True, a=np.arange(3), b=np.ones(3)), "a.npy", huge, declared_size=1000)
    assert len(archive) < 100_000
    assert read_plain_npz(archive, ("a", "b")) is None
    assert len(zlib.compress(huge)) < 100_000  # (the member really is a bomb)


def test_sidecars_use_the_fast_path_and_agree_with_np_load(tmp_path) -> None:
    samples = per_sample(300, seed=5)
    digest = samples.save(tmp_path / "s.npz")
    data = (tmp_path / "s.npz").read_bytes()
    fast = load_sidecar(data, digest, "s.npz")
    slow = PerSample.load(tmp_path / "s.npz")
    for name in ("sample_index", "clean_correct", "aa_robust", "hofmn_distance"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name))
    assert read_plain_npz(data, ("sample_index", "clean_correct", "aa_robust", "hofmn_distance")) is not None

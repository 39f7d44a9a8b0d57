"""No decompression bombs: a torch zip checkpoint must be stored members whose sizes fit the archive, checked
from its central directory before torch opens it; a sidecar member is bounded by the record's sample count
before it is inflated; a safetensors header's length and offsets lie within the file."""
from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile

import numpy as np
import pytest
import torch

from evaluator.errors import APBError
from evaluator.checkpoint.load import load_state_dict
from evaluator.record.records import load_sidecar
from tests.support.entries import make_entry

ENTRY = make_entry()
STATE = {"conv1.weight": torch.arange(64.0).reshape(4, 16), "fc.bias": torch.ones(10)}


def torch_zip() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": STATE}, buffer)
    return buffer.getvalue()


def central_entry(data: bytes, name: str) -> int:
    """The offset of *name*'s central directory record."""
    at = data.index(b"PK\x01\x02")
    while True:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_length].decode() == name:
            return at
        at = data.index(b"PK\x01\x02", at + 4)


def test_a_plain_torch_save_loads():
    assert torch.equal(load_state_dict(torch_zip(), make_entry(state_dict_key="state_dict"))["fc.bias"],
                       STATE["fc.bias"])


def test_a_torch_zip_with_compressed_members_is_refused_before_inflating():
    source = zipfile.ZipFile(io.BytesIO(torch_zip()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info.filename))
    with pytest.raises(APBError, match="is compressed .*refused before anything is inflated"):
        load_state_dict(out.getvalue(), make_entry(state_dict_key="state_dict"))


def test_declared_sizes_past_the_archive_are_refused():
    data = bytearray(torch_zip())
    name = next(info.filename for info in zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()
                if info.filename.endswith("/data/0"))
    at = central_entry(bytes(data), name)
    struct.pack_into("<LL", data, at + 20, 3 << 30, 3 << 30)  # compressed and uncompressed size: 3 GiB
    with pytest.raises(APBError, match="refused before loading"):
        load_state_dict(bytes(data), make_entry(state_dict_key="state_dict"))


def test_a_local_header_that_disagrees_with_the_directory_is_refused():
    data = bytearray(torch_zip())
    info = next(i for i in zipfile.ZipFile(io.BytesIO(bytes(data))).infolist() if i.filename.endswith("/data/0"))
    struct.pack_into("<H", data, info.header_offset + 8, zipfile.ZIP_DEFLATED)  # the local header says deflate
    with pytest.raises(APBError, match="local header disagrees with the central directory"):
        load_state_dict(bytes(data), make_entry(state_dict_key="state_dict"))


def sidecar(n: int, distances: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, sample_index=np.arange(n, dtype=np.int32),
                        clean_correct=np.packbits(np.ones(n, bool)), aa_robust=np.packbits(np.zeros(n, bool)),
                        hofmn_distance=np.zeros(n, np.float32) if distances is None else distances)
    return buffer.getvalue()


def test_a_sidecar_member_larger_than_its_sample_count_allows_is_refused_before_inflating():
    data = sidecar(10)
    assert len(load_sidecar(data, hashlib.sha256(data).hexdigest(), "s.npz", n_samples=10)) == 10
    bomb = sidecar(10, distances=np.zeros(2_000_000, np.float32))  # 8 MB of zeros deflate to a few KB
    assert len(bomb) < 100_000
    with pytest.raises(APBError, match="declares 8,000,128 bytes, more than the 10,096 its sample count allows"):
        load_sidecar(bomb, hashlib.sha256(bomb).hexdigest(), "s.npz", n_samples=10)


def test_a_sidecar_member_declaring_gigabytes_is_refused_whatever_the_record_says():
    from evaluator.record.records import sidecar_member_bound

    data = bytearray(sidecar(10))
    at = central_entry(bytes(data), "hofmn_distance.npy")
    struct.pack_into("<L", data, at + 24, 4_000_000_000)  # the uncompressed size the directory declares
    data = bytes(data)
    assert sidecar_member_bound(10**12) < 1_000_000
    with pytest.raises(APBError, match="declares 4,000,000,000 bytes"):
        load_sidecar(data, hashlib.sha256(data).hexdigest(), "s.npz", n_samples=10**12)


def safetensors_file(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


@pytest.mark.parametrize("data, words", [
    (safetensors_file({"w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}, bytes(16)),
     "data offsets outside the file's 16 bytes"),
    ((1 << 40).to_bytes(8, "little") + b'{"w": {}}', "header declares 1,099,511,627,776 bytes"),
])
def test_safetensors_header_and_offsets_must_lie_within_the_file(data, words):
    with pytest.raises(APBError, match=words):
        load_state_dict(data, make_entry(format="safetensors"))

"""Zip archives read from untrusted bytes (torch checkpoints, ``.npz`` sidecars), checked from their central
directory before anything is inflated.

A zip can declare that a few kilobytes of deflate stream inflate to gigabytes (a decompression bomb), or carry
a central directory that disagrees with the local headers the reader then follows. ``torch.save`` writes every
member *stored* (uncompressed, sizes equal), so :func:`stored_archive_problem` refuses any other torch zip; a
sidecar's members are bounded by their declared sizes, which :func:`declared_size_problem` checks against what
the record's sample count allows before a byte is inflated.
"""
from __future__ import annotations

import io
import struct
import zipfile

ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, name, extra


def directory(data: bytes) -> list[zipfile.ZipInfo] | None:
    """The members of the zip archive *data* as its central directory lists them, or None if it has none."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError):
        return None


def member_stream(data: bytes, info: zipfile.ZipInfo) -> bytes | None:
    """The stored (possibly compressed) bytes of one member, or None where its local header disagrees with the
    directory (signature, method, name) or its bytes lie outside *data*."""
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return None  # encrypted, or a compression neither torch.save nor np.savez writes
    start = info.header_offset
    if start < 0 or start + _LOCAL_HEADER.size > len(data):
        return None
    fields = _LOCAL_HEADER.unpack_from(data, start)
    signature, method, name_size, extra_size = fields[0], fields[3], fields[9], fields[10]
    name_at = start + _LOCAL_HEADER.size
    if (signature != ZIP_MAGIC or method != info.compress_type
            or data[name_at:name_at + name_size] != info.orig_filename.encode("utf-8")):
        return None
    begin = name_at + name_size + extra_size
    end = begin + info.compress_size
    return data[begin:end] if end <= len(data) else None


def stored_archive_problem(data: bytes) -> str | None:
    """Why the zip *data* is not an archive of stored members as ``torch.save`` writes it (sizes adding up to at
    most the archive itself, local headers agreeing with the directory), or None."""
    members = directory(data)
    if members is None:
        return "not a readable torch checkpoint: its zip central directory cannot be read"
    total = 0
    for info in members:
        name = info.filename
        if info.flag_bits & 0x1:
            return f"the member {name!r} is encrypted"
        if info.compress_type != zipfile.ZIP_STORED:
            return (f"the member {name!r} is compressed (zip method {info.compress_type}); torch.save stores its "
                    "members uncompressed, so a compressed checkpoint is refused before anything is inflated")
        if info.file_size != info.compress_size:
            return f"the member {name!r} declares {info.file_size} bytes but stores {info.compress_size}"
        total += info.file_size
        if total > len(data):
            return (f"the members' declared sizes add up to more than the archive's {len(data)} bytes; the "
                    "central directory is not that of a torch.save file")
        if member_stream(data, info) is None:
            return f"the member {name!r}: its local header disagrees with the central directory"
    return None


def declared_size_problem(members: list[zipfile.ZipInfo], max_member_bytes: int) -> str | None:
    """Why a member of a zip archive's directory *members* may not be inflated (it declares more than
    *max_member_bytes*: zipfile and the plain reader inflate no more than a member declares), or None."""
    for info in members:
        if info.file_size > max_member_bytes:
            return (f"the member {info.filename!r} declares {info.file_size:,} bytes, more than the "
                    f"{max_member_bytes:,} its sample count allows")
    return None

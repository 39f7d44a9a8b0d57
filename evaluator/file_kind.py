"""What kind of checkpoint file a byte string is, from its first bytes only (nothing is parsed).

``safetensors``: an 8-byte little-endian header length followed by a JSON header starting with ``{``;
``torch``: a zip archive (``torch.save`` since PyTorch 1.6) or a bare pickle (the legacy format);
``unknown`` otherwise. Loading errors use it to say which ``format`` to write.
"""
from __future__ import annotations

import struct

FORMATS = ("torch", "safetensors")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a"  # a pickle (protocol 2) whose first value is torch's legacy magic number


def sniff_format(data: bytes) -> str:
    """``torch``, ``safetensors`` or ``unknown`` for the checkpoint bytes *data*."""
    if data.startswith(_ZIP_MAGIC) or data.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if len(data) >= 10:
        (header_length,) = struct.unpack("<Q", data[:8])
        if 2 <= header_length <= len(data) - 8 and data[8:9] == b"{":
            return "safetensors"
    if data[:1] and data[0] == _PICKLE_PROTOCOL_OPCODE:
        return "torch"
    return "unknown"


def format_mismatch(data: bytes, declared: str) -> str | None:
    """A sentence naming the ``format`` to write when *data* is clearly the other format than *declared*."""
    found = sniff_format(data)
    if found == "unknown" or found == declared:
        return None
    described = {"safetensors": "a safetensors file (it starts with a safetensors header)",
                 "torch": "a torch checkpoint (a torch.save zip archive or pickle)"}[found]
    return f"the file is {described}, but the entry says format: {declared}; set format: {found}"

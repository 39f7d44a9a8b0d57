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


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # Keras .h5 / .keras (HDF5) files
_TF_SAVED_MODEL_HINT = b"saved_model"
_TF_CHECKPOINT_HINTS = (b"model_checkpoint_path", b"_CHECKPOINTABLE_OBJECT_GRAPH")
CONVERT = ("rebuild the network in PyTorch with the benchmark's layer names (evaluator/models/variants.yaml), copy "
           "each weight in (transpose conv kernels from HWIO to OIHW and dense kernels from (in, out) to (out, in)), "
           "check that both give the same logits on a few images, then save model.state_dict() as safetensors; "
           "CONTRIBUTING.md, 'A TensorFlow, Keras or ONNX model', shows the steps")


def foreign_format_advice(data: bytes) -> str | None:
    """What a TensorFlow, Keras or ONNX file is and what to convert it to (by its first bytes); None otherwise."""
    head = data[:4096]
    if data.startswith(_HDF5_MAGIC):
        return f"is a Keras/HDF5 file (.h5), not a PyTorch checkpoint; {CONVERT}"
    if data.startswith(_ZIP_MAGIC) and b"keras" in head.lower() and b"data.pkl" not in data[:65536]:
        return f"is a Keras .keras archive, not a PyTorch checkpoint; {CONVERT}"
    if any(hint in head for hint in _TF_CHECKPOINT_HINTS) or head.startswith(b"\x08\x01\x12") and _TF_SAVED_MODEL_HINT in data[:65536]:
        return f"is a TensorFlow checkpoint or SavedModel, not a PyTorch checkpoint; {CONVERT}"
    if len(head) > 4 and head[0] == 0x08 and b"onnx" in data[:256].lower():
        return (f"is an ONNX model, not a PyTorch checkpoint; {CONVERT} (the onnx package's numpy_helper.to_array "
                "reads the initializers)")
    return None


def format_mismatch(data: bytes, declared: str) -> str | None:
    """A sentence naming the ``format`` to write when *data* is clearly the other format than *declared*."""
    found = sniff_format(data)
    if found == "unknown" or found == declared:
        return None
    described = {"safetensors": "a safetensors file (it starts with a safetensors header)",
                 "torch": "a torch checkpoint (a torch.save zip archive or pickle)"}[found]
    return f"the file is {described}, but the entry says format: {declared}; set format: {found}"

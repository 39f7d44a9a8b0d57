"""Safe checkpoint loading: verified bytes -> deserialized object -> key rules -> the declared variant.

Checkpoints are untrusted: they are read once into memory, their sha256 verified on those bytes
(:func:`evaluator.checkpoint.fetch.read_verified`), and deserialized from memory only with ``torch.load(weights_only=True)``
(PyTorch's restricted unpickler: tensors and plain containers, plus the few harmless classes an entry lists in
``allowed_globals``) or with safetensors. The manifest's key rules (:mod:`evaluator.checkpoint.key_rules`) turn the loaded
object into the state dict of the entry's ``variant`` (:mod:`evaluator.registry.variants`), loaded strictly.
"""
from __future__ import annotations

import importlib
import json
import io
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from evaluator.errors import APBError
from evaluator.checkpoint.fetch import Checkpoint, read_capped, read_verified
from evaluator.checkpoint.key_rules import apply_key_rules, entry_error
from evaluator.models import Normalized
from evaluator.registry.variants import architecture_names, build_model, build_variant
from evaluator.untrusted.zip_checks import ZIP_MAGIC, stored_archive_problem

if TYPE_CHECKING:
    from evaluator.checkpoint.compliance import ComplianceReport
    from evaluator.repository.manifest import ModelEntry


def fetch_entry(entry: ModelEntry, *, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The verified cached checkpoint of a manifest entry (download errors name the entry)."""
    from evaluator.checkpoint.fetch import fetch_checkpoint

    try:
        return fetch_checkpoint(entry.url, entry.sha256, cache_dir=cache_dir, progress=progress,
                                label=entry.model_key)
    except APBError as error:
        raise entry_error(entry, "; ".join(problem.message for problem in error.problems), "url") from None


def read_entry(entry: ModelEntry, *, cache_dir: Path | None = None, progress: bool = True) -> Checkpoint:
    """The entry's checkpoint bytes: fetched into the cache, then read once and verified; parse these bytes."""
    path = fetch_entry(entry, cache_dir=cache_dir, progress=progress)
    return read_verified(path, entry.sha256 or path.name, label=entry.model_key)


def load_state_dict(checkpoint: Checkpoint | bytes | Path, entry: ModelEntry) -> dict[str, torch.Tensor]:
    """The entry's state dict from verified checkpoint bytes (a :class:`Checkpoint`, raw bytes, or a local file
    read once): deserialized safely, then every key rule of the entry applied (:mod:`evaluator.checkpoint.key_rules`).
    Anything else is an APBError naming the entry."""
    if isinstance(checkpoint, Path):
        checkpoint = read_capped(checkpoint)
    data = checkpoint.data if isinstance(checkpoint, Checkpoint) else checkpoint
    return apply_key_rules(deserialize(data, entry), entry)


def build_checked_model(entry: ModelEntry, state_dict: dict[str, torch.Tensor], *, normalization: bool = True,
                        compliance: ComplianceReport | None = None) -> nn.Module:
    """The entry's variant with *state_dict* loaded strictly, in eval mode, wrapped in the manifest's
    normalization (unless *normalization* is False): the model that takes images in [0, 1]. A state dict that
    does not fit is an APBError listing missing, unexpected and mis-shaped keys and the closest variant.
    *compliance*: the report of this state dict against the entry's variant, when the caller computed it."""
    from evaluator.checkpoint.compliance import check_compliance

    report = compliance if compliance is not None else check_compliance(state_dict, entry.variant, entry.classes)
    if not report.ok:
        from evaluator.checkpoint.compliance import model_prefix

        rest = model_prefix({key: tuple(value.shape) for key, value in state_dict.items()}) if entry.strip_prefix else ""
        if rest:
            raise entry_error(entry, f"after strip_prefix {entry.strip_prefix!r} every key still starts with {rest!r}: "
                                     f"set strip_prefix: {(entry.strip_prefix or '') + rest!r} (the whole prefix the keys "
                                     f"share); then: {report.summary()}", "strip_prefix")
        raise entry_error(entry, f"the checkpoint does not fit {report.target}: {report.summary()}",
                          "variant" if entry.variant != entry.architecture else "architecture")
    model = build_variant(entry.variant, entry.classes)
    model.load_state_dict(state_dict, strict=True)
    return with_normalization(model, entry).eval() if normalization else model.eval()


def with_normalization(model: nn.Module, entry: ModelEntry) -> nn.Module:
    """*model* wrapped in :class:`Normalized` when the manifest entry asks for normalization."""
    norm = entry.normalization
    return model if norm is None else Normalized(model, norm.mean, norm.std).eval()


def load_model(model_key: str, *, root: Path | None = None, cache_dir: Path | None = None, device: str = "cpu",
               normalization: bool = True) -> nn.Module:
    """The ready model of *model_key*: fetched, verified, loaded strictly, wrapped in the manifest's
    normalization (unless *normalization* is False), on *device*, in eval mode. ``base_resnet18`` and
    ``base_vgg16`` give the freshly initialised base architectures, as in the original benchmark."""
    from evaluator.device import checked_device

    device = checked_device(device)
    base = model_key.removeprefix("base_")
    if base != model_key and base in architecture_names():
        return build_model(base).to(device).eval()
    from evaluator.repository.submissions import find_entry

    entry = find_entry(model_key, root)
    state = load_state_dict(read_entry(entry, cache_dir=cache_dir), entry)
    return build_checked_model(entry, state, normalization=normalization).to(device).eval()


# ----------------------------------------------------------------------------------------------- helpers

def deserialize(data: bytes, entry: ModelEntry) -> Any:
    """The object in the checkpoint bytes *data*, read the safe way the entry's ``format`` names."""
    from evaluator.untrusted.file_kind import format_mismatch

    if entry.format not in ("torch", "safetensors"):
        raise entry_error(entry, f"format {entry.format!r} is not torch or safetensors", "format")
    mismatch = format_mismatch(data, entry.format)
    if mismatch:
        raise entry_error(entry, mismatch, "format")
    bounds = _safetensors_problem(data) if entry.format == "safetensors" else _torch_zip_problem(data)
    if bounds:
        raise entry_error(entry, f"refused before loading: {bounds}", "format")
    if entry.format == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except (SafetensorError, OSError, ValueError) as error:
            raise entry_error(entry, f"not a readable safetensors file ({error}); check `format`", "format") from None
    try:
        with torch.serialization.safe_globals([allowed_global(name) for name in entry.allowed_globals]):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = refused_global(error)
        raise entry_error(entry, "refused to load: " + unpickling_advice(refused, _unpickling_reason(error)),
                          "allowed_globals" if refused in allowed_global_names() else "format") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise entry_error(entry, f"not a readable torch checkpoint ({' '.join(str(error).split())[:300]})",
                          "format") from None


def _torch_zip_problem(data: bytes) -> str | None:
    """Why a torch zip checkpoint may not be opened (compressed or oversized members, local headers that
    disagree with the directory: :func:`evaluator.untrusted.zip_checks.stored_archive_problem`); None for a legacy pickle."""
    return stored_archive_problem(data) if data.startswith(ZIP_MAGIC) else None


def _safetensors_problem(data: bytes) -> str | None:
    """Why a safetensors file's header may not be believed: a header length or a tensor's data offsets outside
    the file (which is itself within the size cap); a header that is no JSON object is left to safetensors."""
    if len(data) < 8:
        return "the file is shorter than a safetensors header"
    length = int.from_bytes(data[:8], "little")
    if not 2 <= length <= len(data) - 8:
        return f"the header declares {length:,} bytes but the file has {len(data) - 8:,} after its length"
    try:
        header = json.loads(data[8:8 + length])
    except RecursionError:
        return "the header is nested too deeply"
    except ValueError:
        return None  # safetensors says what is wrong with it
    if not isinstance(header, dict):
        return None
    body = len(data) - 8 - length
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(v) is int for v in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= body):
            return f"the tensor {name!r} declares data offsets outside the file's {body:,} bytes of data"
    return None


def refused_global(error: Exception) -> str | None:
    """The dotted name of the class torch's weights-only unpickler refused (``GLOBAL <name> was not ...``)."""
    match = re.search(r"GLOBAL ([A-Za-z_][\w.]*) was not an allowed global", str(error))
    return match[1] if match else None


def unpickling_advice(refused: str | None, reason: str) -> str:
    """What to do about a checkpoint the weights-only unpickler refused (never torch's add_safe_globals advice:
    allowing a class means running its code on untrusted bytes)."""
    if refused in allowed_global_names():
        return (f"the checkpoint holds a {refused} (training arguments); set allowed_globals: [{refused}] to "
                "accept it, or save only the state dict")
    if refused and _looks_like_a_module_class(refused):
        return (f"the file holds a pickled {refused} object: it looks like a whole model saved with "
                "torch.save(model), and unpickling it could run code; save model.state_dict() instead "
                "(torch.save(model.state_dict(), path)) or a .safetensors file")
    what = f"a {refused} object" if refused else "objects other than tensors and plain containers"
    return (f"the checkpoint holds {what}, and unpickling it could run code ({reason}); save a plain state dict "
            "(torch.save(model.state_dict())) or a .safetensors file")


_NOT_MODEL_MODULES = ("numpy", "collections", "builtins", "argparse", "datetime", "pathlib", "_codecs", "codecs",
                      "io", "_io", "os", "posix", "nt", "subprocess", "sys", "functools", "operator", "types")


def _looks_like_a_module_class(name: str) -> bool:
    """True for a class name such as ``torch.nn.modules.container.Sequential`` or ``__main__.Net``: a network
    pickled whole, not a data value or a function."""
    module, _, attribute = name.rpartition(".")
    if module.startswith("torch.nn.") or module == "__main__":
        return attribute[:1].isupper()
    return attribute[:1].isupper() and module.split(".")[0] not in _NOT_MODEL_MODULES


def allowed_global_names() -> tuple[str, ...]:
    """The manifest schema's closed list of ``allowed_globals``."""
    from evaluator.paths import SCHEMAS_DIR
    from evaluator.untrusted.safeio import load_json

    schema, _ = load_json(SCHEMAS_DIR / "manifest.schema.json")
    return tuple(schema["$defs"]["allowed_global"]["enum"])


def allowed_global(name: str) -> Any:
    """The class behind a name of the manifest schema's closed ``allowed_globals`` list (e.g.
    ``argparse.Namespace``: plain attribute containers whose unpickling runs no code)."""
    if name not in allowed_global_names():
        raise APBError(f"allowed_globals: {name!r} is not in the manifest schema's closed list")
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def _unpickling_reason(error: Exception) -> str:
    """The informative line of torch's long weights-only message (the refused global)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line or "GLOBAL" in line:
            return line[:300]
    return (lines[0] if lines else type(error).__name__)[:300]

"""Safe checkpoint loading into the base architectures.

Checkpoints are untrusted: they are read only with ``torch.load(weights_only=True)`` (PyTorch's restricted
unpickler, which imports nothing but tensors and plain containers) or with safetensors, and only after
:mod:`evaluator.fetch` has verified their sha256. The manifest says where the state dict sits inside the loaded
object (``state_dict_key``, a dotted path) and which key prefix to strip (``strip_prefix``). Masks stored the
``torch.nn.utils.prune`` way (``<name>_orig`` and ``<name>_mask``) are folded into ``<name>``.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluator.errors import APBError, Problem
from evaluator.models import ARCHITECTURES, Normalized, build_model

BASE_MODEL_KEYS = {f"base_{architecture}": architecture for architecture in ARCHITECTURES}


def entry_error(entry: Any, message: str, field: str | None = None) -> APBError:
    """An APBError pointing at a manifest entry: ``manifest.yaml:<line>: models[i].<field>: <model_key>: ...``."""
    where = f"models[{entry.index}]" + (f".{field}" if field else "")
    return APBError(Problem(str(entry.manifest_path), f"{entry.model_key}: {message}", entry.line, where))


def fetch_entry(entry: Any, *, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The verified cached checkpoint of a manifest entry (download errors name the entry)."""
    from evaluator.fetch import fetch_checkpoint

    try:
        return fetch_checkpoint(entry.url, entry.sha256, cache_dir=cache_dir, progress=progress,
                                label=entry.model_key)
    except APBError as error:
        raise entry_error(entry, "; ".join(problem.message for problem in error.problems), "url") from None


def load_state_dict(path: Path, entry: Any) -> dict[str, torch.Tensor]:
    """The entry's state dict from the verified file at *path*: selected, prefix-stripped, masks folded,
    every value a finite tensor. Anything else is an APBError naming the entry."""
    loaded = _read_checkpoint(Path(path), entry)
    selected = _select(loaded, entry.state_dict_key, entry)
    state = _tensor_mapping(selected, entry)
    state = _strip_prefix(state, entry.strip_prefix, entry)
    state = fold_pruning_masks(state, entry)
    _require_finite(state, entry)
    return state


def build_checked_model(entry: Any, state_dict: dict[str, torch.Tensor], *, normalization: bool = True) -> nn.Module:
    """The entry's base architecture with *state_dict* loaded strictly, in eval mode, wrapped in the manifest's
    normalization (unless *normalization* is False): the model that takes images in [0, 1]. A state dict that
    does not fit is an APBError listing missing, unexpected and mis-shaped keys."""
    from evaluator.check import check_compliance

    report = check_compliance(state_dict, entry.architecture)
    if not report.ok:
        raise entry_error(entry, f"the checkpoint does not fit the base {entry.architecture}: {report.summary()}",
                          "architecture")
    model = build_model(entry.architecture)
    model.load_state_dict(state_dict, strict=True)
    return with_normalization(model, entry).eval() if normalization else model.eval()


def with_normalization(model: nn.Module, entry: Any) -> nn.Module:
    """*model* wrapped in :class:`Normalized` when the manifest entry asks for normalization."""
    norm = entry.normalization
    return model if norm is None else Normalized(model, norm.mean, norm.std).eval()


def load_model(model_key: str, *, root: Path | None = None, cache_dir: Path | None = None, device: str = "cpu",
               normalization: bool = True) -> nn.Module:
    """The ready model of *model_key*: fetched, verified, loaded strictly, wrapped in the manifest's
    normalization (unless *normalization* is False), on *device*, in eval mode. ``base_resnet18`` and
    ``base_vgg16`` give the freshly initialised base architectures, as in the original benchmark."""
    if model_key in BASE_MODEL_KEYS:
        return build_model(BASE_MODEL_KEYS[model_key]).to(device).eval()
    from evaluator.submissions import find_entry

    entry = find_entry(model_key, root)
    state = load_state_dict(fetch_entry(entry, cache_dir=cache_dir), entry)
    return build_checked_model(entry, state, normalization=normalization).to(device).eval()


def fold_pruning_masks(state: dict[str, torch.Tensor], entry: Any) -> dict[str, torch.Tensor]:
    """Replace each ``<name>_orig`` + ``<name>_mask`` pair (``torch.nn.utils.prune``) with ``<name>`` =
    orig * mask; the pair's order in the dict is kept at the position of ``<name>_orig``."""
    if not any(key.endswith("_orig") for key in state):
        return state
    folded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        if not key.endswith("_orig"):
            folded[key] = value
            continue
        name = key[: -len("_orig")]
        mask = state.get(name + "_mask")
        if mask is None:
            raise entry_error(entry, f"{key} has no matching {name}_mask; a pruned weight needs both", "format")
        if mask.shape != value.shape:
            raise entry_error(entry, f"{name}_mask has shape {list(mask.shape)} but {key} has {list(value.shape)}",
                              "format")
        if name in state:
            raise entry_error(entry, f"{name} appears both plain and as {key} + {name}_mask", "format")
        folded[name] = value * mask.to(value.dtype)
    return folded


# ----------------------------------------------------------------------------------------------- helpers

def _read_checkpoint(path: Path, entry: Any) -> Any:
    if entry.format == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise entry_error(entry, f"not a readable safetensors file ({error}); check `format`", "format") from None
    if entry.format != "torch":
        raise entry_error(entry, f"format {entry.format!r} is not torch or safetensors", "format")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise entry_error(entry, "refused to load: the checkpoint holds objects other than tensors and plain "
                                 f"containers, and unpickling them could run code ({_unpickling_reason(error)}); "
                                 "save a plain state dict (torch.save(model.state_dict())) or a .safetensors file",
                          "format") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise entry_error(entry, f"not a readable torch checkpoint ({' '.join(str(error).split())[:300]})",
                          "format") from None


def _unpickling_reason(error: Exception) -> str:
    """The informative line of torch's long weights-only message (the refused global)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line or "GLOBAL" in line:
            return line[:300]
    return (lines[0] if lines else type(error).__name__)[:300]


def _select(loaded: Any, dotted_key: str | None, entry: Any) -> Any:
    if not dotted_key:
        return loaded
    current = loaded
    for depth, part in enumerate(dotted_key.split(".")):
        if not isinstance(current, Mapping) or part not in current:
            where = ".".join(dotted_key.split(".")[:depth]) or "the checkpoint"
            found = sorted(str(key) for key in current)[:12] if isinstance(current, Mapping) else []
            hint = f"; {where} holds {found}" if found else f"; {where} is a {type(current).__name__}"
            raise entry_error(entry, f"state_dict_key {dotted_key!r}: {part!r} not found{hint}", "state_dict_key")
        current = current[part]
    return current


def _tensor_mapping(selected: Any, entry: Any) -> dict[str, torch.Tensor]:
    if not isinstance(selected, Mapping):
        raise entry_error(entry, f"the state dict is a {type(selected).__name__}, not a mapping of parameter "
                                 "names to tensors; set state_dict_key to where the weights sit", "state_dict_key")
    if not selected:
        raise entry_error(entry, "the state dict is empty", "state_dict_key")
    bad = [f"{key!r} ({type(value).__name__})" for key, value in selected.items()
           if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise entry_error(entry, f"{len(bad)} of {len(selected)} entries are not name -> tensor (e.g. "
                                 f"{', '.join(bad[:4])}); if the weights sit under one of these keys, set "
                                 "state_dict_key to it", "state_dict_key")
    return dict(selected)


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str | None, entry: Any) -> dict[str, torch.Tensor]:
    if not prefix:
        return state
    if not any(key.startswith(prefix) for key in state):
        raise entry_error(entry, f"strip_prefix {prefix!r} matches no key (first key: {next(iter(state))!r}); "
                                 "set strip_prefix to null", "strip_prefix")
    stripped = {(key[len(prefix):] if key.startswith(prefix) else key): value for key, value in state.items()}
    if len(stripped) != len(state):
        raise entry_error(entry, f"stripping {prefix!r} makes two keys equal", "strip_prefix")
    return stripped


def _require_finite(state: dict[str, torch.Tensor], entry: Any) -> None:
    bad = [key for key, value in state.items()
           if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())]
    if bad:
        raise entry_error(entry, f"{len(bad)} tensors hold NaN or infinite values: {', '.join(bad[:6])}"
                                 + (" ..." if len(bad) > 6 else ""))

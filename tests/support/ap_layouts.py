"""Synthetic checkpoint files in the layouts the AP authors' own saving code writes.

The facts are data: ``tests/data/ap_layouts/<ap_key>__<architecture>.json`` (format: every state-dict key in
file order with shape, dtype and role, the nesting of the saved object, its extras, the serialization format
and the storage device; written from the AP repositories and the original benchmark's ``models/``). This module
only turns such a description into a real file with random values that respect the pruning: zeros where the
AP's pruning leaves zeros, masks and scores where it keeps them. It imports nothing from ``evaluator``.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
from pathlib import Path
from typing import Any, Iterator

import torch

LAYOUT_DIR = Path(__file__).resolve().parents[1] / "data" / "ap_layouts"
SOFTPLUS_ONE = math.log(math.e - 1)  # MAD resets every mask to softplus^-1(1)


def layout_names() -> list[str]:
    """``<ap_key>__<architecture>`` of every layout file."""
    return sorted(path.stem for path in LAYOUT_DIR.glob("*.json"))


def load_layout(name: str) -> dict[str, Any]:
    return json.loads((LAYOUT_DIR / f"{name}.json").read_text())


def granularity(layout: dict[str, Any], structure: str) -> str:
    """What the AP zeroes for a manifest *structure*: weights, filters or channels."""
    value = layout["pruning"]["granularity"]
    return value[structure] if isinstance(value, dict) else value


def write_checkpoint(layout: dict[str, Any], structure: str, sparsity: int, path: Path, seed: int = 0) -> Path:
    """Write a checkpoint of *layout* pruned to *sparsity* percent at the AP's granularity for *structure*."""
    generator = torch.Generator().manual_seed(seed)
    state = state_dict(layout, granularity(layout, structure), sparsity / 100.0, generator)
    saved = container(layout, state)
    with storage_location(layout.get("storage_location", "cpu")):
        torch.save(saved, path, _use_new_zipfile_serialization=layout.get("serialization", "zip") != "legacy")
    return path


def state_dict(layout: dict[str, Any], grain: str, sparsity: float,
               generator: torch.Generator) -> collections.OrderedDict[str, torch.Tensor]:
    """Random tensors with the layout's keys, shapes and dtypes; pruned weights zeroed, masked or scored."""
    state: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    how = layout["pruning"]["how"]
    masked = {meta["of"]: key for key, _, _, meta in layout["tensors"] if meta.get("role") == "mask"}
    for key, shape, dtype, meta in layout["tensors"]:
        state[key] = initial_value(meta, shape, getattr(torch, dtype), layout, generator)
    for key, shape, _, meta in layout["tensors"]:
        if meta.get("role") != "weight" or not meta.get("pruned") or len(shape) < 2:
            continue
        keep = kept(state[key], grain, sparsity, generator)
        if how.startswith("scores"):
            continue  # dense weights: the scores select (see below)
        if key in masked:
            state[masked[key]] = keep.to(state[masked[key]].dtype)
        else:
            state[key] = state[key] * keep
    for key, _, _, meta in layout["tensors"]:
        if meta.get("role") == "scores":
            state[key] = torch.randn(state[key].shape, generator=generator)
    return state


def initial_value(meta: dict[str, Any], shape: list[int], dtype: torch.dtype, layout: dict[str, Any],
                  generator: torch.Generator) -> torch.Tensor:
    """A plausible value for one tensor of the given role."""
    role = meta.get("role")
    size = tuple(shape)
    if dtype == torch.int64:
        return torch.tensor(100, dtype=torch.int64).expand(size).clone() if size else torch.tensor(100)
    if role in ("norm_mean", "norm_std"):
        values = layout["normalization_in_file"]["mean" if role == "norm_mean" else "std"]
        return torch.tensor(values, dtype=dtype).view(size)
    if role == "softplus_mask":
        return torch.full(size, SOFTPLUS_ONE, dtype=dtype)
    if role == "mask":
        return torch.ones(size, dtype=dtype)
    if role in ("bn_weight", "bn_running_var"):
        return (0.5 + torch.rand(size, generator=generator)).to(dtype)
    if role in ("bn_bias", "bn_running_mean", "bias"):
        return (0.1 * torch.randn(size, generator=generator)).to(dtype)
    fan_in = max(1, math.prod(size[1:])) if len(size) > 1 else 1
    return (torch.randn(size, generator=generator) * math.sqrt(2.0 / fan_in)).to(dtype)


def kept(weight: torch.Tensor, grain: str, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    """A 0/1 tensor of *weight*'s shape keeping (1 - sparsity) of its weights, filters or channels."""
    if grain == "weights" or weight.dim() != 4:
        count = weight.numel()
        order = torch.randperm(count, generator=generator)
        keep = torch.ones(count)
        keep[order[: math.ceil(sparsity * count)]] = 0
        return keep.view_as(weight)
    axis = 0 if grain == "filters" else 1
    count = weight.shape[axis]
    dropped = torch.randperm(count, generator=generator)[: min(count - 1, math.ceil(sparsity * count))]
    keep = torch.ones(count)
    keep[dropped] = 0
    view = [1] * weight.dim()
    view[axis] = count
    return keep.view(view).expand_as(weight).clone()


def container(layout: dict[str, Any], state: collections.OrderedDict[str, torch.Tensor]) -> Any:
    """The object the AP's code saves: the state dict itself or a dict that nests it beside its extras."""
    spec = layout["container"]
    path = spec.get("state_dict_at")
    if not path:
        return state if spec.get("mapping_type", "OrderedDict") == "OrderedDict" else dict(state)
    extras = {name: extra_value(kind) for name, kind in (spec.get("extras") or {}).items()}
    order = spec.get("order") or spec.get("extras_order") or [*extras, path.split(".")[0]]
    top: dict[str, Any] = {}
    for name in order:
        if name == path.split(".")[0]:
            top[name] = nested(path.split(".")[1:], state)
        else:
            top[name] = extras.pop(name, None)
    top.update(extras)
    return top


def nested(parts: list[str], state: Any) -> Any:
    return state if not parts else {parts[0]: nested(parts[1:], state)}


def extra_value(kind: str) -> Any:
    """A value of one of the layout format's extra kinds, as the AP's training code would save it."""
    values: dict[str, Any] = {
        "int": 200, "float": 0.5312, "str": "cResNet18", "bool": True, "none": None,
        "tensor0d": torch.tensor(0.4321, requires_grad=True),
        "list_of_float": [0.1, 0.2],
        "dict_of_lists_of_float": {"train_acc": [0.5, 0.6], "test_ra": [0.4, 0.45]},
        "argparse_namespace": argparse.Namespace(dataset="cifar10", network="resnet", depth=18, percnt=0.9,
                                                 learning_rate=0.1, batch_size=128, attack="pgd", eps=0.03),
        "optimizer_state": {"state": {0: {"momentum_buffer": torch.zeros(4)}},
                            "param_groups": [{"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False,
                                              "params": [0, 1]}]},
        "scheduler_state": {"milestones": collections.Counter({50: 1, 150: 1}), "gamma": 0.1, "base_lrs": [0.1],
                            "last_epoch": 200, "_step_count": 201, "_get_lr_called_within_step": False,
                            "_last_lr": [0.001]},
        "sparse_masks_info": {"masks": {"conv1.weight_1": torch.ones(2, 2)}, "prune_epochs": [10, 20],
                              "name2death_rate": {"conv1.weight": 0.5},
                              "decay": ({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
                                        {"T_max": 200, "eta_min": 0.0, "last_epoch": 3})},
    }
    if kind not in values:
        raise ValueError(f"unknown extra kind {kind!r}")
    return values[kind]


@contextlib.contextmanager
def storage_location(location: str) -> Iterator[None]:
    """Save storages tagged with *location* (e.g. ``cuda:0``), as a file written on a GPU machine is."""
    import torch.serialization as serialization

    original = serialization.location_tag
    serialization.location_tag = lambda storage: location  # type: ignore[assignment]
    try:
        yield
    finally:
        serialization.location_tag = original

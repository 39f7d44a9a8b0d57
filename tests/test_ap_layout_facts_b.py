"""Self-check of the layout files for FlyingBird, RobustBird, RST, MAD and Li20 against the reference modules.

Each tests/data/ap_layouts/<ap>__<arch>.json lists the tensors of the authors' checkpoint file; once the wrapper
prefix is removed and the prune reparametrization folded, that list must be exactly the reference module's state
dict (keys in order, shapes, dtypes), with the same parameter count, and the module must run.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from tests.support import reference_models_b as ref

DATA = Path(__file__).parent / "data"
LAYOUTS = DATA / "ap_layouts"
ROLES = {"weight", "bias", "bn_weight", "bn_bias", "bn_running_mean", "bn_running_var", "bn_num_batches_tracked",
         "mask", "softplus_mask", "scores", "norm_mean", "norm_std"}
BUFFER_ROLES = {"bn_running_mean", "bn_running_var", "bn_num_batches_tracked", "norm_mean", "norm_std", "mask"}

REFERENCES: dict[tuple[str, str], Callable[[], nn.Module]] = {
    ("FlyingBird_Chen2021Sparsity", "resnet18"): ref.PreActResNet18,
    ("FlyingBird_Chen2021Sparsity", "vgg16"): ref.ChenVGG16,
    ("RobustBird_Chen2021Sparsity", "resnet18"): ref.PreActResNet18,
    ("RobustBird_Chen2021Sparsity", "vgg16"): ref.ChenVGG16,
    ("RST_Fu2021Drawing", "resnet18"): lambda: ref.BasicResNet18("subnet", density=0.1),
    ("RST_Fu2021Drawing", "vgg16"): lambda: ref.SubnetVGG16(density=0.1),
    ("MAD_Lee2022Masking", "resnet18"): lambda: ref.BasicResNet18("softplus_mask", mean=ref.CIFAR10_MEAN_MAD,
                                                                  std=ref.CIFAR10_STD_MAD),
    ("MAD_Lee2022Masking", "vgg16"): ref.MadVGG16,
    ("Li20_Li2020Towards", "resnet18"): lambda: ref.BasicResNet18("plain"),
    ("Li20_Li2020Towards", "vgg16"): ref.Li20VGG16,
}
PAIRS = sorted(REFERENCES)


def layout(pair: tuple[str, str]) -> dict[str, Any]:
    return json.loads((LAYOUTS / f"{pair[0]}__{pair[1]}.json").read_text())


@cache
def reference(pair: tuple[str, str]) -> nn.Module:
    torch.manual_seed(0)
    return REFERENCES[pair]().eval()


def wrapper_prefix(tensors: list[list[Any]]) -> str:
    """``module.`` when every key carries DataParallel's prefix, else nothing."""
    return "module." if all(entry[0].startswith("module.") for entry in tensors) else ""


def entries(model: nn.Module) -> list[tuple[str, list[int], str]]:
    return [(key, list(value.shape), str(value.dtype).removeprefix("torch."))
            for key, value in model.state_dict().items()]


def unwrapped(tensors: list[list[Any]]) -> list[tuple[str, list[int], str]]:
    """The file's entries without the wrapper prefix, in file order."""
    prefix = wrapper_prefix(tensors)
    return [(key[len(prefix):], shape, dtype) for key, shape, dtype, _ in tensors]


def folded(tensors: list[list[Any]]) -> dict[str, tuple[list[int], str]]:
    """The entries the plain module loads: ``weight_orig`` back to ``weight``, torch-pruning masks dropped."""
    masks = {key for key, _, _, meta in tensors if meta["role"] == "mask"}
    prefix = wrapper_prefix(tensors)
    return {key[len(prefix):].removesuffix("_orig"): (shape, dtype)
            for key, shape, dtype, _ in tensors if key not in masks}


def as_saved(pair: tuple[str, str], how: str) -> nn.Module:
    """The reference module as the AP saves it: RobustBird's torch pruning is never removed, so each Conv2d and
    Linear holds weight_orig + weight_mask (torch's own reparametrization, here with an all-ones mask)."""
    if how != "weight_orig_mask":
        return reference(pair)
    model = REFERENCES[pair]()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            prune.identity(module, "weight")
    return model


def test_there_is_one_layout_per_pair() -> None:
    names = sorted(path.name for path in LAYOUTS.glob("*.json")
                   if path.name.split("__")[0] in {ap for ap, _ in PAIRS})
    assert names == sorted(f"{ap}__{arch}.json" for ap, arch in PAIRS)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: f"{pair[0]}__{pair[1]}")
def test_layout_is_the_reference_state_dict(pair: tuple[str, str]) -> None:
    document = layout(pair)
    assert unwrapped(document["tensors"]) == entries(as_saved(pair, document["pruning"]["how"]))
    plain = {key: (shape, dtype) for key, shape, dtype in entries(reference(pair))}
    assert folded(document["tensors"]) == plain


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: f"{pair[0]}__{pair[1]}")
def test_parameter_count_and_forward(pair: tuple[str, str]) -> None:
    document = layout(pair)
    model = reference(pair)
    in_file = sum(torch.Size(shape).numel() for _, shape, _, meta in document["tensors"]
                  if meta["role"] not in BUFFER_ROLES)
    assert in_file == sum(parameter.numel() for parameter in model.parameters())
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: f"{pair[0]}__{pair[1]}")
def test_layout_fields_are_consistent(pair: tuple[str, str]) -> None:
    document = layout(pair)
    assert (document["ap_key"], document["architecture"]) == pair
    assert document["serialization"] in {"zip", "legacy"}
    assert document["storage_location"] in {"cpu", "cuda:0"}
    keys = {entry[0] for entry in document["tensors"]}
    assert len(keys) == len(document["tensors"])
    for key, _, _, meta in document["tensors"]:
        assert meta["role"] in ROLES, key
        if meta["role"] in {"mask", "softplus_mask", "scores"}:
            assert meta["of"] in keys, key
    assert any(meta.get("pruned") for _, _, _, meta in document["tensors"])
    roles = {meta["role"] for _, _, _, meta in document["tensors"]}
    assert ("norm_mean" in roles) == (document["normalization_in_file"] is not None)
    how = document["pruning"]["how"]
    assert {"weight_orig_mask": "mask", "scores_topk_per_layer": "scores"}.get(how, "weight") in roles
    assert document["forward"]["reference_module"].startswith("tests/support/reference_models_b.py:")


@pytest.mark.parametrize("architecture", ["resnet18", "vgg16"])
def test_rst_kept_counts_follow_the_edge_popup_rule(architecture: str) -> None:
    """The per-layer kept counts in the file are what the reference forward keeps: numel - int((1 - k) * numel)."""
    document = layout(("RST_Fu2021Drawing", architecture))
    shapes = {key: shape for key, shape, _, _ in document["tensors"]}
    generator = torch.Generator().manual_seed(0)
    for sparsity, density in (("90", 0.1), ("95", 0.05), ("99", 0.01)):
        counts = document["pruning"]["kept_per_layer_by_sparsity"][sparsity]
        assert set(counts) == {key.removesuffix(".scores") + ".weight" for key in shapes if key.endswith(".scores")}
        by_size = {torch.Size(shapes[key]).numel(): kept for key, kept in counts.items()}
        for numel, kept in by_size.items():  # one sort per distinct layer size keeps this fast
            assert int(ref.topk_abs_mask(torch.randn(numel, generator=generator), density).sum()) == kept


def test_rst_forward_depends_only_on_the_kept_weights() -> None:
    """A scored conv keeps the top entries of abs(scores): changing the other weights changes nothing."""
    torch.manual_seed(1)
    conv = ref.SubnetConv2d(16, 8, 3, padding=1, bias=False, density=0.05)
    inputs = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        conv.scores[0, 0, 0, 0] = -100.0  # kept because abs() is used, though the smallest signed score
        kept = ref.topk_abs_mask(conv.scores, 0.05).bool()
        assert bool(kept[0, 0, 0, 0]) and int(kept.sum()) == ref.kept_count(conv.weight.numel(), 0.05)
        before = conv(inputs)
        conv.weight[~kept] = 123.0
        assert torch.equal(conv(inputs), before)
        conv.weight[kept] += 1.0
        assert not torch.equal(conv(inputs), before)


def test_mad_masks_as_saved_are_the_identity() -> None:
    """MAD resets every mask to log(e - 1): folding weight * softplus(mask) then changes nothing."""
    model = reference(("MAD_Lee2022Masking", "vgg16"))
    masks = [value for key, value in model.state_dict().items() if ".mask_" in key]
    assert masks and all(torch.equal(nn.functional.softplus(mask), torch.ones_like(mask)) for mask in masks)


def test_li20_resnet18_is_the_benchmark_base_resnet18() -> None:
    """Li20's ResNet18 file has the original benchmark's base resnet18 keys and shapes (it loads as it is)."""
    base = json.loads((DATA / "base_model_state_dict_shapes.json").read_text())["resnet18"]
    tensors = layout(("Li20_Li2020Towards", "resnet18"))["tensors"]
    assert {key: shape for key, shape, _, _ in tensors} == base


def test_topk_abs_mask_is_the_sorting_rule() -> None:
    """The reference mask equals the authors' rule: sort abs(scores) ascending, zero the first int((1 - k) * n)."""
    generator = torch.Generator().manual_seed(2)
    for numel in (10, 1728, 5120):
        for density in (0.1, 0.05, 0.01, 0.5):
            scores = torch.randn(numel, generator=generator)
            expected = torch.ones(numel)
            expected[scores.abs().sort().indices[: int((1 - density) * numel)]] = 0
            assert torch.equal(ref.topk_abs_mask(scores, density), expected)

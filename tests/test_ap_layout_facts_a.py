"""Self-check of tests/data/ap_layouts/*.json for RADMM, TwinRep, PwoA, HYDRA and HARP against the reference
modules of tests/support/reference_models_a.py (both written from the authors' code, see each file's sources).

Each layout's tensor list, without its wrapper prefix, must be exactly the reference module's state dict
(keys, order, shapes, dtypes); a state dict built from the layout must load strictly and run; and the pruning
facts must name only weights that exist.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.reference_models_a import (
    REFERENCE_MODULES,
    CifarResNet18,
    PwoAVGG16,
    ScoredConv2d,
    ScoredLinear,
    set_keep_fraction,
    top_fraction_mask,
)

LAYOUT_DIR = Path(__file__).parent / "data" / "ap_layouts"
AP_KEYS = ("RADMM_Ye2019Adversarial", "TwinRep_Li2023Learning", "PwoA_Jian2022Pruning", "HYDRA_Sehwag2020Hydra",
           "HARP_Zhao2023Holistic")
LAYOUT_FILES = sorted(path for path in LAYOUT_DIR.glob("*.json") if path.name.split("__")[0] in AP_KEYS)
BASE_SHAPES = json.loads((Path(__file__).parent / "data" / "base_model_state_dict_shapes.json").read_text())
BUFFER_ROLES = {"bn_running_mean", "bn_running_var", "bn_num_batches_tracked"}
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def load_layout(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def reference_module(layout: dict[str, Any]) -> torch.nn.Module:
    """The reference module a layout names (``path:Class``), built with its ``reference_kwargs``."""
    location, class_name = layout["forward"]["reference_module"].split(":")
    assert location == "tests/support/reference_models_a.py"
    return REFERENCE_MODULES[class_name](**layout["forward"]["reference_kwargs"])


def unprefixed(layout: dict[str, Any]) -> list[tuple[str, list[int], str]]:
    prefix = layout["container"]["key_prefix"]
    assert all(key.startswith(prefix) for key, *_ in layout["tensors"])
    return [(key[len(prefix):], shape, dtype) for key, shape, dtype, _ in layout["tensors"]]


def state_dict_from_layout(layout: dict[str, Any], sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the layout's keys (prefix removed), shapes and dtypes; pruned weights get about a
    ``sparsity`` fraction of zeros; BatchNorm variances are positive."""
    generator = torch.Generator().manual_seed(seed)
    prefix = layout["container"]["key_prefix"]
    tensors: dict[str, torch.Tensor] = {}
    for key, shape, dtype, facts in layout["tensors"]:
        if dtype == "int64":
            value = torch.zeros(shape, dtype=torch.int64)
        elif facts["role"] == "bn_running_var":
            value = 0.5 + torch.rand(shape, generator=generator)
        else:
            value = 0.05 * torch.randn(shape, generator=generator)
        if facts.get("pruned"):
            value = value * (torch.rand(shape, generator=generator) >= sparsity)
        tensors[key[len(prefix):]] = value
    return tensors


def test_one_layout_per_ap_and_architecture():
    names = {path.name for path in LAYOUT_FILES}
    assert names == {f"{ap}__{arch}.json" for ap in AP_KEYS for arch in ("resnet18", "vgg16")}


@pytest.mark.parametrize("path", LAYOUT_FILES, ids=lambda path: path.stem)
def test_layout_equals_the_reference_state_dict(path):
    layout = load_layout(path)
    assert path.stem == f"{layout['ap_key']}__{layout['architecture']}"
    module = reference_module(layout)
    expected = [(key, list(value.shape), str(value.dtype).removeprefix("torch."))
                for key, value in module.state_dict().items()]
    assert unprefixed(layout) == expected
    parameters = sum(int(torch.tensor(shape).prod()) for _, shape, _, facts in layout["tensors"]
                     if facts["role"] not in BUFFER_ROLES)
    assert parameters == sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("path", LAYOUT_FILES, ids=lambda path: path.stem)
def test_layout_loads_strictly_and_runs(path):
    layout = load_layout(path)
    module = reference_module(layout).eval()
    module.load_state_dict(state_dict_from_layout(layout, sparsity=0.9), strict=True)
    logits = module(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("path", LAYOUT_FILES, ids=lambda path: path.stem)
def test_pruning_facts_name_existing_weights(path):
    layout = load_layout(path)
    pruned = [(key, shape, facts) for key, shape, _, facts in layout["tensors"] if facts.get("pruned")]
    assert pruned, "a pruned model prunes something"
    assert all(facts["role"] == "weight" and len(shape) in (2, 4) for _, shape, facts in pruned)
    assert set(layout["pruning"]["granularity"]) == set(layout["structures"])
    assert set(layout["pruning"]["granularity"].values()) <= {"weights", "filters", "channels"}
    for _, _, facts in pruned:
        assert set(facts.get("pruned_in", layout["structures"])) <= set(layout["structures"])
    container = layout["container"]
    assert (container["state_dict_at"] is None) == (not container["extras"])
    assert layout["serialization"] in ("zip", "legacy") and layout["storage_location"] in ("cpu", "cuda:0")


@pytest.mark.parametrize("ap_key", ["HYDRA_Sehwag2020Hydra", "HARP_Zhao2023Holistic"])
@pytest.mark.parametrize("architecture", ["resnet18", "vgg16"])
def test_hydra_and_harp_are_the_original_benchmark_base_models_plus_harp_k_scores(ap_key, architecture):
    # The original benchmark loads both strictly into its base models (tests/data/base_model_state_dict_shapes.json).
    layout = load_layout(LAYOUT_DIR / f"{ap_key}__{architecture}.json")
    keys = [(key, shape) for key, shape, _ in unprefixed(layout) if not key.endswith(".k_score")]
    assert keys == list(BASE_SHAPES[architecture].items())
    k_scores = [key for key, *_ in unprefixed(layout) if key.endswith(".k_score")]
    assert len(k_scores) == (21 if architecture == "resnet18" else 16) * (ap_key == "HARP_Zhao2023Holistic")


def test_radmm_and_twinrep_vgg16_differ_only_by_conv_biases():
    radmm = dict((key, shape) for key, shape, _ in unprefixed(load_layout(LAYOUT_DIR / "RADMM_Ye2019Adversarial__vgg16.json")))
    twinrep = dict((key, shape) for key, shape, _ in unprefixed(load_layout(LAYOUT_DIR / "TwinRep_Li2023Learning__vgg16.json")))
    conv_biases = {key for key, shape in radmm.items() if key.endswith(".bias") and len(radmm[key[:-4] + "weight"]) == 4}
    assert len(conv_biases) == 13 and set(radmm) - set(twinrep) == conv_biases and set(twinrep) <= set(radmm)
    assert radmm["classifier.weight"] == [10, 512]
    pools = [m for m in REFERENCE_MODULES["CifarVGG16"](conv_bias=False).modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 5


def test_twinrep_structured_entries_prune_filters_not_channels():
    for architecture in ("resnet18", "vgg16"):
        layout = load_layout(LAYOUT_DIR / f"TwinRep_Li2023Learning__{architecture}.json")
        assert layout["structures"] == ["weights", "filters"] and layout["pruning"]["granularity"]["filters"] == "filters"


def test_pwoa_alternative_upstream_head_matches_its_description():
    layout = load_layout(LAYOUT_DIR / "PwoA_Jian2022Pruning__vgg16.json")
    (alternative,) = layout["alternative_layouts"]
    upstream = PwoAVGG16(**alternative["reference_kwargs"])
    assert sum(p.numel() for p in upstream.parameters()) == 33_663_050 and len(upstream.state_dict()) == 107
    assert upstream.state_dict()["layer6.0.weight"].shape == (4096, 512) and "layer6.1.running_var" in upstream.state_dict()
    assert upstream.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("layer", [
    lambda: ScoredConv2d(16, 32, 3, padding=1, bias=False, scores="popup_scores"),
    lambda: ScoredLinear(64, 10, scores="popup_scores"),
], ids=["conv", "linear"])
def test_subnet_forward_equals_the_folded_forward(layer):
    # HYDRA's subnet_to_dense folds weight * top-k(|popup_scores|) per layer; the folded file must compute the
    # same function as the subnet layer that carries the scores (the reference models use these layers).
    torch.manual_seed(0)
    subnet = layer()
    set_keep_fraction(subnet, 0.1)
    folded_weight = subnet.weight * top_fraction_mask(subnet.popup_scores.abs(), 0.1)
    assert float((folded_weight == 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    if isinstance(subnet, ScoredConv2d):
        inputs = torch.rand(2, 16, 8, 8)
        expected = torch.nn.functional.conv2d(inputs, folded_weight, None, padding=1)
    else:
        inputs = torch.rand(2, 64)
        expected = torch.nn.functional.linear(inputs, folded_weight, subnet.bias)
    torch.testing.assert_close(subnet(inputs), expected)


def test_harp_subnet_keep_rate_comes_from_k_score():
    model = CifarResNet18(scores="popup_scores+k_score").eval()
    set_keep_fraction(model, keep=0.1, k_min=0.01)
    with torch.no_grad():
        model.conv1.k_score.fill_(-50.0)  # sigmoid ~ 0: keep-rate k_min
    kept = model.conv1.effective_weight(torch.ones_like(model.conv1.weight)).mean()
    assert float(kept) == pytest.approx(0.01, abs=1 / model.conv1.weight.numel() + 1e-6)

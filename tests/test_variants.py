"""Architecture variants and key rules: the registry, the rules one by one, and the suggestions on refusal."""
from __future__ import annotations

import argparse
import io
import math

import pytest
import torch
import torch.nn.functional as F

from evaluator.checkpoint.compliance import check_compliance
from evaluator.errors import APBError
from evaluator.checkpoint.key_rules import top_scores_mask
from evaluator.checkpoint.load import build_checked_model, load_state_dict
from evaluator.repository.manifest import NormalizationBuffers, manifest_problems
from evaluator.repository.schema import load_schema
from evaluator.untrusted.safeio import parse_yaml_text
from evaluator.registry.variants import architectures, build_variant, variant_names, variants
from tests.support.entries import make_entry


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def state_of(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return dict(build_variant(variant).state_dict())


def test_every_variant_builds_and_maps_32x32_images_to_its_logits():
    assert {name for family in architectures() for name in variant_names(family)} == set(variants())
    for name in variants():
        model = build_variant(name, 10).eval()
        with torch.inference_mode():
            assert model(torch.rand(2, 3, 32, 32)).shape == (2, variants()[name].outputs(10)), name
        assert variants()[name].family in architectures() and variants()[name].source


def test_the_dataset_class_count_sizes_the_head_unless_the_variant_overrides_it():
    with torch.inference_mode():
        assert build_variant("vgg16", 7).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 7)
        assert build_variant("resnet18-head100", 7).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 100)
    assert variants()["resnet18"].outputs(7) == 7 and variants()["resnet18-head100"].outputs(7) == 100


def test_the_manifest_schema_takes_exactly_the_registered_variants():
    assert load_schema("manifest")["$defs"]["variant"]["enum"] == list(variants())


def manifest_text(variant: str, architecture: str = "resnet18") -> str:
    return (f"schema_version: 1\nap_key: Demo_Doe2024Demo\nmodels:\n  - architecture: {architecture}\n"
            f"    variant: {variant}\n    dataset: CIFAR10\n    structure: weights\n    sparsity: 90\n"
            f"    url: https://example.org/a.pt\n    sha256: '{'0' * 64}'\n    claimed: {{clean_accuracy: 10.0}}\n")


def problems_of(text: str) -> list[str]:
    data, lines = parse_yaml_text(text, "manifest.yaml")
    return [str(problem) for problem in manifest_problems(data, lines, "manifest.yaml")]


def test_validate_refuses_an_unknown_variant_and_one_of_the_other_family():
    assert problems_of(manifest_text("preact-resnet18")) == []
    wrong_family = problems_of(manifest_text("vgg16-cifar"))
    assert len(wrong_family) == 1 and "models[0].variant" in wrong_family[0] and "preact-resnet18" in wrong_family[0]
    unknown = problems_of(manifest_text("resnet50"))
    assert unknown and "variant" in unknown[0]


def test_a_preact_file_declared_as_the_base_resnet18_names_the_variant_that_fits():
    report = check_compliance(state_of("preact-resnet18"), "resnet18")
    assert not report.ok and "closest variant: preact-resnet18" in report.summary()
    assert "variant: preact-resnet18" in report.suggestion


def test_a_resnet_declared_as_vgg16_names_the_architecture_field():
    with pytest.raises(APBError, match=r"models\[0\]\.architecture: .*try architecture: resnet18"):
        build_checked_model(make_entry(architecture="vgg16"), state_of("resnet18"))


def test_a_dataparallel_prefix_is_suggested_as_strip_prefix():
    wrapped = {f"module.{key}": value for key, value in state_of("resnet18").items()}
    assert "strip_prefix: 'module.'" in check_compliance(wrapped, "resnet18").suggestion


def test_a_file_that_fits_no_variant_names_the_closest_and_the_keys_that_differ():
    state = state_of("resnet18")
    state["extra_head.weight"] = torch.zeros(10, 512)
    del state["linear.weight"]
    report = check_compliance(state, "resnet18")
    text = report.summary()
    assert "missing ('linear.weight')" in text and "unexpected ('extra_head.weight')" in text
    assert "closest variant: resnet18" in text


def test_scores_and_normalization_tensors_are_suggested_as_rules():
    state = state_of("subnet-resnet18")
    state["conv1.scores"] = torch.randn(64, 3, 3, 3)
    state["normalize.mean"] = torch.zeros(3)
    hint = check_compliance(state, "subnet-resnet18").suggestion
    assert "masks: popup-scores" in hint and "normalization_buffers for normalize.mean" in hint


# ----------------------------------------------------------------------------------------------- rules

def test_popup_scores_keep_the_top_abs_scores_of_each_layer_by_edge_popups_count():
    scores = torch.tensor([0.5, -3.0, 0.1, 2.0, -0.2, 1.0, 0.0, -0.05, 0.3, 0.7])
    mask = top_scores_mask(scores, keep=0.1)
    assert mask.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # the one largest abs(score) survives
    big = torch.randn(64, 64, 3, 3)
    for keep in (0.1, 0.05, 0.01):
        assert int(top_scores_mask(big, keep).sum()) == big.numel() - int((1 - keep) * big.numel())


def test_the_top_scores_mask_is_edge_popups_stable_sort_rule_even_with_ties():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        scores = torch.randint(-4, 5, (int(torch.randint(1, 300, (1,), generator=generator)),),
                               generator=generator).float()  # many ties
        for keep in (0.01, 0.1, 0.5, 0.99):
            flat = scores.abs()
            expected = torch.ones_like(flat)
            expected[flat.sort(stable=True).indices[: int((1 - keep) * flat.numel())]] = 0
            assert torch.equal(top_scores_mask(scores, keep), expected)


def test_popup_scores_fold_into_the_weights_with_the_claimed_sparsity():
    state = state_of("subnet-resnet18")
    dense = {key: value.clone() for key, value in state.items()}
    scored = {}
    for key, value in dense.items():
        scored[key] = value
        if key.endswith("weight") and value.dim() == 4:
            scored[key[: -len("weight")] + "scores"] = torch.randn(value.shape)
    entry = make_entry(variant="subnet-resnet18", masks="popup-scores", keep_ratios="uniform", sparsity=95)
    folded = load_state_dict(saved(scored), entry)
    assert "conv1.scores" not in folded and set(folded) == set(dense)
    conv = folded["layer1.0.conv1.weight"]
    assert int((conv != 0).sum()) == conv.numel() - int(0.95 * conv.numel())


def test_softplus_masks_multiply_weights_and_biases():
    state = state_of("resnet18")
    masked = dict(state)
    masked["conv1.mask_weight"] = torch.full((64, 3, 3, 3), 0.3)
    masked["linear.mask_weight"] = torch.full((10, 512), math.log(math.e - 1))
    masked["linear.mask_bias"] = torch.full((10,), -1.0)
    folded = load_state_dict(saved(masked), make_entry(masks="softplus"))
    assert torch.allclose(folded["conv1.weight"], state["conv1.weight"] * F.softplus(torch.tensor(0.3)))
    assert torch.allclose(folded["linear.weight"], state["linear.weight"])
    assert torch.allclose(folded["linear.bias"], state["linear.bias"] * F.softplus(torch.tensor(-1.0)))
    assert not any("mask_" in key for key in folded)


def test_normalization_buffers_must_equal_the_declared_normalization():
    state = state_of("preact-resnet18")
    state["normalize.mean"] = torch.tensor([0.4914, 0.4822, 0.4465])
    state["normalize.std"] = torch.tensor([0.2470, 0.2435, 0.2616])
    buffers = NormalizationBuffers("normalize.mean", "normalize.std")
    good = make_entry(variant="preact-resnet18", normalization_buffers=buffers,
                      normalization={"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]})
    assert "normalize.mean" not in load_state_dict(saved(state), good)
    wrong = make_entry(variant="preact-resnet18", normalization_buffers=buffers,
                       normalization={"mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]})
    with pytest.raises(APBError, match=r"models\[0\]\.normalization: .*'normalize\.std' is \[0\.247"):
        load_state_dict(saved(state), wrong)
    with pytest.raises(APBError, match="normalization_buffers needs the normalization field"):
        load_state_dict(saved(state), make_entry(variant="preact-resnet18", normalization_buffers=buffers))


def test_rename_prefixes_and_unused_tensors():
    state = {key.replace("features.", "feature."): value for key, value in state_of("vgg16-avgpool").items()}
    state["feature.0.k_score"] = torch.tensor(0.5)
    entry = make_entry(architecture="vgg16", variant="vgg16-avgpool", rename_prefixes=(("feature.", "features."),),
                       unused_tensors=("k_score",))
    assert set(load_state_dict(saved(state), entry)) == set(state_of("vgg16-avgpool"))
    with pytest.raises(APBError, match=r"rename_prefixes: 'feat\.' match no key"):
        load_state_dict(saved(state), make_entry(rename_prefixes=(("feat.", "features."),)))


def test_argparse_namespace_loads_only_when_the_entry_allows_it():
    checkpoint = saved({"net": state_of("resnet18"), "args": argparse.Namespace(lr=0.1, arch="resnet")})
    with pytest.raises(APBError, match="refused to load"):
        load_state_dict(checkpoint, make_entry(state_dict_key="net"))
    state = load_state_dict(checkpoint, make_entry(state_dict_key="net", allowed_globals=("argparse.Namespace",)))
    assert set(state) == set(state_of("resnet18"))
    with pytest.raises(APBError, match="closed list"):
        load_state_dict(checkpoint, make_entry(state_dict_key="net", allowed_globals=("os.system",)))

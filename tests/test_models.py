"""Base architectures: state-dict keys and shapes pinned to the original benchmark, forward passes, wrapper."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evaluator.models import Normalized
from evaluator.registry.variants import build_model

SHAPES = json.loads((Path(__file__).parent / "data" / "base_model_state_dict_shapes.json").read_text())


@pytest.mark.parametrize("architecture", ["resnet18", "vgg16"])
def test_state_dict_keys_and_shapes_equal_the_original_base_models(architecture):
    # tests/data/base_model_state_dict_shapes.json was generated from the original repository's
    # models/base_resnet18.py and models/base_vgg16.py (see its _source); order matters for the published
    # checkpoints only through the names, but equal order also shows the module structure is the same.
    ours = [(key, list(value.shape)) for key, value in build_model(architecture).state_dict().items()]
    assert ours == list(SHAPES[architecture].items())


def test_pinned_facts_from_the_original_definitions():
    resnet, vgg = SHAPES["resnet18"], SHAPES["vgg16"]
    assert resnet["conv1.weight"] == [64, 3, 3, 3] and resnet["linear.weight"] == [10, 512]
    assert resnet["layer2.0.shortcut.0.weight"] == [128, 64, 1, 1] and "layer1.0.shortcut.0.weight" not in resnet
    assert resnet["layer2.0.shortcut.1.running_var"] == [128]
    convs = [key for key, shape in vgg.items() if key.startswith("features") and len(shape) == 4]
    assert len(convs) == 13 and not any(key.endswith(".bias") and len(vgg[key.replace("bias", "weight")]) == 4
                                        for key in vgg)
    assert [vgg[f"classifier.{i}.weight"] for i in (0, 2, 4)] == [[256, 2048], [256, 256], [10, 256]]


@pytest.mark.parametrize("architecture", ["resnet18", "vgg16"])
def test_forward_gives_ten_logits_per_32x32_image(architecture):
    torch.manual_seed(0)
    model = build_model(architecture).eval()
    with torch.inference_mode():
        logits = model(torch.rand(3, 3, 32, 32))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_normalized_wrapper_applies_mean_and_std_and_keeps_the_state_dict():
    torch.manual_seed(0)
    inner = build_model("resnet18").eval()
    wrapped = Normalized(build_model("resnet18"), [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]).eval()
    wrapped.model.load_state_dict(inner.state_dict())
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    with torch.inference_mode():
        assert torch.allclose(wrapped(x), inner((x - mean) / std), atol=1e-6)
    assert isinstance(wrapped, Normalized)
    assert list(wrapped.state_dict()) == [f"model.{key}" for key in inner.state_dict()]


def test_build_model_rejects_unknown_architectures_and_bad_statistics():
    with pytest.raises(ValueError, match="resnet50"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="positive"):
        Normalized(build_model("vgg16"), [0.5] * 3, [0.0, 1.0, 1.0])

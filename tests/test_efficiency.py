"""Efficiency figures on models whose counts are known by hand: VGG16 (the benchmark's layout, counted from its
published shape table below, not from the model code) dense, with half its filters zeroed, with half its
input channels zeroed, and unstructured; ResNet18's dense MACs; and the forward pass leaves the model as it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from evaluator.run.efficiency import effective_macs, efficiency_summary, efficiency_text, measure_efficiency
from evaluator.models import Normalized
from evaluator.registry.variants import build_model

# VGG16 of the benchmark on 32x32 inputs: (in channels, out channels, output height * width) of its 13 3x3 convs
# (no bias, each followed by BatchNorm), then a 2048-256-256-10 classifier (with biases).
VGG16_CONVS = [(3, 64, 32 * 32), (64, 64, 32 * 32), (64, 128, 16 * 16), (128, 128, 16 * 16),
               (128, 256, 8 * 8), (256, 256, 8 * 8), (256, 256, 8 * 8),
               (256, 512, 4 * 4), (512, 512, 4 * 4), (512, 512, 4 * 4),
               (512, 512, 2 * 2), (512, 512, 2 * 2), (512, 512, 2 * 2)]
VGG16_LINEAR = [(2048, 256), (256, 256), (256, 10)]
LINEAR_MACS = sum(i * o for i, o in VGG16_LINEAR)
VGG16_PARAMS = (sum(i * o * 9 + 2 * o for i, o, _ in VGG16_CONVS)  # conv weights + BatchNorm weight and bias
                + sum(i * o + o for i, o in VGG16_LINEAR))  # Linear weights and biases
BATCHNORM_BIASES = sum(o for _, o, _ in VGG16_CONVS)  # initialised to exactly zero


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.fixture
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return build_model("vgg16")


def test_dense_vgg16_counts_equal_the_hand_counts(vgg16):
    figures = measure_efficiency(vgg16, (3, 32, 32))
    dense = sum(i * o * 9 * hw for i, o, hw in VGG16_CONVS) + LINEAR_MACS
    assert dense == 313_196_544 + 592_384  # 313.2M conv MACs: the figure usually quoted for CIFAR VGG16
    assert (figures.params_total, figures.params_nonzero) == (VGG16_PARAMS, VGG16_PARAMS - BATCHNORM_BIASES)
    assert figures.macs_dense == figures.macs_nonzero == figures.macs_structured == dense


def test_vgg16_with_half_its_filters_zeroed(vgg16):
    with torch.no_grad():
        for conv in convs(vgg16):
            conv.weight[: conv.out_channels // 2] = 0
    figures = measure_efficiency(vgg16, (3, 32, 32)).to_dict("S")
    zeroed = sum((o // 2) * i * 9 for i, o, _ in VGG16_CONVS)
    half = sum(i * (o // 2) * 9 * hw for i, o, hw in VGG16_CONVS) + LINEAR_MACS
    assert figures["params_total"] == VGG16_PARAMS and figures["params_nonzero"] == VGG16_PARAMS - BATCHNORM_BIASES - zeroed
    assert figures["macs_structured"] == figures["macs_nonzero"] == figures["macs_effective"] == half
    assert figures["macs_dense"] == sum(i * o * 9 * hw for i, o, hw in VGG16_CONVS) + LINEAR_MACS
    assert figures["macs_effective"] / figures["macs_dense"] == pytest.approx(0.5, abs=0.002)


def test_vgg16_with_half_its_input_channels_zeroed_and_filters_of_another_layer(vgg16):
    layers = convs(vgg16)
    with torch.no_grad():
        for conv in layers[1:]:
            conv.weight[:, : conv.in_channels // 2] = 0
        layers[0].weight[:16] = 0  # 16 of the first conv's 64 filters
    figures = measure_efficiency(vgg16, (3, 32, 32))
    first = (64 - 16) * 3 * 9 * 1024
    rest = sum(o * (i - i // 2) * 9 * hw for i, o, hw in VGG16_CONVS[1:])
    assert figures.macs_structured == first + rest + LINEAR_MACS
    assert figures.macs_nonzero == figures.macs_structured  # nothing else is zero


def test_unstructured_pruning_counts_each_non_zero_weight_at_each_position(vgg16):
    generator = torch.Generator().manual_seed(1)
    expected = LINEAR_MACS
    with torch.no_grad():
        for conv, (_, _, hw) in zip(convs(vgg16), VGG16_CONVS):
            keep = torch.rand(conv.weight.shape, generator=generator) < 0.1
            conv.weight.mul_(keep)
            expected += int(keep.sum()) * hw
    figures = measure_efficiency(vgg16, (3, 32, 32)).to_dict("US")
    assert figures["macs_nonzero"] == figures["macs_effective"] == expected
    # random zeros leave (almost) no whole filter or channel: structured pruning's rule saves next to nothing
    assert figures["macs_nonzero"] < 0.11 * figures["macs_dense"] < figures["macs_structured"] <= figures["macs_dense"]
    assert effective_macs(figures, "S") == figures["macs_structured"]
    with pytest.raises(ValueError, match="structure kind 'X'"):
        effective_macs(figures, "X")


def test_resnet18_dense_macs_and_the_check_summary():
    torch.manual_seed(0)
    model = Normalized(build_model("resnet18"), [0.5] * 3, [0.25] * 3)
    model.train()
    running = [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    summary = efficiency_summary(model, "filters", (3, 32, 32))
    # ResNet18 for CIFAR: 555.4M conv MACs + a 512x10 Linear (the usual 0.56 GMAC), 11,173,962 parameters
    assert summary["macs_dense"] == 555_417_600 + 5120 and summary["params_total"] == 11_173_962
    assert summary["structure_kind"] == "S" and summary["macs_effective"] == summary["macs_structured"]
    assert model.training  # the mode is restored and BatchNorm statistics are unchanged
    assert all(torch.equal(a, m.running_mean) for a, m in
               zip(running, [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]))
    assert efficiency_text(summary).startswith(f"efficiency  params {summary['params_nonzero']:,} non-zero of "
                                               "11,173,962; MACs per input 555,422,720 effective (100.0% of dense)")

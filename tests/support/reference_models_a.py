"""Reference modules for the checkpoint layouts of RADMM, TwinRep, PwoA, HYDRA and HARP (issue 9).

Written for the tests from the authors' architecture descriptions (layer lists, channel counts, which layers
carry a bias, the names the authors give their submodules); nothing here imports ``evaluator``. Each module's
``state_dict()`` has the same keys, order and shapes as the state dict inside the checkpoint file once a
wrapper prefix (``module.basic_model.`` for RADMM) is removed: see tests/data/ap_layouts/*.json.

Pruning enters the forward the way the authors' code applies it:

* ``scores="none"``: the file stores the pruned weights themselves (zeros in the weight); the forward is the
  plain convolution. RADMM and PwoA zero weights in place; TwinRep, HYDRA and HARP fold their masks/scores
  into the weight before saving ("dense" checkpoints).
* ``scores="k_score"``: HARP's dense checkpoint: the weight is already folded, and each conv/linear still
  carries its learned 0-d rate parameter ``k_score`` (unused by the dense forward).
* ``scores="popup_scores"``: HYDRA's subnet checkpoint (``model_best.pth.tar``, not the dense one): the
  kept set of each layer is the top ``keep`` fraction of ``abs(popup_scores)``; the weight is dense.
* ``scores="popup_scores+k_score"``: HARP's subnet checkpoint: as above, with the kept fraction
  ``sigmoid(k_score) * (1 - k_min) + k_min`` per layer (``k_min = k * alpha`` from the training arguments).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Scores = Literal["none", "k_score", "popup_scores", "popup_scores+k_score"]
SCORE_KINDS: tuple[str, ...] = ("none", "k_score", "popup_scores", "popup_scores+k_score")


def top_fraction_mask(scores: torch.Tensor, keep: float | torch.Tensor) -> torch.Tensor:
    """0/1 mask keeping the ``keep`` fraction of largest entries of ``scores``: the lowest
    ``int((1 - keep) * numel)`` entries (by an ascending sort; ties in any order) are zero, as in HYDRA/HARP's
    GetSubnet and subnet_to_dense."""
    flat = scores.flatten()
    dropped = int((1 - keep) * flat.numel())
    order = torch.sort(flat).indices
    mask = torch.ones_like(flat)
    mask[order[:dropped]] = 0
    return mask.view_as(scores)


class _ScoredLayer:
    """Mixin for the per-layer score tensors of the edge-popup layers (HYDRA, HARP)."""

    scores_kind: str
    keep: float = 1.0
    k_min: float = 0.0

    def _add_scores(self, weight_shape: torch.Size, scores: Scores) -> None:
        if scores not in SCORE_KINDS:
            raise ValueError(f"scores must be one of {SCORE_KINDS}, not {scores!r}")
        self.scores_kind = scores
        if scores.startswith("popup_scores"):
            self.popup_scores = nn.Parameter(torch.empty(weight_shape))
            nn.init.kaiming_uniform_(self.popup_scores, a=math.sqrt(5))
        if scores.endswith("k_score"):
            self.k_score = nn.Parameter(torch.ones(()))

    def effective_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight the author's forward multiplies in: masked by the top-k of ``abs(popup_scores)``."""
        if not self.scores_kind.startswith("popup_scores"):
            return weight
        keep: float | torch.Tensor = self.keep
        if self.scores_kind == "popup_scores+k_score":
            keep = torch.sigmoid(self.k_score) * (1 - self.k_min) + self.k_min
        return weight * top_fraction_mask(self.popup_scores.abs(), keep)


class ScoredConv2d(nn.Conv2d, _ScoredLayer):
    """``nn.Conv2d`` whose state dict adds the score tensors of ``scores`` after its weight (and bias)."""

    def __init__(self, *args: object, scores: Scores = "none", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._add_scores(self.weight.shape, scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(self.weight), self.bias)


class ScoredLinear(nn.Linear, _ScoredLayer):
    """``nn.Linear`` (always with bias, as the authors' layers) plus the score tensors of ``scores``."""

    def __init__(self, in_features: int, out_features: int, scores: Scores = "none") -> None:
        super().__init__(in_features, out_features, bias=True)
        self._add_scores(self.weight.shape, scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(self.weight), self.bias)


def set_keep_fraction(model: nn.Module, keep: float, k_min: float = 0.0) -> None:
    """Set the kept fraction (HYDRA's ``--k``) and HARP's lower bound ``k_min`` on every scored layer."""
    for module in model.modules():
        if isinstance(module, _ScoredLayer):
            module.keep, module.k_min = keep, k_min


# ---------------------------------------------------------------------------------------------- ResNet18
class CifarBasicBlock(nn.Module):
    """Two 3x3 convs (no bias) with BatchNorm; a 1x1 conv + BatchNorm shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int, scores: Scores) -> None:
        super().__init__()
        self.conv1 = ScoredConv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False, scores=scores)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = ScoredConv2d(planes, planes, 3, stride=1, padding=1, bias=False, scores=scores)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                ScoredConv2d(in_planes, planes, 1, stride=stride, bias=False, scores=scores), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """The CIFAR ResNet18 all five APs train (the kuangliu/pytorch-cifar layout): 3x3 stem conv (stride 1,
    no max-pool), four stages of two BasicBlocks (64, 128, 256, 512), 4x4 average pool, ``linear`` 512->10.

    TwinRep writes the pool as ``AdaptiveAvgPool2d(1)`` (no parameters; equal on 32x32 inputs); PwoA's
    forward also returns the block outputs (``rob=False``), which this reference leaves out.
    """

    def __init__(self, num_classes: int = 10, scores: Scores = "none") -> None:
        super().__init__()
        self.conv1 = ScoredConv2d(3, 64, 3, stride=1, padding=1, bias=False, scores=scores)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for index, (planes, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
            blocks = [CifarBasicBlock(in_planes, planes, stride, scores), CifarBasicBlock(planes, planes, 1, scores)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            in_planes = planes
        self.linear = ScoredLinear(512, num_classes, scores=scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = stage(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# ------------------------------------------------------------------------------------------------- VGG16
VGG16_CONVS_AND_POOLS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def conv_bn_relu_features(
    plan: tuple[int | str, ...], conv_bias: bool, scores: Scores = "none", trailing: list[nn.Module] | None = None
) -> nn.Sequential:
    """``features`` as one flat Sequential: each conv as (conv 3x3 pad 1, BatchNorm2d, ReLU), each "M" a 2x2
    max-pool; ``trailing`` modules (parameter-free) are appended at the end."""
    layers: list[nn.Module] = []
    channels = 3
    for step in plan:
        if step == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        assert isinstance(step, int)
        layers += [ScoredConv2d(channels, step, 3, padding=1, bias=conv_bias, scores=scores), nn.BatchNorm2d(step),
                   nn.ReLU()]
        channels = step
    return nn.Sequential(*layers, *(trailing or []))


class CifarVGG16(nn.Module):
    """The "CIFAR" VGG16 of RADMM (yeshaokai/Robustness-Aware-Pruning-ADMM models/vgg.py ``VGG('vgg16')``)
    and TwinRep (UCAS-LCH/Twin-Rep models/vgg.py ``vgg16``): 13 convs each followed by BatchNorm2d and ReLU,
    five 2x2 max-pools (the last one leaves 1x1), a parameter-free ``AvgPool2d(1, 1)``, flatten, and one
    ``classifier`` Linear 512->10. RADMM's convs have a bias (``nn.Conv2d`` default), TwinRep's do not
    (``bias=False`` default of its ``vgg16``).
    """

    def __init__(self, conv_bias: bool, num_classes: int = 10) -> None:
        super().__init__()
        self.features = conv_bn_relu_features(VGG16_CONVS_AND_POOLS, conv_bias, trailing=[nn.AvgPool2d(1, 1)])
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class HydraVGG16(nn.Module):
    """``vgg16_bn`` of HYDRA (inspire-group/hydra models/vgg_cifar.py) and HARP (intellisec/harp, same file),
    which is also the original benchmark's base VGG16: 13 convs without bias + BatchNorm2d + ReLU, only four
    max-pools (no pool after the last three convs), ``avgpool`` AdaptiveAvgPool2d(2x2), and a ``classifier``
    Sequential(Linear 2048->256, ReLU, Linear 256->256, ReLU, Linear 256->10) (keys classifier.0/.2/.4).
    """

    def __init__(self, num_classes: int = 10, scores: Scores = "none") -> None:
        super().__init__()
        self.features = conv_bn_relu_features(VGG16_CONVS_AND_POOLS[:-1], conv_bias=False, scores=scores)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            ScoredLinear(2048, 256, scores=scores), nn.ReLU(),
            ScoredLinear(256, 256, scores=scores), nn.ReLU(),
            ScoredLinear(256, num_classes, scores=scores),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


PwoAHead = Literal["benchmark", "upstream"]


class PwoAVGG16(nn.Module):
    """PwoA's VGG16 (neu-spiral/PwoA source/hsicbt/model/vgg.py ``VGG16``): five blocks ``layer1``..``layer5``,
    each a Sequential of (Sequential(Conv2d 3x3 pad 1 WITH bias, BatchNorm2d, ReLU)) per conv and a final pool;
    fully connected ``layer6``, ``layer7`` (Sequential(Linear, [BatchNorm1d,] ReLU)) and ``layer8`` Linear.

    ``head="benchmark"``: the variant of the original benchmark's models/pwoa.py: ``layer5`` ends in
    AdaptiveAvgPool2d(2x2) instead of a max-pool, layer6 Linear 2048->256, layer7 256->256, no BatchNorm1d,
    layer8 256->10. ``head="upstream"``: PwoA's own repository: ``layer5`` ends in a max-pool (1x1 output),
    layer6 Linear 512->4096 + BatchNorm1d, layer7 4096->4096 + BatchNorm1d, layer8 4096->10.
    """

    def __init__(self, head: PwoAHead = "benchmark", num_classes: int = 10) -> None:
        super().__init__()
        if head not in ("benchmark", "upstream"):
            raise ValueError(f"head must be 'benchmark' or 'upstream', not {head!r}")
        blocks = [(3, 64, 64), (64, 128, 128), (128, 256, 256, 256), (256, 512, 512, 512), (512, 512, 512, 512)]
        for index, widths in enumerate(blocks, start=1):
            convs: list[nn.Module] = [
                nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
                for cin, cout in zip(widths[:-1], widths[1:])
            ]
            last = index == len(blocks)
            pool: nn.Module = nn.AdaptiveAvgPool2d((2, 2)) if last and head == "benchmark" else nn.MaxPool2d(2, 2)
            setattr(self, f"layer{index}", nn.Sequential(*convs, pool))
        hidden, flat = (256, 2048) if head == "benchmark" else (4096, 512)

        def fully_connected(size_in: int, size_out: int) -> nn.Sequential:
            norm: list[nn.Module] = [nn.BatchNorm1d(size_out)] if head == "upstream" else []
            return nn.Sequential(nn.Linear(size_in, size_out), *norm, nn.ReLU())

        self.layer6 = fully_connected(flat, hidden)
        self.layer7 = fully_connected(hidden, hidden)
        self.layer8 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for block in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            out = block(out)
        return self.layer8(self.layer7(self.layer6(out.flatten(1))))


REFERENCE_MODULES: dict[str, type[nn.Module]] = {
    "CifarResNet18": CifarResNet18,
    "CifarVGG16": CifarVGG16,
    "HydraVGG16": HydraVGG16,
    "PwoAVGG16": PwoAVGG16,
}

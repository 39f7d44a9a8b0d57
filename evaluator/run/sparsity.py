"""Sparsity of a model's weights, measured per layer and pooled, and compared with the entry's claim (the
manifest schema's ``x-sparsity-tolerance``): part of ``apb check`` (check.py) and of ``apb prepare``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, cast

import torch
from torch import nn

from evaluator.models import Normalized
from evaluator.registry.model_keys import STRUCTURE_KINDS, STRUCTURED

COUNTED_LAYERS = (
    "weights: every Conv2d weight tensor, including the first conv (3 input channels) and the 1x1 shortcut convs "
    "of ResNet18; biases and BatchNorm are not counted, and neither are Linear layers (they are listed per layer): "
    "the classifier heads differ between variants of one architecture (Linear 512->10, 2048-256-256-10, a 1x1 "
    "conv) and several APs never prune them, while the convolutional feature extractor is what every variant "
    "shares and holds almost all weights. "
    "filters: output filters of every Conv2d, including the first conv and the shortcut convs; Linear layers "
    "are not counted. channels: input channels of every Conv2d, including the first conv's 3 image channels; "
    "Linear layers are not counted. Each figure is zero weights (or all-zero filters, channels) over all "
    "counted ones, pooled over layers."
)




def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass
class LayerSparsity:
    """Zero counts of one Conv2d or Linear weight; filters and channels are None for Linear layers."""

    name: str
    kind: str  # conv | linear
    shape: list[int]
    weights: int
    zero_weights: int
    filters: int | None = None
    zero_filters: int | None = None
    channels: int | None = None
    zero_channels: int | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SparsityReport:
    """Measured sparsity (percent) of the loaded weights, compared with the claim for the entry's structure."""

    structure: str  # weights | filters | channels
    claimed: float | None
    weights: float
    filters: float
    channels: float
    layers: list[LayerSparsity]
    counted_layers: str = COUNTED_LAYERS

    @property
    def measured(self) -> float:
        """The figure that is compared with the claim: the one named by the structure."""
        return float(getattr(self, self.structure))

    @property
    def window(self) -> tuple[float, float] | None:
        """The measured sparsities that match the claim (:func:`sparsity_window`)."""
        return None if self.claimed is None else sparsity_window(self.structure, self.claimed)

    @property
    def ok(self) -> bool:
        window = self.window
        return window is None or window[0] <= self.measured <= window[1]

    @property
    def message(self) -> str:
        window = self.window
        if window is None:
            return f"{self.structure} sparsity {self.measured:.2f}% (no claim to compare)"
        if self.ok:
            verdict = "matches"
        elif self.measured < window[0]:
            verdict = f"is below the accepted {window[0]:g}-{window[1]:g}% for"
        else:
            verdict = f"is above the accepted {window[0]:g}-{window[1]:g}% for"
        text = (f"measured {self.structure} sparsity {self.measured:.2f}% {verdict} the claimed "
                f"{self.claimed:g}%")
        if not self.ok:
            text += ("; the file is not pruned as the entry's `sparsity` says: fix `sparsity` (and the model key) "
                     "or prune to the claimed level (manifest schema, x-sparsity-tolerance, says why)")
        if not self.ok and self.measured < 1 and self.claimed:
            text += ("; the weights hold no pruning zeros: if the network masks them at run time "
                     "(torch.nn.utils.prune masks, edge-popup scores), the file must hold those masks or scores and "
                     "the entry state how they fold (`masks`, `keep_ratios`), or the file must hold the folded weights")
        if not self.ok and self.structure in STRUCTURED:
            other = next(name for name in STRUCTURED if name != self.structure)
            text += f" (measured {other} sparsity: {getattr(self, other):.2f}%)"
        return text

    def to_dict(self, layers: bool = True) -> dict:
        data = {"ok": self.ok, "structure": self.structure, "claimed": self.claimed,
                "measured": rounded(self.measured), "weights": rounded(self.weights),
                "filters": rounded(self.filters), "channels": rounded(self.channels),
                "tolerance_pp": _sparsity_tolerance()["below_pp"], "window": None if self.window is None else list(self.window),
                "message": self.message, "counted_layers": self.counted_layers}
        if layers:
            data["layers"] = [layer.to_dict() for layer in self.layers]
        return data

    def render_text(self, layers: bool = True) -> str:
        import textwrap

        from tabulate import tabulate

        counted = textwrap.fill(f"counted: {self.counted_layers}", 110, initial_indent="    ",
                                subsequent_indent="      ")
        head = (f"sparsity    {'ok' if self.ok else 'FAILED'}: {self.message}\n"
                f"    weights {self.weights:.2f}%, filters {self.filters:.2f}%, channels {self.channels:.2f}%\n"
                f"{counted}")
        if not layers:
            return head
        rows = [[layer.name, layer.kind, "x".join(map(str, layer.shape)), _percent(layer.zero_weights, layer.weights),
                 _percent(layer.zero_filters, layer.filters), _percent(layer.zero_channels, layer.channels)]
                for layer in self.layers]
        table = tabulate(rows, headers=["layer", "kind", "shape", "weights %", "filters %", "channels %"],
                         tablefmt="simple", disable_numparse=True)
        return head + "\n" + "\n".join("    " + line for line in table.splitlines())


def sparsity_window(structure: str, claimed: float) -> tuple[float, float]:
    """``(low, high)``: the measured sparsities (percent) that match *claimed* for *structure*, in both
    directions, as the manifest schema's ``x-sparsity-tolerance`` states (with the reasons): at most
    ``below_pp`` points less, and at most ``above_share_of_gap`` of the gap to the next sparsity level more."""
    from evaluator.repository.manifest import sparsities_for

    tolerance = _sparsity_tolerance()
    levels = [level for level in sparsities_for(structure) if level > claimed] + [100]
    above = tolerance["above_share_of_gap"] * (min(levels) - claimed)
    return round(claimed - tolerance["below_pp"], 6), round(min(100.0, claimed + above), 6)


def _sparsity_tolerance() -> dict:
    from evaluator.repository.schema import load_schema

    return load_schema("manifest")["x-sparsity-tolerance"]


def measure_sparsity(model: nn.Module, structure: str, claimed: float | None) -> SparsityReport:
    """Sparsity of *model*'s weights (a :class:`Normalized` wrapper is looked through), in percent.

    Counted layers (also stated in every report, see ``COUNTED_LAYERS``): ``weights`` = zero entries over all
    Conv2d weight tensors, the first conv included (Linear layers are listed but not counted: heads differ
    between variants); ``filters`` = all-zero output filters over all Conv2d layers (first conv included); ``channels`` = all-zero input channels over all Conv2d layers (the first conv's 3 image channels
    included). Biases and BatchNorm parameters never count. The claim is compared with the figure named by
    *structure*; a measurement outside :func:`sparsity_window` of it fails."""
    if structure not in STRUCTURE_KINDS:
        raise ValueError(f"structure {structure!r} is not one of {', '.join(STRUCTURE_KINDS)}")
    inner = model.model if isinstance(model, Normalized) else model
    layers = [_layer_sparsity(name, module) for name, module in inner.named_modules()
              if isinstance(module, (nn.Conv2d, nn.Linear))]
    convs = [layer for layer in layers if layer.kind == "conv"]
    return SparsityReport(
        structure, None if claimed is None else float(claimed),
        weights=_pooled(convs, "zero_weights", "weights"),
        filters=_pooled(convs, "zero_filters", "filters"),
        channels=_pooled(convs, "zero_channels", "channels"),
        layers=layers)


def _layer_sparsity(name: str, module: nn.Module) -> LayerSparsity:
    weight = cast(torch.Tensor, module.weight).detach()
    zero = weight == 0
    layer = LayerSparsity(name, "conv" if isinstance(module, nn.Conv2d) else "linear", list(weight.shape),
                          weight.numel(), int(zero.sum()))
    if layer.kind == "conv":
        layer.filters, layer.zero_filters = weight.shape[0], int(zero.flatten(1).all(1).sum())
        layer.channels, layer.zero_channels = weight.shape[1], int(zero.transpose(0, 1).flatten(1).all(1).sum())
    return layer


def _pooled(layers: Sequence[LayerSparsity], zeros: str, total: str) -> float:
    count = sum(getattr(layer, total) for layer in layers)
    return 100.0 * sum(getattr(layer, zeros) for layer in layers) / count if count else 0.0


def _percent(part: int | None, whole: int | None) -> str:
    return "-" if part is None or not whole else f"{100.0 * part / whole:.2f}"

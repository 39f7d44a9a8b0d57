"""What a pruned model costs: parameter counts and multiply-accumulates (MACs) per input, measured on the
loaded weights.

Counted per input of *input_shape* (e.g. ``(3, 32, 32)``), for every ``Conv2d`` and ``Linear`` layer (the
layers that hold the pruned weights; BatchNorm, ReLU, pooling and additions are not counted, nor are biases):

- ``macs_dense``: every weight times the output positions it is applied at (``H_out * W_out`` for a conv,
  1 for a Linear): what the unpruned architecture computes.
- ``macs_nonzero``: the same with only non-zero weights: what unstructured (US) pruning saves with a sparse
  kernel.
- ``macs_structured``: each layer shrunk by the filters (output channels) and input channels that are all zero
  in its own weight: what structured (S) pruning saves with dense kernels on a smaller network. A zero filter
  is not propagated into the next layer: after BatchNorm its output is a constant, not zero, so the next layer's
  matching channel is removed only where that layer's own weights are zero.
- ``macs_effective``: ``macs_nonzero`` for unstructured and ``macs_structured`` for structured pruning
  (:func:`effective_macs`).

``params_total`` counts every parameter of the model (weights, biases, BatchNorm affine parameters);
``params_nonzero`` those that are not exactly zero. Buffers (BatchNorm running statistics, normalization
constants) are not parameters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence, cast

import torch
from torch import nn

from evaluator.registry.model_keys import STRUCTURE_KIND_NAMES, STRUCTURE_KINDS


@dataclass(frozen=True)
class Efficiency:
    """Parameter counts and MACs per input of one model (see the module docstring for each figure)."""

    input_shape: tuple[int, ...]
    params_total: int
    params_nonzero: int
    macs_dense: int
    macs_nonzero: int
    macs_structured: int

    def to_dict(self, structure_kind: str | None = None) -> dict:
        """JSON-ready figures; with *structure_kind* (``US`` or ``S``) also ``macs_effective`` and its rule."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        if structure_kind is not None:
            data["structure_kind"] = structure_kind
            data["macs_effective"] = effective_macs(data, structure_kind)
        return data


def effective_macs(figures: dict, structure_kind: str) -> int:
    """The MACs that the model's pruning structure saves: non-zeros for US, shrunk layers for S."""
    if structure_kind not in STRUCTURE_KIND_NAMES:
        raise ValueError(f"structure kind {structure_kind!r} is not one of {', '.join(STRUCTURE_KIND_NAMES)}")
    return int(figures["macs_nonzero"] if structure_kind == "US" else figures["macs_structured"])


def _layer_macs(weight: torch.Tensor, positions: int) -> tuple[int, int, int]:
    """(dense, non-zero, structured) MACs of one layer whose weight is applied at *positions* places."""
    zero = weight == 0
    per_filter = zero.flatten(1)  # [out, in * kernel]
    live_filters = int((~per_filter.all(1)).sum())
    live_channels = int((~zero.transpose(0, 1).flatten(1).all(1)).sum())
    kernel = weight[0, 0].numel() if weight.dim() > 2 else 1
    dense = weight.numel() * positions
    nonzero = int((~zero).sum()) * positions
    structured = live_filters * live_channels * kernel * positions
    return dense, nonzero, structured


def measure_efficiency(model: nn.Module, input_shape: Sequence[int]) -> Efficiency:
    """Count the parameters and MACs of *model* on one input of *input_shape* (channels, height, width).

    One forward pass on a zero input (in eval mode, so BatchNorm statistics do not change) finds each layer's
    output size; the model's mode is restored afterwards."""
    shape = tuple(int(d) for d in input_shape)
    positions: dict[nn.Module, int] = {}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        channels = module.out_channels if isinstance(module, nn.Conv2d) else cast(nn.Linear, module).out_features
        positions[module] = positions.get(module, 0) + output.numel() // channels

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [layer.register_forward_hook(record) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    dense = nonzero = structured = 0
    for layer in layers:
        if layer not in positions:
            continue  # a layer the forward pass never reached costs nothing per input
        d, n, s = _layer_macs(layer.weight.detach(), positions[layer])
        dense, nonzero, structured = dense + d, nonzero + n, structured + s
    params = list(model.parameters())
    return Efficiency(shape, sum(p.numel() for p in params), sum(int(torch.count_nonzero(p)) for p in params),
                      dense, nonzero, structured)


def efficiency_summary(model: nn.Module, structure: str, input_shape: Sequence[int]) -> dict:
    """What ``apb check`` stores: the figures of :func:`measure_efficiency` plus ``macs_effective`` for the
    manifest's *structure* (``weights`` -> US, ``filters``/``channels`` -> S)."""
    return measure_efficiency(model, input_shape).to_dict(STRUCTURE_KINDS[structure])


def efficiency_text(figures: dict) -> str:
    """One line of ``apb check`` output: parameters and MACs, effective MACs as a share of dense."""
    dense, effective = figures["macs_dense"], figures.get("macs_effective", figures["macs_dense"])
    share = f" ({100.0 * effective / dense:.1f}% of dense)" if dense else ""
    return (f"efficiency  params {figures['params_nonzero']:,} non-zero of {figures['params_total']:,}; "
            f"MACs per input {effective:,} effective{share}, {dense:,} dense")

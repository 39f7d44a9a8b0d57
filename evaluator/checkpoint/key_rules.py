"""Key rules: from the object a checkpoint file holds to the state dict of the declared variant.

Every rule is a manifest field with a closed vocabulary (``evaluator/schemas/manifest.schema.json``), applied in
this order by :func:`apply_key_rules`:

1. ``state_dict_key`` — the dotted path of the tensor mapping inside the loaded object;
2. ``strip_prefix`` — one key prefix removed from every key that has it (``module.`` of DataParallel);
3. ``rename_prefixes`` — ``[{from: a., to: b.}]``: a key starting with ``a.`` starts with ``b.`` instead;
4. ``normalization_buffers`` — ``{mean: <key>, std: <key>}``: tensors that hold the input normalization; their
   values must equal the entry's ``normalization`` (which the evaluator applies), then they are dropped;
5. ``unused_tensors`` — names (the last part of a key, e.g. ``k_score``) of tensors the evaluated network does
   not use, such as a per-layer learned pruning rate stored beside folded weights; dropped where present;
6. ``masks`` — how pruning masks are folded into the weights that are evaluated, only by a rule the entry
   states (a file holding masks or scores under no rule, or ``none``, is refused: apb never guesses a fold):
   ``none`` (the zeros are in the weights), ``orig-mask`` (``<name>_orig`` * ``<name>_mask``,
   ``torch.nn.utils.prune``), ``softplus`` (``<module>.mask_<param>``: ``<param>`` * softplus(mask)),
   ``popup-scores`` (edge-popup / HYDRA: ``<module>.scores`` or ``.popup_scores`` of the weight's shape; each
   layer keeps its ``n - int((1 - k) * n)`` weights of largest abs(score), ``k`` from ``keep_ratios``:
   ``uniform`` = ``(100 - sparsity) / 100`` in every layer, or the author's per-layer ratios).

The result must hold only finite tensors; it is then loaded strictly into the variant.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from evaluator.checkpoint.compliance import SCORE_NAMES
from evaluator.errors import APBError, Problem

if TYPE_CHECKING:
    from evaluator.repository.manifest import ModelEntry

MASK_RULES = ("none", "orig-mask", "softplus", "popup-scores")
MASK_TENSORS = {"orig-mask": "torch.nn.utils.prune <name>_orig / <name>_mask", "popup-scores": "edge-popup score",
                "softplus": "softplus mask_<param>"}
NORMALIZATION_ATOL = 1e-6


def entry_error(entry: ModelEntry, message: str, field: str | None = None) -> APBError:
    """An APBError pointing at a manifest entry: ``manifest.yaml:<line>: models[i].<field>: <model_key>: ...``."""
    where = f"models[{entry.index}]" + (f".{field}" if field else "")
    return APBError(Problem(str(entry.manifest_path), f"{entry.model_key}: {message}", entry.line, where))


def apply_key_rules(loaded: Any, entry: ModelEntry) -> dict[str, torch.Tensor]:
    """The entry's state dict from the deserialized checkpoint *loaded*, every declared rule applied."""
    state = tensor_mapping(select(loaded, entry.state_dict_key, entry), entry)
    state = strip_prefix(state, entry.strip_prefix, entry)
    state = rename_prefixes(state, entry.rename_prefixes, entry)
    state = drop_normalization_buffers(state, entry)
    state = drop_unused_tensors(state, entry.unused_tensors)
    state = fold_masks(state, entry)
    require_finite(state, entry)
    return state


def select(loaded: Any, dotted_key: str | None, entry: ModelEntry) -> Any:
    """The object at the dotted path *dotted_key* inside *loaded* (the object itself for None)."""
    if not dotted_key:
        return loaded
    current = loaded
    for depth, part in enumerate(dotted_key.split(".")):
        if not isinstance(current, Mapping) or part not in current:
            where = repr(".".join(dotted_key.split(".")[:depth])) if depth else "the checkpoint"
            found = sorted(str(key) for key in current)[:12] if isinstance(current, Mapping) else []
            hint = f"; {where} holds {found}" if found else f"; {where} is a {type(current).__name__}"
            raise entry_error(entry, f"state_dict_key {dotted_key!r}: {part!r} not found{hint}"
                                     f"{state_dict_key_fix(loaded)}", "state_dict_key")
        current = current[part]
    return current


def state_dict_key_fix(loaded: Any) -> str:
    """``; set state_dict_key: <where the weights are>`` (or null when the file itself is the state dict)."""
    located = locate_state_dict(loaded)
    if located is None:
        return ""
    if located == "":
        return ("; the file itself is the state dict: set state_dict_key: null in the entry (it may inherit "
                "another value from defaults)")
    return f"; the weights sit under {located!r}: set state_dict_key: {located}"


def locate_state_dict(loaded: Any, max_depth: int = 4) -> str | None:
    """The dotted path of the mapping inside *loaded* that holds the most tensors keyed by name ('' for
    *loaded* itself; None when there is none): where a training checkpoint such as ``{'state_dict': ...,
    'epoch': ...}`` or ``{'model': {'net': ...}}`` keeps its weights."""
    best: tuple[int, str] | None = None
    stack: list[tuple[Any, str, int]] = [(loaded, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if not isinstance(node, Mapping):
            continue
        tensors = sum(1 for key, value in node.items() if isinstance(key, str) and isinstance(value, torch.Tensor))
        if tensors and (best is None or tensors > best[0] or (tensors == best[0] and len(path) < len(best[1]))):
            best = (tensors, path)
        if depth < max_depth:
            stack.extend((value, f"{path}.{key}" if path else str(key), depth + 1) for key, value in node.items()
                         if isinstance(key, str) and isinstance(value, Mapping) and _dotted_part(key))
    return None if best is None else best[1]


def _dotted_part(key: str) -> bool:
    return bool(key) and "." not in key and (key[0].isalpha() or key[0] == "_") and key.replace("_", "a").isalnum()


def tensor_mapping(selected: Any, entry: ModelEntry) -> dict[str, torch.Tensor]:
    """*selected* as a ``str -> Tensor`` dict; anything else names the keys that would fix it."""
    if not isinstance(selected, Mapping):
        raise entry_error(entry, f"the state dict is a {type(selected).__name__}, not a mapping of parameter "
                                 "names to tensors; set state_dict_key to where the weights sit", "state_dict_key")
    if not selected:
        raise entry_error(entry, "the state dict is empty", "state_dict_key")
    bad = [f"{key!r} ({type(value).__name__})" for key, value in selected.items()
           if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        located = locate_state_dict(selected)
        fix = (f"set state_dict_key to {located!r} (relative to the current state_dict_key)" if located else
               "set state_dict_key to where the weights sit")
        raise entry_error(entry, f"{len(bad)} of {len(selected)} entries are not name -> tensor (e.g. "
                                 f"{', '.join(bad[:4])}): {fix}", "state_dict_key")
    return dict(selected)


def strip_prefix(state: dict[str, torch.Tensor], prefix: str | None, entry: ModelEntry) -> dict[str, torch.Tensor]:
    """*state* with *prefix* removed from every key that starts with it."""
    if not prefix:
        return state
    if not any(key.startswith(prefix) for key in state):
        from evaluator.checkpoint.compliance import model_prefix

        shared = model_prefix({key: tuple(value.shape) for key, value in state.items()})
        fix = f"set strip_prefix: {shared!r} (the prefix the keys share)" if shared else "set strip_prefix: null"
        raise entry_error(entry, f"strip_prefix {prefix!r} matches no key (first key: {next(iter(state))!r}); "
                                 f"{fix}", "strip_prefix")
    return _renamed(state, lambda key: key[len(prefix):] if key.startswith(prefix) else key, entry, "strip_prefix")


def rename_prefixes(state: dict[str, torch.Tensor], renames: tuple[tuple[str, str], ...],
                    entry: ModelEntry) -> dict[str, torch.Tensor]:
    """*state* with each key's first matching ``from`` prefix replaced by its ``to``."""
    if not renames:
        return state
    unused = [old for old, _ in renames if not any(key.startswith(old) for key in state)]
    if unused:
        raise entry_error(entry, f"rename_prefixes: {', '.join(map(repr, unused))} match no key (first key: "
                                 f"{next(iter(state))!r}); remove that rule", "rename_prefixes")

    def rename(key: str) -> str:
        for old, new in renames:
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return _renamed(state, rename, entry, "rename_prefixes")


def _renamed(state: dict[str, torch.Tensor], rename: Any, entry: ModelEntry, field: str) -> dict[str, torch.Tensor]:
    renamed = {rename(key): value for key, value in state.items()}
    if len(renamed) != len(state):
        raise entry_error(entry, f"applying {field} makes two keys equal", field)
    return renamed


def drop_normalization_buffers(state: dict[str, torch.Tensor], entry: ModelEntry) -> dict[str, torch.Tensor]:
    """*state* without the declared normalization tensors, after checking they hold the entry's normalization
    (a model that normalizes inside must be evaluated with the same statistics, applied by the evaluator)."""
    buffers = entry.normalization_buffers
    if buffers is None:
        return state
    if entry.normalization is None:
        raise entry_error(entry, "normalization_buffers needs the normalization field set to the values those "
                                 "buffers hold", "normalization")
    for name, key in (("mean", buffers.mean), ("std", buffers.std)):
        if key not in state:
            raise entry_error(entry, f"normalization_buffers.{name}: no tensor {key!r} in the state dict (after "
                                     "strip_prefix and rename_prefixes)", "normalization_buffers")
        found = state[key].detach().double().flatten()
        declared = torch.tensor(getattr(entry.normalization, name), dtype=torch.float64)
        if found.shape != declared.shape or not torch.allclose(found, declared, rtol=0, atol=NORMALIZATION_ATOL):
            raise entry_error(entry, f"the checkpoint's {key!r} is {[round(v, 6) for v in found.tolist()]} but "
                                     f"normalization.{name} says {list(declared.tolist())}; set normalization to the "
                                     "values the model was trained with", "normalization")
    return {key: value for key, value in state.items() if key not in (buffers.mean, buffers.std)}


def drop_unused_tensors(state: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """*state* without the tensors whose key ends in one of *names* (the key's last dotted part)."""
    if not names:
        return state
    return {key: value for key, value in state.items() if key.rpartition(".")[2] not in names}


def fold_masks(state: dict[str, torch.Tensor], entry: ModelEntry) -> dict[str, torch.Tensor]:
    """*state* with the masks of the entry's ``masks`` rule folded into the weights they prune; with no rule
    (or ``none``), a state dict that holds masks or scores is refused, naming the rule to state."""
    rule = entry.masks
    if rule in (None, "none"):
        require_no_masks(state, entry)
        return state
    if rule == "orig-mask":
        return fold_pruning_masks(state, entry)
    if rule == "softplus":
        return fold_softplus_masks(state, entry)
    if rule == "popup-scores":
        return fold_popup_scores(state, entry)
    raise entry_error(entry, f"masks {rule!r} is not one of {', '.join(MASK_RULES)}", "masks")


def require_no_masks(state: dict[str, torch.Tensor], entry: ModelEntry) -> None:
    """Refuse mask or score tensors when the entry states no rule to fold them by."""
    from evaluator.checkpoint.compliance import mask_rules_present

    names = [key.rpartition(".")[2] for key in state]
    present = mask_rules_present(names)
    if not present:
        return
    kind = present[0]
    examples = [key for key in state if kind in mask_rules_present([key.rpartition(".")[2]])]
    stated = "masks: none" if entry.masks == "none" else "no masks rule"
    fix = (f"masks: popup-scores with keep_ratios (uniform, or the per-layer kept fractions your code used; "
           "`apb prepare --layer-ratios FILE` folds them)" if kind == "popup-scores" else f"masks: {kind}")
    raise entry_error(entry, f"the file holds {len(examples)} {MASK_TENSORS[kind]} tensors (e.g. "
                             f"{', '.join(examples[:3])}) but the entry states {stated}: they decide which weights "
                             f"are pruned, and apb folds them only by the rule you state: set {fix}", "masks")


def fold_pruning_masks(state: dict[str, torch.Tensor], entry: ModelEntry) -> dict[str, torch.Tensor]:
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
            raise entry_error(entry, f"{key!r} has no matching {name + '_mask'!r}; a pruned weight needs both", "masks")
        _require_same_shape(entry, name + "_mask", mask, key, value)
        if name in state:
            raise entry_error(entry, f"{name!r} appears both plain and as {key!r} + {name + '_mask'!r}", "masks")
        folded[name] = value * mask.to(value.dtype)
    return folded


def fold_softplus_masks(state: dict[str, torch.Tensor], entry: ModelEntry) -> dict[str, torch.Tensor]:
    """Replace ``<module>.<param>`` by ``<param> * softplus(<module>.mask_<param>)`` and drop the masks."""
    masks = {key for key in state if key.rpartition(".")[2].startswith("mask_")}
    if not masks:
        raise entry_error(entry, "masks: softplus, but no '<module>.mask_<param>' tensor is in the state dict; "
                                 "remove the masks rule or check state_dict_key", "masks")
    folded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in masks:
            continue
        module, _, param = key.rpartition(".")
        mask_key = f"{module}.mask_{param}" if module else f"mask_{param}"
        if mask_key in state:
            mask = state[mask_key]
            _require_same_shape(entry, mask_key, mask, key, value)
            value = value * F.softplus(mask.to(value.dtype))
        folded[key] = value
    orphans = sorted(key for key in masks if _masked_key(key) not in state)
    if orphans:
        raise entry_error(entry, f"{len(orphans)} masks have no parameter to mask: {', '.join(orphans[:4])}", "masks")
    return folded


def _masked_key(mask_key: str) -> str:
    module, _, name = mask_key.rpartition(".")
    param = name[len("mask_"):]
    return f"{module}.{param}" if module else param


def fold_popup_scores(state: dict[str, torch.Tensor], entry: ModelEntry) -> dict[str, torch.Tensor]:
    """Edge-popup subnetworks: each ``<module>.scores`` (or ``popup_scores``) selects the weights of
    ``<module>.weight`` that are kept, the ``n - int((1 - k) * n)`` of largest abs(score) with ``k`` the layer's
    keep ratio (``keep_ratios``); the others become 0 and the scores go."""
    scored = [key for key in state if key.rpartition(".")[2] in SCORE_NAMES]
    if not scored:
        raise entry_error(entry, "masks: popup-scores, but no '<module>.scores' or '<module>.popup_scores' tensor is "
                                 "in the state dict (were the scores deleted? without them the dense weights are not "
                                 "the pruned network); remove the masks rule only if the weights hold the zeros, "
                                 "else check state_dict_key", "masks")
    ratios = layer_keep_ratios(entry, [key.rpartition(".")[0] for key in scored])
    folded = dict(state)
    for key in scored:
        module = key.rpartition(".")[0]
        weight_key = module + ".weight" if module else "weight"
        if weight_key not in state:
            raise entry_error(entry, f"{key!r} has no {weight_key!r} to select from", "masks")
        scores, weight = state[key], state[weight_key]
        if scores.shape != weight.shape:
            raise entry_error(entry, score_shape_message(key, scores, weight_key, weight), "masks")
        if not bool(torch.isfinite(scores).all()):
            raise entry_error(entry, f"{key!r} holds NaN or infinite scores", "masks")
        folded[weight_key] = weight * top_scores_mask(scores, ratios[module]).to(weight.dtype)
        del folded[key]
    return folded


def score_shape_message(key: str, scores: torch.Tensor, weight_key: str, weight: torch.Tensor) -> str:
    """Why scores that are not of the weight's shape cannot be folded by ``popup-scores``, and what to do."""
    shape, full = list(scores.shape), list(weight.shape)
    kind = ""
    if scores.dim() == weight.dim() and scores.dim() >= 2 and scores.numel() in (full[0], full[1]):
        kind = (" one score per input channel (channel-mode scores)" if shape[1] == full[1] and shape[0] == 1 else
                " one score per output filter (filter-mode scores)")
    return (f"{key!r} has shape {shape} but {weight_key!r} has {full}:{kind}; masks: popup-scores folds scores of the "
            "weight's shape only (one score per weight). A channel or filter mask is another mask kind: fold it "
            "with your own code and save the folded weights, then set masks: none (CONTRIBUTING.md, 'Masks and "
            "scores', shows the lines)")


def layer_keep_ratios(entry: ModelEntry, modules: list[str]) -> dict[str, float]:
    """The kept fraction of each scored module, from the entry's ``keep_ratios`` (never guessed)."""
    from evaluator.repository.manifest import keep_ratio_file, ratio_map

    stated = entry.keep_ratios
    if stated is None:
        raise entry_error(entry, "masks: popup-scores needs keep_ratios (uniform, {layers: {...}} or {file: ...}): "
                                 "the per-layer kept fractions your code folds the scores with", "keep_ratios")
    if stated == "uniform":
        return {module: (100 - entry.sparsity) / 100 for module in modules}
    if isinstance(stated, dict) and "file" in stated:
        ratios = keep_ratio_file(entry.manifest_path.parent, str(stated["file"]))
    else:
        ratios = ratio_map(stated.get("layers") if isinstance(stated, dict) else stated, "keep_ratios.layers")
    missing = [module for module in modules if module not in ratios]
    unknown = sorted(set(ratios) - set(modules))
    if missing or unknown:
        parts = [f"no ratio for {len(missing)} scored layers ({', '.join(missing[:4])})"] if missing else []
        parts += [f"{len(unknown)} names are no scored layer ({', '.join(unknown[:4])})"] if unknown else []
        raise entry_error(entry, f"keep_ratios: {'; '.join(parts)}; name every scored module exactly as in the state "
                                 f"dict after the key rules (e.g. {modules[0]})", "keep_ratios")
    return {module: ratios[module] for module in modules}


def top_scores_mask(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """1 for the ``n - int((1 - keep) * n)`` entries of largest abs(score), 0 for the others: edge-popup's rule
    (sort abs(scores) ascending, stably, and drop the first ``int((1 - keep) * n)``), computed with a k-th value
    and the stable sort's order among ties (the earliest tied entries are dropped first)."""
    flat = scores.detach().abs().flatten()
    dropped = int((1 - keep) * flat.numel())
    mask = torch.ones(flat.numel(), dtype=torch.bool)
    if dropped > 0:
        threshold = flat.kthvalue(dropped).values
        mask = flat > threshold
        tied = (flat == threshold).nonzero().flatten()
        mask[tied[dropped - int((flat < threshold).sum()):]] = True
    return mask.to(scores.dtype).view_as(scores)


def _require_same_shape(entry: ModelEntry, mask_key: str, mask: torch.Tensor, key: str, value: torch.Tensor) -> None:
    if mask.shape != value.shape:
        raise entry_error(entry, f"{mask_key!r} has shape {list(mask.shape)} but {key!r} has {list(value.shape)}", "masks")


def require_finite(state: dict[str, torch.Tensor], entry: ModelEntry) -> None:
    """Refuse NaN or infinite values anywhere in the state dict."""
    bad = [key for key, value in state.items()
           if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())]
    if bad:
        raise entry_error(entry, f"{len(bad)} tensors hold NaN or infinite values: {', '.join(bad[:6])}"
                                 + (" ..." if len(bad) > 6 else ""))

"""``apb prepare``: a training checkpoint on disk -> a clean safetensors file and its manifest entry.

A training checkpoint is rarely the plain state dict of a benchmark architecture: the weights sit inside a dict
(``{'state_dict': ..., 'epoch': ...}``), carry DataParallel's ``module.`` prefix, keep ``torch.nn.utils.prune``'s
``weight_orig`` / ``weight_mask`` pairs (or edge-popup scores, or softplus masks), and sometimes hold the input
normalization as ``mean`` / ``std`` buffers. This module recognises each of these, expresses it as the
manifest's key rules (:mod:`evaluator.checkpoint.key_rules` applies them, exactly as the evaluator does), picks the
registered variant whose keys fit (:mod:`evaluator.checkpoint.compliance`), checks the sparsity against the claim
(:mod:`evaluator.run.check`), and writes the resulting state dict as safetensors. The written file is loaded again
through the evaluator's own loader with the entry it prints, so the entry is known to work.

The checkpoint is untrusted like any other: it is read with ``torch.load(weights_only=True)`` (the schema's
closed ``allowed_globals`` accepted) or as safetensors, under the same size cap.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evaluator.errors import APBError, Problem
from evaluator.registry.datasets import get_dataset

PLACEHOLDER_AP_KEY = "Prepared_Checkpoint2000File"  # names the draft entry until the real AP key is known
EXPORT_LINES = """\
    # in your own code, with the model built and the checkpoint loaded exactly as your evaluation does:
    import json
    ratios = {name: float(m.k) for name, m in model.named_modules() if hasattr(m, "popup_scores")}  # your per-layer k
    json.dump(ratios, open("layer_ratios.json", "w"), indent=1)   # then: apb prepare ... --layer-ratios layer_ratios.json
    # or export the folded network itself (the mask your forward() multiplies by), then run apb prepare on it:
    state = model.state_dict()
    for name, m in model.named_modules():
        if hasattr(m, "popup_scores"):
            state[name + ".weight"] = m.weight.detach() * <your mask of m, e.g. GetSubnet.apply(m.popup_scores.abs(), m.k)>
            del state[name + ".popup_scores"]
    torch.save(state, "folded.pt")"""


@dataclass
class Prepared:
    """What ``apb prepare`` made: the file, its sha256, the manifest entry and what it found on the way."""

    path: Path
    sha256: str
    entry: dict[str, Any]
    found: list[str] = field(default_factory=list)
    sparsity_message: str = ""


def draft_entry(source: Path, *, architecture: str, dataset: str, structure: str, sparsity: int,
                ap_key: str | None = None, **fields: Any) -> Any:
    """A :class:`ModelEntry` for *source* with the given key rules (errors then point at the source file)."""
    from evaluator.repository.manifest import entry_from_data

    data = {"architecture": architecture, "dataset": dataset, "structure": structure, "sparsity": sparsity,
            "url": source.resolve().as_uri(), **fields}
    return entry_from_data(ap_key or PLACEHOLDER_AP_KEY, data, source, 0, 0)


def source_error(error: APBError, source: Path) -> APBError:
    """An entry error about the draft entry, re-pointed at the checkpoint file and the bare field name."""
    problems = []
    for problem in error.problems:
        message = problem.message.split(": ", 1)[1] if problem.message.startswith(PLACEHOLDER_AP_KEY) else problem.message
        where = (problem.field or "").replace("models[0].", "").replace("models[0]", "") or None
        problems.append(Problem(str(source), message, None, where))
    return APBError(problems)


def score_rule(layer_ratios: str | Path | None, source: Path) -> tuple[str | dict[str, Any], str]:
    """``keep_ratios`` for edge-popup scores from ``--layer-ratios`` (``uniform`` or a JSON file of
    ``{module: kept fraction}``) and how it was found; without it, an error that shows how to export them."""
    from evaluator.repository.manifest import ratio_map
    from evaluator.untrusted.safeio import load_json

    if layer_ratios is None:
        raise APBError(Problem(str(source), "holds edge-popup scores beside dense weights: which weights are kept "
                                            "depends on each layer's keep ratio, which the file does not hold, and apb "
                                            "never guesses it. Pass --layer-ratios FILE (a JSON {<module>: <kept "
                                            "fraction>} from your code) or --layer-ratios uniform (every layer keeps "
                                            "1 - sparsity/100), or export the folded weights. The few lines to export "
                                            "either, in your own code:\n" + EXPORT_LINES, field="--layer-ratios"))
    if str(layer_ratios) == "uniform":
        return "uniform", "every layer keeps (100 - sparsity)% (--layer-ratios uniform)"
    path = Path(layer_ratios)
    data, _ = load_json(path)
    ratios = ratio_map(data, str(path))
    return {"layers": ratios}, f"per-layer keep ratios of {len(ratios)} layers from {path.name}"


def detect_rules(loaded: Any, source: Path, layer_ratios: str | Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """The key rules a deserialized checkpoint needs (manifest field -> value) and a sentence per finding;
    edge-popup scores fold only by *layer_ratios* (:func:`score_rule`)."""
    from evaluator.checkpoint.compliance import SCORE_NAMES, common_prefix, mask_rules_present, normalization_keys
    from evaluator.checkpoint.key_rules import locate_state_dict

    located = locate_state_dict(loaded)
    if located is None:
        raise APBError(Problem(str(source), "holds no mapping of parameter names to tensors: save "
                                            "model.state_dict() (torch.save(model.state_dict(), path))"))
    rules: dict[str, Any] = {"state_dict_key": located or None}
    found = [f"state dict: under {located!r}" if located else "state dict: the file itself"]
    state = loaded
    for part in located.split(".") if located else []:
        state = state[part]
    shapes = {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}
    names = [key.rpartition(".")[2] for key in shapes]
    present = mask_rules_present(names)
    masks = present[0] if present else None
    if masks is not None:
        rules["masks"] = masks
    if masks == "orig-mask":
        found.append(f"masks: {sum(n.endswith('_mask') for n in names)} torch.nn.utils.prune masks folded "
                     "(weight_orig * weight_mask)")
    elif masks == "popup-scores":
        rules["keep_ratios"], how = score_rule(layer_ratios, source)
        found.append(f"masks: {sum(n in SCORE_NAMES for n in names)} edge-popup score tensors folded; {how}")
    elif masks == "softplus":
        found.append(f"masks: {sum(n.startswith('mask_') for n in names)} softplus masks folded")
    if masks != "popup-scores" and layer_ratios is not None:
        raise APBError(Problem(str(source), "--layer-ratios folds edge-popup scores, but the file holds none "
                                            "('<module>.scores' / '<module>.popup_scores'); leave it out",
                               field="--layer-ratios"))
    buffers = normalization_keys(shapes)
    rest = {key: shape for key, shape in shapes.items() if key not in buffers}
    prefix = common_prefix(rest)
    if prefix:
        rules["strip_prefix"] = prefix
        found.append(f"prefix: {prefix!r} stripped from every key")
    if len(buffers) == 2:
        mean_key, std_key = (key[len(prefix):] if prefix and key.startswith(prefix) else key for key in buffers)
        rules["normalization_buffers"] = {"mean": mean_key, "std": std_key}
        rules["normalization"] = {"mean": _channel_values(state[buffers[0]], source, buffers[0]),
                                  "std": _channel_values(state[buffers[1]], source, buffers[1])}
        found.append(f"normalization: buffers {buffers[0]} / {buffers[1]} become the normalization field "
                     f"(mean {rules['normalization']['mean']}, std {rules['normalization']['std']})")
    return rules, found


def _channel_values(tensor: torch.Tensor, source: Path, key: str) -> list[float]:
    values = [round(float(value), 6) for value in tensor.detach().double().flatten()]
    if not all(0 <= value <= 1 for value in values) or ("std" in key and not all(values)):
        raise APBError(Problem(str(source), f"{key} holds {values}: normalization values are for inputs in [0, 1] "
                                            "(a std above 0); a model trained on [0, 255] inputs does not fit the "
                                            "benchmark, which feeds [0, 1]", field="normalization"))
    return values


def fitting_variant(state: dict[str, torch.Tensor], architecture: str, classes: int, source: Path) -> str:
    """The registered variant of *architecture* (built for *classes* classes) that *state* loads into strictly;
    otherwise an error naming the fix (the other architecture, a foreign layout, the closest variant and the keys
    that differ)."""
    from evaluator.checkpoint.compliance import check_compliance, closest_variant
    from evaluator.registry.variants import variant_names, variants

    for name in variant_names(architecture):
        if check_compliance(state, name, classes).ok:
            return name
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    other = [name for name in variant_names() if variants()[name].family != architecture
             and check_compliance(state, name, classes).ok]
    if other:
        family = variants()[other[0]].family
        raise APBError(Problem(str(source), f"the checkpoint is a {family} ({other[0]}), not a {architecture}: pass "
                                            f"--architecture {family} (the manifest's architecture: {family})",
                               field="architecture"))
    closest = closest_variant(shapes, classes, architecture)
    report = check_compliance(state, closest[0] if closest else architecture, classes)
    raise APBError(Problem(str(source), f"fits no registered {architecture} variant "
                                        f"(evaluator/models/variants.yaml): {report.summary()}", field="variant"))


def manifest_entry(*, architecture: str, dataset: str, structure: str, sparsity: int, url: str, sha256: str,
                   variant: str, normalization: dict | None, claimed: dict | None) -> dict[str, Any]:
    """The manifest entry of a prepared file: every loading field explicit, so no ``defaults`` value applies."""
    entry: dict[str, Any] = {"architecture": architecture, "dataset": dataset, "structure": structure,
                             "sparsity": sparsity, "url": url, "sha256": sha256, "format": "safetensors",
                             "state_dict_key": None, "strip_prefix": None, "normalization": normalization or "none"}
    if variant != architecture:
        entry["variant"] = variant
    if claimed:
        entry["claimed"] = claimed
    return entry


def prepare_checkpoint(source: Path, *, architecture: str, dataset: str, structure: str, sparsity: int,
                       out: Path | None = None, url: str | None = None, claimed: dict | None = None,
                       overwrite: bool = False, layer_ratios: str | Path | None = None) -> Prepared:
    """Turn the training checkpoint *source* into ``out`` (default: *source* with the suffix ``.safetensors``)
    and its manifest entry. Nothing is written unless every check passes."""
    from safetensors.torch import save as save_safetensors

    from evaluator.run.sparsity import measure_sparsity
    from evaluator.checkpoint.fetch import read_capped
    from evaluator.untrusted.file_kind import sniff_format
    from evaluator.checkpoint.key_rules import apply_key_rules
    from evaluator.checkpoint.load import allowed_global_names, build_checked_model, deserialize, load_state_dict

    source = Path(source)
    out = Path(out) if out is not None else source.with_suffix(".safetensors")
    if out.resolve() == source.resolve():
        raise APBError(Problem(str(out), "is the checkpoint itself; pass another --out"))
    if out.exists() and not overwrite:
        raise APBError(Problem(str(out), "already exists; pass --out elsewhere or --force to replace it"))
    data = read_capped(source)
    kind = sniff_format(data)
    if kind == "unknown":
        from evaluator.untrusted.file_kind import foreign_format_advice

        raise APBError(Problem(str(source), foreign_format_advice(data)
                               or "is neither a torch checkpoint (torch.save) nor a safetensors file"))
    basics: dict[str, Any] = {"architecture": architecture, "dataset": dataset, "structure": structure, "sparsity": sparsity}
    try:
        loaded = deserialize(data, draft_entry(source, **basics, format=kind,
                                               allowed_globals=list(allowed_global_names())))
        rules, found = detect_rules(loaded, source, layer_ratios)
        state = apply_key_rules(loaded, draft_entry(source, **basics, **rules))
        variant = fitting_variant(state, architecture, get_dataset(dataset).classes, source)
        model = build_checked_model(draft_entry(source, **basics, variant=variant), state, normalization=False)
    except APBError as error:
        raise source_error(error, source) from None
    found.append(f"variant: {variant}")
    from evaluator.registry.variants import variants

    classes = get_dataset(dataset).classes
    if variants()[variant].outputs(classes) != classes:
        found.append(f"head: {variants()[variant].outputs(classes)} outputs, evaluated as trained (a prediction "
                     f"outside {dataset}'s {classes} classes is wrong; the head is never cut)")
    report = measure_sparsity(model, structure, sparsity)
    if not report.ok:
        raise APBError(Problem(str(source), report.message, field="sparsity"))
    payload = save_safetensors({key: value.detach().contiguous().clone() for key, value in state.items()})
    digest = hashlib.sha256(payload).hexdigest()
    entry = manifest_entry(**basics, url=url or out.resolve().as_uri(), sha256=digest, variant=variant,
                           normalization=rules.get("normalization"), claimed=claimed)
    final = draft_entry(source, **{key: value for key, value in entry.items() if key not in ("url", "claimed")})
    build_checked_model(final, load_state_dict(payload, final))  # the entry loads the file as the evaluator will
    from evaluator.untrusted.safeio import atomic_write_bytes

    atomic_write_bytes(out, payload)
    return Prepared(out, digest, entry, found, report.message)


def entry_yaml(entry: dict[str, Any], *, indent: str = "  ", comment: str | None = None) -> str:
    """*entry* as one block item of a manifest's ``models`` list (plain YAML that ``evaluator.untrusted.safeio`` reads)."""
    import json

    def scalar(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        text = str(value)
        return text if text.replace("_", "").replace("-", "").isalnum() else json.dumps(text)

    lines = [f"{indent}# {comment}"] if comment else []
    first = True
    for key, value in entry.items():
        lead = f"{indent}- " if first else f"{indent}  "
        first = False
        if isinstance(value, dict):
            lines.append(f"{lead}{key}:")
            for sub, item in value.items():
                shown = "[" + ", ".join(scalar(v) for v in item) + "]" if isinstance(item, list) else scalar(item)
                lines.append(f"{indent}    {sub}: {shown}")
        else:
            lines.append(f"{lead}{key}: {scalar(value)}")
    return "\n".join(lines) + "\n"


def add_to_manifest(manifest: Path, entry: dict[str, Any], *, comment: str | None = None) -> str:
    """Append *entry* to the ``models`` list of *manifest* (text edit, comments kept); returns its model key.
    Refuses an entry whose model key the manifest already has, and any edit whose result does not parse to
    the old data plus this entry."""
    from evaluator.registry.model_keys import model_key_maker
    from evaluator.untrusted.safeio import atomic_write_bytes, decode_utf8, parse_yaml_text, read_limited_bytes

    if not manifest.is_file():
        from evaluator.repository.scaffold import write_manifest_scaffold

        write_manifest_scaffold(manifest)
    text = decode_utf8(read_limited_bytes(manifest), str(manifest))
    before, _ = parse_yaml_text(text, str(manifest))
    if not isinstance(before, dict) or "ap_key" not in before:
        raise APBError(Problem(str(manifest), "is not a manifest with an ap_key; create it with `apb new <ap_key>`"))
    key = model_key_maker(before["ap_key"], entry["architecture"], entry["dataset"], entry["structure"],
                          entry["sparsity"])
    models = before.get("models") or []
    for index, model in enumerate(models if isinstance(models, list) else []):
        try:
            same = model_key_maker(before["ap_key"], model["architecture"], model["dataset"], model["structure"],
                                   model["sparsity"]) == key
        except (KeyError, TypeError, ValueError):
            same = False
        if same:
            raise APBError(Problem(str(manifest), f"models[{index}] already has the model key {key}: remove that "
                                                  "entry first (or fix --sparsity / --structure)", field="models"))
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    edited = "".join(line if line.rstrip() != "models: []" else "models:\n" for line in lines)
    indent = _item_indent(edited)
    edited += entry_yaml(entry, indent=indent, comment=comment)
    after, _ = parse_yaml_text(edited, str(manifest))
    expected = dict(before, models=[*(models if isinstance(models, list) else []), entry])
    if after != expected:
        raise APBError(Problem(str(manifest), "cannot add the entry automatically (models is not the last part of "
                                              "the file?); paste the entry printed above into models by hand"))
    atomic_write_bytes(manifest, edited.encode("utf-8"))
    return key


def _item_indent(text: str) -> str:
    """The indentation of the ``models`` list's items (``"  "`` when the list is empty)."""
    inside = False
    for line in text.splitlines():
        if line.startswith("models:"):
            inside = True
            continue
        stripped = line.lstrip(" ")
        if inside and stripped.startswith("- "):
            return line[: len(line) - len(stripped)]
    return "  "


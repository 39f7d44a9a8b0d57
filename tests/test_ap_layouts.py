"""Every checkpoint layout of the original benchmark loads with its manifest entry as committed.

Each (AP, architecture) layout is rebuilt as a real file from the facts in ``tests/data/ap_layouts/`` (keys in file
order, shapes, dtypes, nesting, extras such as ``argparse.Namespace`` and optimizer states, legacy or zip
serialization, ``cuda:0`` storages) and run through ``apb check``'s code path with the committed manifest entry
of that AP, architecture and structure; only the URL (a ``file://`` URL) and the sha256 are the synthetic file's.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import torch

from evaluator.run.check import check_entry
from evaluator.checkpoint.load import allowed_global, build_checked_model, load_state_dict
from evaluator.paths import repo_root
from evaluator.untrusted.safeio import sha256_file
from evaluator.repository.submissions import iter_entries
from tests.support.ap_layouts import layout_names, load_layout, write_checkpoint
from tests.support.fake_data import write_tiny_cifar10

ENTRIES = list(iter_entries(repo_root()))


def cases() -> list[tuple[str, str]]:
    return [(name, structure) for name in layout_names() for structure in load_layout(name)["structures"]]


def committed_entry(layout: dict, structure: str):
    """The first committed manifest entry of the layout's AP, architecture and structure."""
    matching = [entry for entry in ENTRIES if (entry.ap_key, entry.architecture, entry.structure)
                == (layout["ap_key"], layout["architecture"], structure)]
    assert matching, f"no manifest entry for {layout['ap_key']} {layout['architecture']} {structure}"
    return matching[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_cifar10(root, n=4)
    return root


def test_every_imported_ap_and_architecture_has_a_layout():
    imported = {(entry.ap_key, entry.architecture) for entry in ENTRIES if entry.imported}
    assert imported == {(load_layout(name)["ap_key"], load_layout(name)["architecture"]) for name in layout_names()}


@pytest.mark.parametrize(("name", "structure"), cases())
def test_the_authors_layout_passes_apb_check_and_computes_what_their_module_computes(name, structure, tmp_path,
                                                                                      data_dir):
    layout = load_layout(name)
    entry = committed_entry(layout, structure)
    path = write_checkpoint(layout, structure, entry.sparsity, tmp_path / "checkpoint.pt")
    entry = dataclasses.replace(entry, url=path.as_uri(), sha256=sha256_file(path))
    report = check_entry(entry, data_dir=data_dir, n=4, cache_dir=tmp_path / "cache", progress=False)
    assert report.ok, report.render_text(layers=False)
    assert report.entry["loading"]["variant"] == entry.variant
    assert report.sparsity.measured >= entry.sparsity - 0.5
    if structure == layout["structures"][0]:
        assert_same_outputs(layout, entry, path)


def reference_model(layout: dict, sparsity: int) -> torch.nn.Module:
    """The authors' module layout (tests/support/reference_models_*.py), written from their descriptions."""
    forward = layout["forward"]
    path, _, name = forward["reference_module"].partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    options = dict(forward.get("reference_kwargs") or {})
    if forward.get("reference_density_kwarg"):
        options[forward["reference_density_kwarg"]] = 1 - sparsity / 100
    return getattr(module, name)(**options).eval()


def raw_state(path: Path, layout: dict, entry) -> dict[str, torch.Tensor]:
    """The tensors as the authors' code would load them: the saved mapping, wrapper prefix removed, and
    ``torch.nn.utils.prune`` reparametrizations folded the way ``prune.remove`` does."""
    with torch.serialization.safe_globals([allowed_global(name) for name in entry.allowed_globals]):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    for part in (layout["container"].get("state_dict_at") or "").split("."):
        loaded = loaded[part] if part else loaded
    prefix = layout["container"].get("key_prefix") or ""
    state = {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in loaded.items()}
    for key in [key for key in state if key.endswith("_orig")]:
        name = key[: -len("_orig")]
        state[name] = state.pop(key) * state.pop(name + "_mask")
    return state


def assert_same_outputs(layout: dict, entry, path: Path) -> None:
    """The model the benchmark loads from *path* gives the logits of the authors' module loaded their way."""
    model = build_checked_model(entry, load_state_dict(path, entry))
    reference = reference_model(layout, entry.sparsity)
    reference.load_state_dict(raw_state(path, layout, entry), strict=True)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    reference_input = images
    if layout["forward"]["reference_input"] == "normalized":  # the authors normalize in their data loader
        mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (entry.normalization.mean,
                                                                           entry.normalization.std))
        reference_input = (images - mean) / std
    with torch.inference_mode():
        expected, found = reference(reference_input), model(images)
    assert torch.allclose(found, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))

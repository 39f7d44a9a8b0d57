"""Safe checkpoint loading: real files in torch and safetensors formats, and the bad inputs."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

from evaluator.errors import APBError
from evaluator.checkpoint.key_rules import fold_pruning_masks
from evaluator.checkpoint.load import build_checked_model, load_model, load_state_dict
from evaluator.models import Normalized
from evaluator.registry.variants import build_model
from tests.support.entries import make_entry

ENTRY = make_entry()
KEY = ENTRY.model_key


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return build_model("resnet18").eval()


def save(tmp_path: Path, obj, name: str = "ckpt.pt", **options) -> Path:
    path = tmp_path / name
    torch.save(obj, path, **options)
    return path


def assert_names_entry(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert KEY in message and "manifest.yaml:7" in message
    return message


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return sorted(left) == sorted(right) and all(torch.equal(left[key], right[key]) for key in left)


def test_plain_state_dict_loads_strictly_into_the_base_model(tmp_path, reference):
    state = load_state_dict(save(tmp_path, reference.state_dict()), ENTRY)
    model = build_checked_model(ENTRY, state)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert not model.training and torch.equal(model(x), reference(x))


def test_dotted_state_dict_key_and_prefix_strip(tmp_path, reference):
    wrapped = {f"module.{key}": value for key, value in reference.state_dict().items()}
    path = save(tmp_path, {"epoch": 200, "checkpoint": {"model": wrapped, "best_acc": 0.5}})
    entry = make_entry(state_dict_key="checkpoint.model", strip_prefix="module.")
    assert same_weights(build_checked_model(entry, load_state_dict(path, entry)), reference)


def test_missing_state_dict_key_lists_what_is_there(tmp_path, reference):
    path = save(tmp_path, {"net": reference.state_dict(), "epoch": 3})
    with pytest.raises(APBError) as error:
        load_state_dict(path, make_entry(state_dict_key="state_dict"))
    message = assert_names_entry(error)
    assert "'state_dict' not found" in message and "['epoch', 'net']" in message


def test_prefix_that_matches_no_key_is_an_error(tmp_path, reference):
    with pytest.raises(APBError, match="strip_prefix 'module.' matches no key"):
        load_state_dict(save(tmp_path, reference.state_dict()), make_entry(strip_prefix="module."))


def test_torch_prune_masks_are_folded_into_the_weights(tmp_path, reference):
    pruned = build_model("resnet18").eval()
    pruned.load_state_dict(reference.state_dict())
    for module in (pruned.conv1, pruned.layer3[0].conv2, pruned.linear):
        prune.l1_unstructured(module, "weight", amount=0.9)
    saved = pruned.state_dict()
    assert "conv1.weight_orig" in saved and "conv1.weight_mask" in saved and "conv1.weight" not in saved
    import dataclasses

    state = load_state_dict(save(tmp_path, saved), dataclasses.replace(ENTRY, masks="orig-mask"))  # the stated rule
    assert not any(key.endswith(("_orig", "_mask")) for key in state)
    assert torch.equal(state["conv1.weight"], pruned.conv1.weight.detach())
    assert float((state["linear.weight"] == 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    for module in (pruned.conv1, pruned.layer3[0].conv2, pruned.linear):
        prune.remove(module, "weight")  # torch's own folding, to compare with
    assert same_weights(build_checked_model(ENTRY, state), pruned)


def test_orig_without_mask_is_an_error(reference):
    state = dict(reference.state_dict())
    state["conv1.weight_orig"] = state.pop("conv1.weight")
    with pytest.raises(APBError, match="'conv1.weight_orig' has no matching 'conv1.weight_mask'"):
        fold_pruning_masks(state, ENTRY)


def test_safetensors_format(tmp_path, reference):
    from safetensors.torch import save_file

    path = tmp_path / "ckpt.safetensors"
    save_file({key: value.contiguous() for key, value in reference.state_dict().items()}, str(path))
    entry = make_entry(format="safetensors")
    assert same_weights(build_checked_model(entry, load_state_dict(path, entry)), reference)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(APBError, match="not a readable safetensors file"):
        load_state_dict(path, entry)


def payload_pickle(marker: Path):
    """An object whose unpickling creates *marker* (open(marker, 'w')): the code-execution trap."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return Payload()


@pytest.mark.parametrize("how", ["torch-zip", "torch-legacy", "raw-pickle"])
def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, reference, how):
    proof, marker = tmp_path / "proof-the-payload-is-live", tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(payload_pickle(proof)))
    assert proof.exists()  # the trap is real: plain unpickling runs it
    trap = {"state_dict": reference.state_dict(), "extra": payload_pickle(marker)}
    if how == "raw-pickle":
        path = tmp_path / "ckpt.pt"
        path.write_bytes(pickle.dumps(trap, protocol=2))
    else:
        path = save(tmp_path, trap, _use_new_zipfile_serialization=(how == "torch-zip"))
    with pytest.raises(APBError) as error:
        load_state_dict(path, make_entry(state_dict_key="state_dict"))
    message = assert_names_entry(error)
    assert "refused to load" in message and "could run code" in message
    assert not marker.exists()


def test_non_mapping_payload_is_rejected(tmp_path, reference):
    path = save(tmp_path, list(reference.state_dict().values()))
    with pytest.raises(APBError) as error:
        load_state_dict(path, ENTRY)
    assert "is a list, not a mapping" in assert_names_entry(error)


def test_non_tensor_values_are_rejected_with_a_hint(tmp_path, reference):
    path = save(tmp_path, {"state_dict": reference.state_dict(), "epoch": 7, "arch": "resnet18"})
    with pytest.raises(APBError) as error:
        load_state_dict(path, ENTRY)
    message = assert_names_entry(error)
    assert "3 of 3 entries are not name -> tensor" in message and "'state_dict' (OrderedDict)" in message
    assert "set state_dict_key" in message


def test_nan_and_inf_weights_are_rejected(tmp_path, reference):
    state = {key: value.clone() for key, value in reference.state_dict().items()}
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["linear.bias"][3] = float("inf")
    with pytest.raises(APBError) as error:
        load_state_dict(save(tmp_path, state), ENTRY)
    message = assert_names_entry(error)
    assert "2 tensors hold NaN or infinite values" in message
    assert "layer1.0.conv1.weight" in message and "linear.bias" in message


def test_not_a_checkpoint_at_all(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(APBError, match="not a readable torch checkpoint"):
        load_state_dict(path, ENTRY)


def test_missing_extra_and_misshaped_keys_are_listed(reference):
    state = dict(reference.state_dict())
    del state["layer4.1.bn2.running_mean"]
    state["fc.weight"] = torch.zeros(10, 512)
    state["linear.weight"] = torch.zeros(100, 512)
    with pytest.raises(APBError) as error:
        build_checked_model(ENTRY, state)
    message = assert_names_entry(error)
    assert "1 missing ('layer4.1.bn2.running_mean')" in message and "1 unexpected ('fc.weight')" in message
    assert "'linear.weight': expected [10, 512], found [100, 512]" in message


def test_vgg_checkpoint_does_not_fit_resnet(reference):
    with pytest.raises(APBError, match="does not fit the base resnet18"):
        build_checked_model(ENTRY, build_model("vgg16").state_dict())


def test_normalization_from_the_manifest_wraps_the_model(reference):
    entry = make_entry(normalization={"mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]})
    model = build_checked_model(entry, reference.state_dict())
    assert isinstance(model, Normalized) and model.mean.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    assert not isinstance(build_checked_model(entry, reference.state_dict(), normalization=False), Normalized)


@pytest.mark.parametrize("key, architecture", [("base_resnet18", "resnet18"), ("base_vgg16", "vgg16")])
def test_load_model_base_keys_give_the_unloaded_base_models(key, architecture):
    model = load_model(key)
    assert not model.training and list(model.state_dict()) == list(build_model(architecture).state_dict())


def test_load_model_from_a_manifest_fetches_verifies_loads_and_normalizes(tmp_path, reference):
    import hashlib

    from tests.support.entries import AP_KEY

    checkpoint = save(tmp_path, {"net": {f"module.{k}": v for k, v in reference.state_dict().items()}})
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    folder = tmp_path / "repo" / "submissions" / AP_KEY
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(
        f"schema_version: 1\nap_key: {AP_KEY}\ndefaults:\n  state_dict_key: net\n  strip_prefix: module.\n"
        "  normalization: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\nmodels:\n"
        f"  - {{architecture: resnet18, dataset: CIFAR10, structure: weights, sparsity: 90,\n"
        f"     url: '{checkpoint.as_uri()}', sha256: {sha}, claimed: {{clean_accuracy: 10.0}}}}\n")
    key = f"{AP_KEY}_R18_CIFAR10_US_90"
    model = load_model(key, root=tmp_path / "repo", cache_dir=tmp_path / "cache")
    assert isinstance(model, Normalized) and not model.training and same_weights(model.model, reference)
    assert (tmp_path / "cache" / "sha256" / sha).is_file()
    plain = load_model(key, root=tmp_path / "repo", cache_dir=tmp_path / "cache", normalization=False)
    assert not isinstance(plain, Normalized) and same_weights(plain, reference)
    checkpoint.write_bytes(checkpoint.read_bytes()[:-10])  # the source changes; the cache still serves the pin
    assert same_weights(load_model(key, root=tmp_path / "repo", cache_dir=tmp_path / "cache").model, reference)
    with pytest.raises(APBError, match="sha256 mismatch"):
        load_model(key, root=tmp_path / "repo", cache_dir=tmp_path / "other-cache")


def test_a_cached_file_swapped_after_its_hash_is_never_parsed(tmp_path, reference, monkeypatch):
    """Another tenant of a shared cache replaces the verified file between the fetch's hash and the load: the
    evaluator hashes the very bytes it parses, so the swap is refused instead of loaded (issue 10, point 4)."""
    import hashlib

    from evaluator.checkpoint import load as load_module
    from tests.support.entries import AP_KEY

    good = save(tmp_path, reference.state_dict(), name="good.pt")
    sha = hashlib.sha256(good.read_bytes()).hexdigest()
    torch.manual_seed(7)
    swapped = save(tmp_path, build_model("resnet18").state_dict(), name="swapped.pt")
    folder = tmp_path / "repo" / "submissions" / AP_KEY
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(
        f"schema_version: 1\nap_key: {AP_KEY}\nmodels:\n"
        f"  - {{architecture: resnet18, dataset: CIFAR10, structure: weights, sparsity: 90,\n"
        f"     url: '{good.as_uri()}', sha256: {sha}, claimed: {{clean_accuracy: 10.0}}}}\n")
    original_fetch = load_module.fetch_entry

    def fetch_then_swap(entry, **options):
        path = original_fetch(entry, **options)
        path.write_bytes(swapped.read_bytes())  # the race: after the hash, before the load
        return path

    monkeypatch.setattr(load_module, "fetch_entry", fetch_then_swap)
    with pytest.raises(APBError, match="sha256 mismatch when reading the cached file"):
        load_model(f"{AP_KEY}_R18_CIFAR10_US_90", root=tmp_path / "repo", cache_dir=tmp_path / "cache")

"""apb prepare, apb new and load_local_model on real files: the rules found, the entry written, the refusals."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from evaluator.errors import APBError
from evaluator.run.prepare import add_to_manifest, prepare_checkpoint
from evaluator.untrusted.safeio import parse_yaml_text
from evaluator.repository.scaffold import write_scaffold
from tests.support.training_checkpoints import pruned_resnet18, save_training_checkpoint

BASICS = {"architecture": "resnet18", "dataset": "CIFAR10", "structure": "weights", "sparsity": 90}


class Normalize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1))


class WithNormalization(nn.Module):
    """How several authors' models carry their normalization: a submodule with mean / std buffers."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.normalize, self.net = Normalize(), net


def test_prepare_turns_normalization_buffers_into_the_normalization_field(tmp_path):
    model = WithNormalization(pruned_resnet18(90))
    path = save_training_checkpoint(model, tmp_path / "checkpoint.pt")
    prepared = prepare_checkpoint(path, **BASICS)
    assert prepared.entry["normalization"] == {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}
    assert any("prefix: 'module.net.'" in line for line in prepared.found)
    from evaluator.api import load_local_model

    loaded = load_local_model(prepared.path, "resnet18", normalization=prepared.entry["normalization"],
                              format="safetensors")
    images = torch.rand(2, 3, 32, 32)
    reference = model.eval()
    with torch.no_grad():
        expected = reference.net((images - reference.normalize.mean) / reference.normalize.std)
        assert torch.allclose(loaded(images), expected, atol=1e-5)


def test_load_local_model_reads_the_training_checkpoint_with_its_loading_fields(tmp_path):
    from evaluator.api import load_local_model

    model = pruned_resnet18(90)
    path = save_training_checkpoint(model, tmp_path / "checkpoint.pt")
    loaded = load_local_model(path, "resnet18", state_dict_key="state_dict", strip_prefix="module.", masks="orig-mask")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)
    with pytest.raises(APBError, match="strip_prefix: 'module.'"):
        load_local_model(path, "resnet18", state_dict_key="state_dict", masks="orig-mask")
    with pytest.raises(APBError, match="set masks: orig-mask"):  # masks are folded only by a stated rule
        load_local_model(path, "resnet18", state_dict_key="state_dict", strip_prefix="module.")
    with pytest.raises(APBError, match="unknown loading field"):
        load_local_model(path, "resnet18", prefix="module.")


def test_prepare_refuses_to_overwrite_and_the_manifest_refuses_a_second_entry_of_a_key(tmp_path):
    root = tmp_path
    (root / "submissions").mkdir()
    write_scaffold(root, "MyMethod_Doe2025Robust")
    with pytest.raises(APBError, match="never overwrites"):
        write_scaffold(root, "MyMethod_Doe2025Robust")
    path = save_training_checkpoint(pruned_resnet18(90), tmp_path / "checkpoint.pt")
    prepared = prepare_checkpoint(path, **BASICS)
    with pytest.raises(APBError, match="already exists"):
        prepare_checkpoint(path, **BASICS)
    manifest = root / "submissions" / "MyMethod_Doe2025Robust" / "manifest.yaml"
    before = manifest.read_text()
    assert add_to_manifest(manifest, prepared.entry) == "MyMethod_Doe2025Robust_R18_CIFAR10_US_90"
    data, _ = parse_yaml_text(manifest.read_text(), "manifest.yaml")
    assert data["models"] == [prepared.entry] and manifest.read_text().startswith(before.split("models:")[0])
    with pytest.raises(APBError, match="already has the model key"):
        add_to_manifest(manifest, prepared.entry)


def test_prepare_names_the_architecture_of_a_vgg_declared_as_resnet(tmp_path):
    from evaluator.registry.variants import build_variant

    path = tmp_path / "vgg.pt"
    torch.save({"model": build_variant("vgg16").state_dict()}, path)
    with pytest.raises(APBError, match="--architecture vgg16"):
        prepare_checkpoint(path, **BASICS)
    assert not (tmp_path / "vgg.safetensors").exists()

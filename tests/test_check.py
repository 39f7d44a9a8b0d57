"""Compliance, sparsity, output sanity, clean accuracy, and ``apb check`` end to end on a synthetic submission."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from evaluator.run.check import check_compliance, check_entry, check_outputs, clean_predictions
from evaluator.run.sparsity import COUNTED_LAYERS, measure_sparsity
from evaluator.run.datasets import load_test_set
from evaluator.errors import APBError
from evaluator.models import Normalized
from evaluator.registry.variants import build_model
from evaluator.untrusted.safeio import dump_json
from tests.support.entries import AP_KEY, make_entry
from tests.support.fake_data import write_tiny_cifar10
from tests.support.http_server import LocalServer

REPO = Path(__file__).resolve().parents[1]


def zero_smallest(model: nn.Module, fraction: float) -> nn.Module:
    """Global magnitude pruning of every conv weight, in place (exact count of zeros); linear layers stay dense,
    as in several APs (they are not counted in the sparsity)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    k = int(round(fraction * flat.numel()))
    threshold = flat.kthvalue(k).values
    with torch.no_grad():
        for w in weights:
            w[w.abs() <= threshold] = 0.0
    return model


@pytest.fixture(scope="module")
def sparse_resnet():
    torch.manual_seed(0)
    return zero_smallest(build_model("resnet18").eval(), 0.9)


# ----------------------------------------------------------------------------------------------- compliance

def test_compliance_of_a_matching_state_dict(sparse_resnet):
    report = check_compliance(dict(sparse_resnet.state_dict()), "resnet18")
    assert report.ok and report.missing == report.unexpected == report.shape_mismatched == []
    assert "all 122 keys match" in report.render_text()


def test_compliance_lists_missing_unexpected_and_misshaped_keys(sparse_resnet):
    state = dict(sparse_resnet.state_dict())
    del state["layer2.0.shortcut.0.weight"]
    state["layer2.0.downsample.0.weight"] = torch.zeros(128, 64, 1, 1)
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    report = check_compliance(state, "resnet18")
    assert not report.ok
    assert report.missing == ["layer2.0.shortcut.0.weight"]
    assert report.unexpected == ["layer2.0.downsample.0.weight"]
    assert report.shape_mismatched == [{"key": "conv1.weight", "expected": [64, 3, 3, 3], "found": [64, 3, 7, 7]}]
    text = report.render_text()
    assert "missing:    'layer2.0.shortcut.0.weight'" in text and "expected [64, 3, 3, 3] found [64, 3, 7, 7]" in text
    assert report.to_dict()["missing"] == ["layer2.0.shortcut.0.weight"]


def test_compliance_accepts_an_old_checkpoint_without_num_batches_tracked(sparse_resnet):
    state = {k: v for k, v in sparse_resnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert check_compliance(state, "resnet18").ok  # exactly what strict load_state_dict accepts


# ----------------------------------------------------------------------------------------------- sparsity

def test_weight_sparsity_counts_every_conv_weight_and_lists_the_linear(sparse_resnet):
    report = measure_sparsity(sparse_resnet, "weights", 90)
    weights = [m.weight for m in sparse_resnet.modules() if isinstance(m, nn.Conv2d)]
    expected = 100.0 * sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert report.weights == pytest.approx(expected) and report.weights == pytest.approx(90.0, abs=0.01)
    assert report.ok and "matches the claimed 90%" in report.message
    names = [layer.name for layer in report.layers]
    assert len(names) == 21 and names[0] == "conv1" and names[-1] == "linear" and "layer2.0.shortcut.0" in names
    assert report.layers[-1].filters is None and report.layers[0].filters == 64


def test_sparsity_below_the_claim_fails_with_both_numbers(sparse_resnet):
    report = measure_sparsity(sparse_resnet, "weights", 99)
    assert not report.ok
    assert "measured weights sparsity 90.00%" in report.message and "claimed 99%" in report.message


def test_the_half_point_tolerance(sparse_resnet):
    measured = measure_sparsity(sparse_resnet, "weights", None).weights
    assert measure_sparsity(sparse_resnet, "weights", measured + 0.49).ok
    assert not measure_sparsity(sparse_resnet, "weights", measured + 0.51).ok


def vgg_with_zero_filters_and_channels(zero_filters: int, zero_channels: int) -> nn.Module:
    """VGG16 whose every conv has its first *zero_filters* output filters and its first *zero_channels*
    input channels (never the first conv's 3 image channels) set to zero."""
    torch.manual_seed(1)
    model = build_model("vgg16").eval()
    with torch.no_grad():
        for index, conv in enumerate(m for m in model.modules() if isinstance(m, nn.Conv2d)):
            conv.weight[: conv.out_channels * zero_filters // 100] = 0
            if index:
                conv.weight[:, : conv.in_channels * zero_channels // 100] = 0
    return model


def test_filter_and_channel_sparsity_are_both_reported():
    filters_only = measure_sparsity(vgg_with_zero_filters_and_channels(50, 0), "filters", 50)
    assert filters_only.filters == pytest.approx(50.0) and filters_only.ok
    convs = [layer for layer in filters_only.layers if layer.kind == "conv"]
    assert len(convs) == 13 and all(layer.zero_filters == layer.filters // 2 for layer in convs)
    assert filters_only.channels == pytest.approx(0.0)
    # the same weights claimed as channel pruning: the granularity mislabel shows, with the other figure
    mislabeled = measure_sparsity(vgg_with_zero_filters_and_channels(50, 0), "channels", 50)
    assert not mislabeled.ok and "measured channels sparsity 0.00%" in mislabeled.message
    assert "measured filters sparsity: 50.00%" in mislabeled.message
    channels = measure_sparsity(vgg_with_zero_filters_and_channels(0, 75), "channels", 75)
    total_in = sum(layer.channels for layer in channels.layers if layer.kind == "conv")
    assert channels.channels == pytest.approx(100.0 * sum(c * 75 // 100 for c in
                                                          [l.channels for l in channels.layers[1:13]]) / total_in)
    assert channels.ok  # 3 never-zero image channels out of 4,227 cost 0.05 points


def test_sparsity_report_documents_the_counted_layers_and_renders_a_table(sparse_resnet):
    torch.manual_seed(0)  # a fresh initialisation without an exactly-zero weight
    report = measure_sparsity(Normalized(build_model("resnet18"), [0.5] * 3, [0.25] * 3), "weights", 90)
    assert report.weights == 0.0 and not report.ok  # looked through the Normalized wrapper: 21 layers
    assert len(report.layers) == 21 and report.counted_layers == COUNTED_LAYERS
    assert "first conv" in COUNTED_LAYERS and "neither are Linear layers" in COUNTED_LAYERS
    text = measure_sparsity(sparse_resnet, "weights", 90).render_text()
    assert "layer4.1.conv2" in text and "counted:" in text and "channels %" in text
    assert json.loads(dump_json(report.to_dict()))["layers"][0]["name"] == "conv1"


# ----------------------------------------------------------------------------------------------- outputs

class Noisy(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10] + torch.randn(x.shape[0], 10)


class Broken(nn.Module):
    def __init__(self, classes: int = 10, value: float = 0.0) -> None:
        super().__init__()
        self.classes, self.value = classes, value

    def forward(self, x):
        return torch.full((x.shape[0], self.classes), self.value)


def test_output_sanity():
    images = torch.rand(4, 3, 32, 32)
    torch.manual_seed(0)
    good = check_outputs(build_model("resnet18"), images, 10)
    assert good.ok and good.deterministic and good.shape == [4, 10] and not good.randomized
    randomized = check_outputs(Noisy(), images, 10)
    assert randomized.ok and randomized.randomized and "randomized" in randomized.message  # flagged, not failed
    assert randomized.render_text().startswith("outputs     FLAGGED")
    assert not check_outputs(Broken(classes=100), images, 10).ok
    nan = check_outputs(Broken(value=float("nan")), images, 10)
    assert not nan.ok and not nan.finite and "NaN" in nan.message and nan.deterministic


# ----------------------------------------------------------------------------------------------- accuracy

def test_clean_predictions_are_per_sample_in_index_order(tmp_path):
    images, labels = write_tiny_cifar10(tmp_path, n=10)
    test_set = load_test_set("CIFAR10", tmp_path)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()
    with torch.inference_mode():
        expected = model(test_set.batch(slice(None))[0]).argmax(1) == test_set.labels
    assert torch.equal(clean_predictions(model, test_set, batch_size=3, progress=False), expected)
    picked = clean_predictions(model, test_set, batch_size=2, indices=[7, 2, 5], progress=False)
    assert picked.dtype == torch.bool and torch.equal(picked, expected[[7, 2, 5]])


# ----------------------------------------------------------------------------------------------- one entry

@pytest.fixture
def served_checkpoint(tmp_path, sparse_resnet):
    """A ResNet18 checkpoint ({"state_dict": ...}) served from a local Hugging Face-like endpoint."""
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": sparse_resnet.state_dict(), "epoch": 100}, path)
    data = path.read_bytes()
    with LocalServer() as server:
        url = server.add_hf_file("doe/pruned", "r18_c10_90.pt", data, revision="0" * 40)
        yield server, url, hashlib.sha256(data).hexdigest()


def test_check_entry_passes_on_a_sparse_checkpoint(tmp_path, served_checkpoint, sparse_resnet, monkeypatch):
    server, url, sha = served_checkpoint
    monkeypatch.setenv("HF_ENDPOINT", server.base_url)
    write_tiny_cifar10(tmp_path / "data", n=8)
    entry = make_entry(url=url, sha256=sha, state_dict_key="state_dict", claimed={"clean_accuracy": 30.0})
    report = check_entry(entry, data_dir=tmp_path / "data", n=8, cache_dir=tmp_path / "cache", progress=False)
    assert report.ok and report.failures() == [] and report.sha256 == sha and report.n == 8
    with torch.inference_mode():
        x, y = load_test_set("CIFAR10", tmp_path / "data").batch(slice(None))
        assert report.clean_correct == int((sparse_resnet(x).argmax(1) == y).sum())
    data = json.loads(dump_json(report.to_dict()))
    assert data["ok"] and data["sparsity"]["measured"] == pytest.approx(90.0, abs=0.01)
    assert data["clean"]["test_set_official"] is False and data["claimed"] == {"clean_accuracy": 30.0}
    efficiency = data["efficiency"]  # measured on the loaded model: 90% of the weights are zero
    assert efficiency["input_shape"] == [3, 32, 32] and efficiency["structure_kind"] == "US"
    assert efficiency["macs_effective"] == efficiency["macs_nonzero"] < 0.5 * efficiency["macs_dense"]
    text = report.render_text()
    assert "efficiency  params" in text and "result      PASSED" in text and "claimed 30.0%" in text and "not the official one" in text


def test_check_entry_fails_on_a_sparsity_the_weights_do_not_have(tmp_path, served_checkpoint, monkeypatch):
    server, url, sha = served_checkpoint
    monkeypatch.setenv("HF_ENDPOINT", server.base_url)
    write_tiny_cifar10(tmp_path / "data", n=4)
    entry = make_entry(url=url, sha256=sha, state_dict_key="state_dict", sparsity=99)
    report = check_entry(entry, data_dir=tmp_path / "data", n=4, cache_dir=tmp_path / "cache", progress=False)
    assert not report.ok and report.failures() == [
        "sparsity: measured weights sparsity 90.00% is below the accepted 98.5-99.5% for the claimed 99%; the file "
        "is not pruned as the entry's `sparsity` says: fix `sparsity` (and the model key) or prune to the claimed "
        "level (manifest schema, x-sparsity-tolerance, says why)"]


def test_check_entry_reports_a_checkpoint_that_does_not_fit(tmp_path, served_checkpoint, monkeypatch):
    server, url, sha = served_checkpoint
    monkeypatch.setenv("HF_ENDPOINT", server.base_url)
    write_tiny_cifar10(tmp_path / "data", n=4)
    entry = make_entry(url=url, sha256=sha, state_dict_key="state_dict", architecture="vgg16")
    report = check_entry(entry, data_dir=tmp_path / "data", n=4, cache_dir=tmp_path / "cache", progress=False)
    assert not report.ok and report.sparsity is None and report.clean_correct is None
    assert "unexpected" in report.failures()[0] and "layer1.0.conv1.weight" in report.compliance.unexpected


def test_check_entry_wraps_download_errors_with_the_entry(tmp_path, served_checkpoint, monkeypatch):
    server, url, _ = served_checkpoint
    monkeypatch.setenv("HF_ENDPOINT", server.base_url)
    write_tiny_cifar10(tmp_path / "data", n=4)
    entry = make_entry(url=url, sha256="f" * 64, state_dict_key="state_dict")
    with pytest.raises(APBError) as error:
        check_entry(entry, data_dir=tmp_path / "data", n=4, cache_dir=tmp_path / "cache", progress=False)
    message = str(error.value)
    assert "manifest.yaml:7: models[0].url" in message and entry.model_key in message and "sha256 mismatch" in message
    assert not any((tmp_path / "cache" / "sha256").glob("*"))


# ----------------------------------------------------------------------------------------------- apb check

MANIFEST = """schema_version: 1
ap_key: {ap_key}
defaults:
  state_dict_key: state_dict
models:
  - architecture: resnet18
    dataset: CIFAR10
    structure: weights
    sparsity: 90
    url: {url}
    sha256: {sha}
    claimed: {{clean_accuracy: 10.0}}
  - architecture: resnet18
    dataset: CIFAR10
    structure: weights
    sparsity: 99
    url: {url}
    sha256: {sha}
    claimed: {{clean_accuracy: 10.0}}
"""


def write_synthetic_repo(root: Path, url: str, sha: str) -> None:
    folder = root / "submissions" / AP_KEY
    folder.mkdir(parents=True)
    (root / "taxonomy").mkdir()
    (folder / "manifest.yaml").write_text(MANIFEST.format(ap_key=AP_KEY, url=url, sha=sha))
    (folder / "taxonomy.json").write_text(json.dumps({"ap_key": AP_KEY}) + "\n")


def apb(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluator.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


@pytest.mark.slow
def test_apb_check_end_to_end(tmp_path, served_checkpoint, monkeypatch, capsys):
    server, url, sha = served_checkpoint
    write_synthetic_repo(tmp_path / "repo", url, sha)
    write_tiny_cifar10(tmp_path / "data", n=16)
    env = {**os.environ, "HF_ENDPOINT": server.base_url, "APB_CACHE_DIR": str(tmp_path / "cache")}
    common = ["--root", str(tmp_path / "repo"), "--data-dir", str(tmp_path / "data"), "--n", "16", "--device", "cpu"]
    passed = apb("check", f"{AP_KEY}_R18_CIFAR10_US_90", *common, env=env)
    assert passed.returncode == 0, passed.stderr
    assert "result      PASSED" in passed.stdout and f"sha256 {sha}" in passed.stdout
    failed = apb("check", f"{AP_KEY}_R18_CIFAR10_US_99", *common, "--format", "json", env=env)
    data = json.loads(failed.stdout)
    assert failed.returncode == 1 and data["ok"] is False and data["checkpoint_sha256"] == sha
    assert data["clean"]["n"] == 16 and data["sparsity"]["claimed"] == 99
    assert "the check failed: sparsity: measured weights sparsity 90.00%" in failed.stderr
    assert len(server.requests_to("/doe/pruned/resolve/" + "0" * 40 + "/r18_c10_90.pt")) == 1  # the second run used the cache
    # the same command in-process (no interpreter start-up): JSON of a passing check, and an unknown key
    from evaluator import cli

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert cli.main(["check", f"{AP_KEY}_R18_CIFAR10_US_90", *common, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert cli.main(["check", f"{AP_KEY}_R18_CIFAR10_US_95", *common]) == 1
    assert "no checkpoint has model key" in capsys.readouterr().err

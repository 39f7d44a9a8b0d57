"""Issue 20: a new AP from its authors' own code, through the documented path (apb new / apb prepare -> manifest
entry -> apb check), to the authors' network; and the message of each mistake met on the way.

The two layouts are rebuilt from facts read in the authors' repositories (key names, shapes, the score rule),
never from their code:
- Heracles (intellisec/hydra-nonuniform@4106da8): HYDRA's ``{'epoch', 'arch', 'state_dict', 'best_prec1',
  'optimizer'}``; every conv and linear keeps a dense ``weight`` and a ``popup_scores`` of its shape; the kept
  weights of a layer are its ``n - int((1 - k) * n)`` largest ``|popup_scores|`` (models/layers.py GetSubnet), with
  a per-layer ``k`` from ``strategies/CIFAR10.json``: utils/logging.py parse_prune_stg splits the 21 ResNet18
  values into conv ``[:5] + [6:10] + [11:15] + [16:20]``, fc ``[20:]`` and shortcut ``[5], [10], [15]``, and
  utils/model.py set_prune_rate_model pops them in ``named_modules`` order by kind. The ks are not in the file.
- DNR (ksouvik52/DNR_ASP_DAC2021@0e3ec30): ``nn.Sequential(Normalize_layer(mean, std), ResNet18)``, keys
  ``0.mean`` / ``0.std`` ([3, 1, 1] Parameters) and ``1.<resnet key>``; ``ResNet18(num_classes)`` passes its
  argument as ``init_weight``, so the head keeps 100 rows; channels zeroed in place; a bare state dict.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from evaluator.errors import APBError
from tests.support.reference_models_a import CifarResNet18, top_fraction_mask

AP_HERACLES = "Heracles_Zhao2022NonUniform"
AP_DNR = "DNR_Kundu2020Tunable"
N_IMAGES = 24
# strategies/CIFAR10.json resnet18 weight "010_lamp"-like: 21 non-uniform kept fractions (values chosen here)
STRATEGY = [0.62, 0.31, 0.27, 0.22, 0.2, 0.45, 0.16, 0.15, 0.14, 0.13, 0.4, 0.12, 0.11, 0.1, 0.1, 0.35, 0.09,
            0.085, 0.08, 0.075, 0.7]  # 90.46% of the conv weights pruned


def authors_keep_fractions(model: nn.Module, strategy: list[float]) -> dict[str, float]:
    """The per-layer k of hydra-nonuniform: parse_prune_stg's split, then set_prune_rate_model's pops."""
    conv = strategy[:5] + strategy[6:10] + strategy[11:15] + strategy[16:20]
    fc, shortcut = strategy[20:], [strategy[5], strategy[10], strategy[15]]
    ks = {}
    for name, module in model.named_modules():
        if not hasattr(module, "popup_scores"):
            continue
        if "shortcut" in name:
            ks[name] = shortcut.pop(0)
        elif isinstance(module, nn.Conv2d):
            ks[name] = conv.pop(0)
        else:
            ks[name] = fc.pop(0)
    assert not conv and not fc and not shortcut
    return ks


def write_repo(root: Path, ap_key: str) -> Path:
    """A benchmark repository where *ap_key* is taxonomized but has no manifest (the dead end of issue 20)."""
    from evaluator.paths import repo_root

    folder = root / "submissions" / ap_key
    folder.mkdir(parents=True)
    real = repo_root() / "submissions" / ap_key / "taxonomy.json"
    (folder / "taxonomy.json").write_bytes(real.read_bytes())
    (root / "taxonomy").mkdir()
    (root / "taxonomy" / "vocabulary.yaml").write_bytes((repo_root() / "taxonomy" / "vocabulary.yaml").read_bytes())
    return root


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from evaluator.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def authors_predictions(model: nn.Module, data_dir: Path, normalize: tuple | None = None) -> torch.Tensor:
    """Correct / wrong per image of the authors' network on the test images apb check reads."""
    from tests.support.fake_data import tiny_images

    images, labels = tiny_images(N_IMAGES)
    batch = torch.tensor(images).float().div(255).permute(0, 3, 1, 2) if images.shape[-1] == 3 else \
        torch.tensor(images).float().div(255)
    if normalize is not None:
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalize)
        batch = (batch - mean) / std
    with torch.inference_mode():
        return model.eval()(batch).argmax(1) == torch.tensor(labels)


def conv_sparsity(state: dict[str, torch.Tensor], structure: str) -> float:
    convs = [value for value in state.values() if value.dim() == 4]
    if structure == "weights":
        return 100.0 * sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)
    zero = sum(int((w == 0).transpose(0, 1).flatten(1).all(1).sum()) for w in convs)
    return 100.0 * zero / sum(w.shape[1] for w in convs)


def check_json(root: Path, key: str, data_dir: Path, capsys) -> dict:
    code, out, err = run_cli(["check", key, "--root", str(root), "--data-dir", str(data_dir), "--n", str(N_IMAGES),
                              "--format", "json"], capsys)
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------------------ Heracles


@pytest.fixture(scope="module")
def heracles(tmp_path_factory) -> dict:
    torch.manual_seed(20)
    model = CifarResNet18(num_classes=10, scores="popup_scores")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ks = authors_keep_fractions(model, STRATEGY)
    for name, module in model.named_modules():
        if name in ks:
            module.keep = ks[name]
    folder = tmp_path_factory.mktemp("heracles")
    path = folder / "model_best.pth.tar"
    torch.save({"epoch": 20, "arch": "resnet18", "state_dict": model.state_dict(), "best_prec1": torch.tensor(28.9),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, path)
    return {"model": model, "ks": ks, "path": path, "folder": folder}


def test_heracles_through_prepare_and_check_is_the_authors_network(heracles, tmp_path, capsys):
    from tests.support.fake_data import write_tiny_cifar10

    model, ks = heracles["model"], heracles["ks"]
    ratios = tmp_path / "layer_ratios.json"  # what the printed export lines write from the authors' own model
    ratios.write_text(json.dumps(ks))
    root = write_repo(tmp_path / "repo", AP_HERACLES)
    write_tiny_cifar10(tmp_path / "data", n=N_IMAGES)
    code, out, err = run_cli(["prepare", str(heracles["path"]), "--architecture", "resnet18", "--dataset", "CIFAR10",
                              "--structure", "weights", "--sparsity", "90", "--claimed-clean", "5",
                              "--layer-ratios", str(ratios), "--out", str(tmp_path / "r18.safetensors"),
                              "--ap", AP_HERACLES, "--root", str(root)], capsys)
    assert code == 0, err
    assert "per-layer keep ratios of 21 layers" in out
    manifest = root / "submissions" / AP_HERACLES / "manifest.yaml"
    assert manifest.is_file() and "--layer-ratios" in manifest.read_text()  # created: no dead end
    # the authors' network, folded here by their rule alone (top |popup_scores| per layer with their k)
    folded = {}
    for key, value in model.state_dict().items():
        if key.endswith("popup_scores"):
            continue
        module = key.rpartition(".")[0]
        scores = model.state_dict().get(module + ".popup_scores")
        folded[key] = value if scores is None or not key.endswith("weight") else \
            value * top_fraction_mask(scores.abs(), ks[module])
    report = check_json(root, f"{AP_HERACLES}_R18_CIFAR10_US_90", tmp_path / "data", capsys)
    assert report["ok"]
    assert report["sparsity"]["weights"] == pytest.approx(conv_sparsity(folded, "weights"), abs=1e-4)
    correct = authors_predictions(model, tmp_path / "data")
    assert report["clean"]["correct"] == int(correct.sum())
    # the uniform fold (issue 20: "90.00% matches") is another network
    uniform = {key: value * top_fraction_mask(model.state_dict()[key.rpartition(".")[0] + ".popup_scores"].abs(), 0.1)
               for key, value in folded.items() if key.rpartition(".")[0] in ks and key.endswith("weight")}
    assert any(not torch.equal(uniform[key], folded[key]) for key in uniform)


def test_heracles_scores_without_a_stated_rule_are_refused_with_the_export_lines(heracles, tmp_path):
    from evaluator.run.prepare import prepare_checkpoint

    with pytest.raises(APBError) as error:
        prepare_checkpoint(heracles["path"], architecture="resnet18", dataset="CIFAR10", structure="weights",
                           sparsity=90, out=tmp_path / "x.safetensors")
    message = str(error.value)
    assert "--layer-ratios" in message and "never guesses" in message and "popup_scores" in message
    assert not (tmp_path / "x.safetensors").exists()


def test_a_manifest_with_scores_and_no_rule_names_the_field(heracles):
    from evaluator.checkpoint.load import load_state_dict
    from tests.support.entries import make_entry

    data = heracles["path"].read_bytes()
    with pytest.raises(APBError, match=r"models\[0\]\.masks.*set masks: popup-scores with keep_ratios"):
        load_state_dict(data, make_entry(state_dict_key="state_dict"))
    with pytest.raises(APBError, match=r"models\[0\]\.keep_ratios"):
        load_state_dict(data, make_entry(state_dict_key="state_dict", masks="popup-scores"))


def test_validate_requires_keep_ratios_with_popup_scores():
    from evaluator.repository.manifest import manifest_problems
    from evaluator.untrusted.safeio import parse_yaml_text

    text = ("schema_version: 1\nap_key: Heracles_Zhao2022NonUniform\nmodels:\n  - architecture: resnet18\n"
            "    dataset: CIFAR10\n    structure: weights\n    sparsity: 90\n    url: https://example.org/x.pt\n"
            "    sha256: " + "a" * 64 + "\n    masks: popup-scores\n    claimed: {clean_accuracy: 28.9}\n")
    data, lines = parse_yaml_text(text, "manifest.yaml")
    problems = [str(p) for p in manifest_problems(data, lines, "manifest.yaml")]
    assert len(problems) == 1 and "models[0].keep_ratios" in problems[0] and "never guesses" in problems[0]


def test_a_new_entry_needs_its_authors_clean_accuracy_and_an_imported_one_keeps_its_published_claims():
    """Issue 20, point 2: the schema requires ``claimed.clean_accuracy`` of every entry that is not imported."""
    from evaluator.repository.manifest import manifest_problems
    from evaluator.untrusted.safeio import parse_yaml_text

    head = ("schema_version: 1\nap_key: Heracles_Zhao2022NonUniform\nmodels:\n  - architecture: resnet18\n"
            "    dataset: CIFAR10\n    structure: weights\n    sparsity: 90\n    url: https://example.org/x.pt\n")

    def problems(tail: str) -> list[str]:
        data, lines = parse_yaml_text(head + tail, "manifest.yaml")
        return [str(p) for p in manifest_problems(data, lines, "manifest.yaml")]

    pinned = "    sha256: " + "a" * 64 + "\n"
    missing = problems(pinned)
    assert len(missing) == 1 and "models[0].claimed" in missing[0] and "clean_accuracy" in missing[0]
    only_aa = problems(pinned + "    claimed: {aa_robust_accuracy: 40.0}\n")
    assert len(only_aa) == 1 and "clean_accuracy" in only_aa[0]
    assert problems(pinned + "    claimed: {clean_accuracy: 80.1}\n") == []
    assert problems("    sha256: null\n    imported: original-benchmark\n") == []


# ------------------------------------------------------------------------------------------------ DNR


class NormalizeLayer(nn.Module):
    """DNR's Normalize_layer: mean and std as [3, 1, 1] Parameters (requires_grad False), in its state dict."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.tensor(mean).view(3, 1, 1), requires_grad=False)
        self.std = nn.Parameter(torch.tensor(std).view(3, 1, 1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


DNR_MEAN = [x / 255 for x in [125.3, 123.0, 113.9]]
DNR_STD = [x / 255 for x in [63.0, 62.1, 66.7]]


@pytest.fixture(scope="module")
def dnr(tmp_path_factory) -> dict:
    torch.manual_seed(52)
    resnet = CifarResNet18(num_classes=100)
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, nn.Conv2d):
                channels = module.weight.shape[1]
                dropped = torch.randperm(channels)[: (channels + 1) // 2]
                module.weight[:, dropped] = 0
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    net = nn.Sequential(NormalizeLayer(DNR_MEAN, DNR_STD), resnet)
    path = tmp_path_factory.mktemp("dnr") / "resnet18_cifar10_channel.pt"
    torch.save(net.state_dict(), path)
    return {"net": net, "path": path}


def test_dnr_through_new_prepare_and_check_is_the_authors_network(dnr, tmp_path, capsys):
    from tests.support.fake_data import write_tiny_cifar10

    root = write_repo(tmp_path / "repo", AP_DNR)
    taxonomy = (root / "submissions" / AP_DNR / "taxonomy.json").read_bytes()
    code, out, err = run_cli(["new", AP_DNR, "--root", str(root)], capsys)
    assert code == 0, err
    assert (root / "submissions" / AP_DNR / "manifest.yaml").is_file()
    assert (root / "submissions" / AP_DNR / "taxonomy.json").read_bytes() == taxonomy  # left alone
    write_tiny_cifar10(tmp_path / "data", n=N_IMAGES)
    code, out, err = run_cli(["prepare", str(dnr["path"]), "--architecture", "resnet18", "--dataset", "CIFAR10",
                              "--structure", "channels", "--sparsity", "50", "--claimed-clean", "5",
                              "--out", str(tmp_path / "dnr.safetensors"), "--ap", AP_DNR, "--root", str(root)], capsys)
    assert code == 0, err
    assert "prefix: '1.'" in out and "0.mean" in out and "variant: resnet18-head100" in out and "100 outputs" in out
    report = check_json(root, f"{AP_DNR}_R18_CIFAR10_S_50", tmp_path / "data", capsys)
    assert report["ok"] and report["sanity"]["shape"] == [16, 100]
    state = {key[2:]: value for key, value in dnr["net"].state_dict().items() if key.startswith("1.")}
    assert report["sparsity"]["channels"] == pytest.approx(conv_sparsity(state, "channels"), abs=1e-4)
    correct = authors_predictions(dnr["net"], tmp_path / "data")  # argmax over all 100 outputs, as DNR's test
    assert report["clean"]["correct"] == int(correct.sum())


# ------------------------------------------------------------------------------------------- mistakes


def load_error(state_or_bytes, **fields) -> str:
    from evaluator.checkpoint.load import build_checked_model, load_state_dict
    from tests.support.entries import make_entry

    entry = make_entry(**fields)
    data = state_or_bytes if isinstance(state_or_bytes, bytes) else torch_bytes(state_or_bytes)
    with pytest.raises(APBError) as error:
        build_checked_model(entry, load_state_dict(data, entry))
    return str(error.value)


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def dnr_under_module(dnr) -> dict:
    return {f"module.{key}": value for key, value in dnr["net"].state_dict().items()}


def test_strip_prefix_short_of_the_common_prefix_names_it(dnr):
    message = load_error(dnr_under_module(dnr), strip_prefix="module.", variant="resnet18-head100")
    assert "strip_prefix: 'module.1.'" in message, message


def test_strip_prefix_matching_nothing_names_the_prefix_that_would(dnr):
    message = load_error(dnr_under_module(dnr), strip_prefix="model.")
    assert "matches no key" in message and "strip_prefix: 'module.1.'" in message, message


def test_a_100_row_head_names_outputs_classes_and_the_variant(dnr):
    state = {key[2:]: value for key, value in dnr["net"].state_dict().items() if key.startswith("1.")}
    message = load_error(state)
    assert "100 outputs" in message and "10 classes" in message and "variant: resnet18-head100" in message
    assert "never cuts a head" in message, message


def test_deleted_scores_say_masks(heracles):
    from evaluator.run.sparsity import measure_sparsity
    from evaluator.registry.variants import build_variant

    dense = {key: value for key, value in heracles["model"].state_dict().items() if not key.endswith("popup_scores")}
    model = build_variant("resnet18")
    model.load_state_dict(dense)
    report = measure_sparsity(model, "weights", 90)
    assert not report.ok and "masks" in report.message and "keep_ratios" in report.message, report.message


def test_channel_mode_scores_name_the_mask_kind(heracles):
    state = {key: value for key, value in heracles["model"].state_dict().items() if not key.endswith("popup_scores")}
    for key in [k for k in state if k.endswith("conv1.weight") or k.endswith("conv2.weight")]:
        state[key.replace("weight", "popup_scores")] = torch.rand(1, state[key].shape[1], 1, 1)
    message = load_error(state, masks="popup-scores", keep_ratios="uniform")
    assert "channel-mode" in message and "masks" in message and "[1, 3, 1, 1]" in message, message


def test_hf_branch_revision_is_refused_with_the_commit_form():
    from evaluator.repository.manifest import url_problem

    message = url_problem("hf://doe/robust/r18.safetensors@main", allow_file_urls=False) or ""
    assert "40-hex commit" in message and "@main" in message
    assert url_problem("hf://doe/robust/r18.safetensors@" + "0" * 40, allow_file_urls=False) is None
    assert "40-hex commit" in (url_problem("hf://doe/robust/r18.safetensors", allow_file_urls=False) or "")
    # the https form of the same download: a branch or tag in /resolve/<revision>/ is refused the same way
    message = url_problem("https://huggingface.co/doe/robust/resolve/main/r18.safetensors", allow_file_urls=False) or ""
    assert "hf://doe/robust/r18.safetensors@<40-hex commit of main>" in message and "branch" in message
    assert url_problem("https://huggingface.co/doe/robust/resolve/" + "0" * 40 + "/r18.safetensors",
                       allow_file_urls=False) is None


@pytest.mark.parametrize(("head", "names"), [
    (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, ["Keras/HDF5", "safetensors", "CONTRIBUTING.md"]),
    (b"\x08\x07\x12\x07pytorch:\x05onnx" + b"\0" * 64, ["ONNX", "safetensors"]),
    (b"\0" * 8 + b"_CHECKPOINTABLE_OBJECT_GRAPH" + b"\0" * 64, ["TensorFlow", "safetensors"]),
])
def test_a_foreign_format_says_what_to_convert_to(tmp_path, head, names):
    from evaluator.run.prepare import prepare_checkpoint

    path = tmp_path / "model.bin"
    path.write_bytes(head)
    with pytest.raises(APBError) as error:
        prepare_checkpoint(path, architecture="resnet18", dataset="CIFAR10", structure="weights", sparsity=90)
    assert all(name in str(error.value) for name in names), str(error.value)


def test_claim_far_above_the_measurement_fails_with_causes_in_order():
    from evaluator.run.check import CheckReport, likely_causes
    from evaluator.checkpoint.compliance import ComplianceReport
    from tests.support.entries import make_entry

    entry = make_entry(masks="popup-scores", keep_ratios="uniform")
    report = CheckReport("k", {}, "a" * 64, True, ComplianceReport("resnet18", 122), n=256, clean_correct=29,
                         claimed={"clean_accuracy": 28.9}, causes=likely_causes(entry, None))
    assert not report.ok
    failure = report.failures()[0]
    assert failure.index("`masks`") < failure.index("`normalization`") < failure.index("`variant`") \
        < failure.index("`dataset`"), failure
    close = CheckReport("k", {}, "a" * 64, True, ComplianceReport("resnet18", 122), n=256, clean_correct=70,
                        claimed={"clean_accuracy": 28.9})
    assert close.claim_gap() is None


def test_check_names_no_masks_rule_for_an_entry_without_one():
    from evaluator.repository.manifest import loading_summary
    from tests.support.entries import make_entry

    assert "masks" not in loading_summary(make_entry())["key_rules"]
    assert loading_summary(make_entry(masks="none"))["key_rules"]["masks"] == "none"


def test_prepare_help_says_what_filters_and_channels_remove(capsys):
    from evaluator.cli import main
    from evaluator.paths import repo_root
    from evaluator.untrusted.safeio import load_yaml

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    values, _ = load_yaml(repo_root() / "taxonomy" / "vocabulary.yaml")
    for name in ("filters", "channels"):
        assert " ".join(values["fields"]["granularity"]["values"][name].split()) in text


def test_evaluate_n_is_a_trial_run_that_never_enters_the_leaderboard(tmp_path, capsys):
    from evaluator.record.assemble import refuse_smoke_in_submissions
    from evaluator.protocol import DEFAULT_PROTOCOL, load_protocol, on_first_samples
    from evaluator.repository.record_acceptance import _protocol_or_reason

    trial = on_first_samples(load_protocol(DEFAULT_PROTOCOL).require_evaluable(), 16)
    assert trial.id == f"{DEFAULT_PROTOCOL}-n16" and trial.n_samples == 16 and not trial.leaderboard
    assert "not a leaderboard run" in trial.description
    assert _protocol_or_reason(trial.id)[0] is None  # apb validate refuses its records under submissions/
    with pytest.raises(APBError, match="never written under submissions"):
        refuse_smoke_in_submissions(trial, tmp_path / "submissions" / AP_DNR / "records", tmp_path)
    code, _, err = run_cli(["evaluate", "Nope_Doe2024Nope_R18_CIFAR10_US_90", "--n", "16", "--root", str(tmp_path)],
                           capsys)
    assert code != 0 and "NOT a leaderboard run" in err  # said before anything else happens


def test_the_time_estimate_comes_from_a_timing_on_this_device():
    from evaluator.run.evaluate import time_estimate
    from evaluator.protocol import load_protocol
    from tests.support.tiny_models import tiny_cnn

    protocol = load_protocol("smoke-v1").require_evaluable()
    per_image, low, high = time_estimate(tiny_cnn(), protocol, (3, 32, 32), "cpu", 8)
    assert per_image > 0 and 0 < low < high
    assert time_estimate(tiny_cnn(), protocol, (3, 32, 32), "cpu", 0)[2] < high  # fewer samples attacked, less time


def test_keep_ratios_from_a_file_beside_the_manifest_fold_as_the_authors(heracles, tmp_path):
    from evaluator.checkpoint.load import load_state_dict
    from tests.support.entries import make_entry

    model, ks = heracles["model"], heracles["ks"]
    (tmp_path / "ratios.json").write_text(json.dumps(ks))
    entry = make_entry(state_dict_key="state_dict", masks="popup-scores", keep_ratios={"file": "ratios.json"},
                       manifest_path=tmp_path / "manifest.yaml")
    state = load_state_dict(heracles["path"].read_bytes(), entry)
    scores = model.state_dict()["layer4.1.conv2.popup_scores"]
    expected = model.state_dict()["layer4.1.conv2.weight"] * top_fraction_mask(scores.abs(), ks["layer4.1.conv2"])
    assert torch.equal(state["layer4.1.conv2.weight"], expected) and not any("popup" in key for key in state)
    (tmp_path / "ratios.json").write_text(json.dumps(STRATEGY))  # the authors' list: no layer names
    with pytest.raises(APBError, match="a list has no layer names"):
        load_state_dict(heracles["path"].read_bytes(), entry)

"""Issue 12's author mistakes, each with the message it now gets: every message names the manifest field,
the option or the command that fixes it. The issue's own wording is the id and the first column of MISTAKES.
Files are real (torch.save / safetensors bytes, a local server standing in for the Hub); ResNet18 and VGG16
are used for their keys and shapes (meta tensors where nothing is computed), forward passes only."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from evaluator.errors import APBError
from tests.support.entries import make_entry

KEY = "Demo_Doe2024Demo_R18_CIFAR10_US_90"


# ----------------------------------------------------------------------------------------------- helpers


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def meta_state(variant: str) -> dict[str, torch.Tensor]:
    from evaluator.registry.variants import build_variant

    with torch.device("meta"):
        return dict(build_variant(variant).state_dict())


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    from evaluator.registry.variants import build_variant

    torch.manual_seed(0)
    return {key: value.clone() for key, value in build_variant("resnet18").state_dict().items()}


def load_message(data: bytes | dict, **fields) -> str:
    """The error loading *data* (bytes, or a state dict given as is) under an entry with *fields*."""
    from evaluator.checkpoint.key_rules import apply_key_rules
    from evaluator.checkpoint.load import build_checked_model, load_state_dict

    entry = make_entry(**fields)
    with pytest.raises(APBError) as error:
        if isinstance(data, bytes):
            state = load_state_dict(data, entry)
        else:  # meta tensors (shapes only) skip the rules, which read values
            state = data if next(iter(data.values())).is_meta else apply_key_rules(data, entry)
        build_checked_model(entry, state)
    return str(error.value)


def url_message(url: str, allow_file_urls: bool = False) -> str:
    from evaluator.repository.manifest import url_problem

    return url_problem(url, allow_file_urls=allow_file_urls) or ""


def mini_repo(base: Path, url: str, sha256: str) -> Path:
    """A repository holding one manifest entry (KEY) at *url*."""
    manifest = base / "submissions" / "Demo_Doe2024Demo" / "manifest.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("schema_version: 1\nap_key: Demo_Doe2024Demo\nmodels:\n  - architecture: resnet18\n"
                        "    dataset: CIFAR10\n    structure: weights\n    sparsity: 90\n"
                        f"    url: {url}\n    sha256: {sha256}\n    format: safetensors\n    claimed: {{clean_accuracy: 10.0}}\n", encoding="utf-8")
    (base / "taxonomy").mkdir()
    return base


def cli_message(argv: list[str], capsys) -> str:
    from evaluator.cli import main

    assert main(argv) != 0
    captured = capsys.readouterr()
    return captured.err


# ----------------------------------------------------------------------------------------------- mistakes


def drive_share_link(**_):
    return url_message("https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQr/view?usp=sharing")


def hf_blob_url(**_):
    return url_message("https://huggingface.co/doe/robust/blob/main/r18.safetensors")


def hf_scheme_blob(**_):
    return url_message("hf://user/repo/blob/main/x.pt")


def broken_url_passes_local_check(tmp_path, monkeypatch, capsys, resnet_state, **_):
    """The file sits in the local cache by its sha256 but its URL serves nothing: --refetch finds out."""
    import hashlib

    from safetensors.torch import save
    from tests.support.fake_data import write_tiny_cifar10
    from tests.support.http_server import LocalServer

    torch.manual_seed(1)
    data = save({key: value * (torch.rand(value.shape) >= 0.9) if value.dim() == 4 else value
                 for key, value in resnet_state.items()})
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    (cache / "sha256").mkdir(parents=True)
    (cache / "sha256" / digest).write_bytes(data)
    root = mini_repo(tmp_path / "repo", "hf://doe/robust/r18.safetensors@" + "a" * 40, digest)
    write_tiny_cifar10(tmp_path / "data", n=4)
    monkeypatch.setenv("APB_CACHE_DIR", str(cache))
    with LocalServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        argv = ["check", KEY, "--root", str(root), "--data-dir", str(tmp_path / "data"), "--n", "4"]
        from evaluator.cli import main

        assert main(argv) == 0  # from the cache: passes without contacting the URL
        capsys.readouterr()
        return cli_message(argv + ["--refetch"], capsys)


def safetensors_inherits_state_dict_key(resnet_state, **_):
    from safetensors.torch import save

    return load_message(save(resnet_state), format="safetensors", state_dict_key="state_dict")


def no_complete_triple(tmp_path, **_):
    import json
    import shutil

    from evaluator.repository.validate import validate_repository

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "taxonomy", tmp_path / "taxonomy")
    folder = tmp_path / "submissions" / "Demo_Doe2024Demo"
    folder.mkdir(parents=True)
    taxonomy = json.loads((root / "submissions" / "HYDRA_Sehwag2020Hydra" / "taxonomy.json").read_text())
    (folder / "taxonomy.json").write_text(json.dumps({**taxonomy, "ap_key": "Demo_Doe2024Demo", "name": "Demo"}))
    mini_repo(tmp_path / "unused", "https://example.org/x.safetensors", "a" * 64)
    (folder / "manifest.yaml").write_text(
        (tmp_path / "unused" / "submissions" / "Demo_Doe2024Demo" / "manifest.yaml").read_text())
    return "\n".join(str(problem) for problem in validate_repository(tmp_path).problems)


def file_url_in_submissions(**_):
    return url_message("file:///home/doe/r18.safetensors")


def n_with_the_demos_test_set(tmp_path, **_):
    from evaluator.run.datasets import load_test_set
    from tests.support.fake_data import write_tiny_cifar10

    write_tiny_cifar10(tmp_path, n=12)
    with pytest.raises(APBError) as error:
        load_test_set("CIFAR10", tmp_path, 10000)
    return str(error.value)


def missing_sha256(**_):
    from evaluator.untrusted.safeio import parse_yaml_text
    from evaluator.repository.manifest import manifest_problems

    text = ("schema_version: 1\nap_key: Demo_Doe2024Demo\nmodels:\n  - {architecture: resnet18, dataset: CIFAR10, "
            "structure: weights, sparsity: 90, url: 'https://example.org/x.pt'}\n")
    data, lines = parse_yaml_text(text, "manifest.yaml")
    return "\n".join(str(problem) for problem in manifest_problems(data, lines, "manifest.yaml"))


def dataparallel_without_strip_prefix(resnet_state, **_):
    return load_message({f"module.{key}": value for key, value in resnet_state.items()})


def resnet_declared_vgg16(resnet_state, **_):
    return load_message(resnet_state, architecture="vgg16")


def vgg_declared_resnet18(**_):
    return load_message(meta_state("vgg16"))


def torchvision_resnet18(**_):
    import torchvision

    with torch.device("meta"):
        state = dict(torchvision.models.resnet18(num_classes=10).state_dict())
    return load_message(state)


def normalization_buffers_inside(resnet_state, **_):
    return load_message({**resnet_state, "normalize.mean": torch.tensor([0.49, 0.48, 0.45]),
                         "normalize.std": torch.tensor([0.25, 0.24, 0.26])})


def hydra_popup_scores(resnet_state, **_):
    scores = {key.replace(".weight", ".popup_scores"): torch.rand(value.shape) for key, value in resnet_state.items()
              if key.endswith("conv1.weight")}
    return load_message({**resnet_state, **scores})


def safetensors_declared_torch(resnet_state, **_):
    from safetensors.torch import save

    return load_message(save(resnet_state), format="torch")


def torch_declared_safetensors(resnet_state, **_):
    return load_message(torch_bytes(resnet_state), format="safetensors")


def whole_model_pickled(**_):
    from evaluator.registry.variants import build_variant

    return load_message(torch_bytes(build_variant("resnet18")))


def offline_download(tmp_path, monkeypatch, capsys, **_):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    root = mini_repo(tmp_path / "repo", "https://example.org/x.safetensors", "a" * 64)
    message = cli_message(["check", KEY, "--root", str(root), "--data-dir", str(tmp_path / "data"), "--download"],
                          capsys)
    assert len(message.strip().splitlines()) == 1 and "Traceback" not in message
    return message


def sparsity_far_above_claim(resnet_state, **_):
    from evaluator.run.sparsity import measure_sparsity
    from evaluator.registry.variants import build_variant

    model = build_variant("resnet18")
    state = {key: (value * (torch.rand(value.shape) < 0.0001) if value.dim() == 4 else value)
             for key, value in resnet_state.items()}
    model.load_state_dict(state)
    report = measure_sparsity(model, "weights", 90)
    assert report.measured > 99.9 and not report.ok
    return report.message


def sparsity_below_claim(resnet_state, **_):
    from evaluator.run.sparsity import measure_sparsity
    from evaluator.registry.variants import build_variant

    model = build_variant("resnet18")
    model.load_state_dict({key: (value * (torch.rand(value.shape) < 0.5) if value.dim() == 4 else value)
                           for key, value in resnet_state.items()})
    report = measure_sparsity(model, "weights", 90)
    assert not report.ok
    return report.message


def clean_far_below_claim(**_):
    from evaluator.run.check import CheckReport, likely_causes
    from evaluator.checkpoint.compliance import ComplianceReport

    report = CheckReport(KEY, {}, "a" * 64, True, ComplianceReport("resnet18", 122), n=200, clean_correct=20,
                         claimed={"clean_accuracy": 80.0}, causes=likely_causes(make_entry(), None))
    assert not report.ok  # far below the claim fails (issue 20), it is not only flagged
    return "\n".join(report.failures())


def comment_for(records: dict, claims: dict | None = None, missing: list | None = None) -> str:
    from evaluator.ci.report import render_report
    from evaluator.ci.report_input import ReportInput
    from tests.support.ci_records import sha

    keys = list(records) + [item["model_key"] for item in missing or []]
    plan = {"protocol": "linf-8-255-v1", "head": "d" * 40, "blocked_files": [], "problems": [], "skipped": [],
            "entries": {}, "reason": "planned",
            "include": [{"model_key": key, "sha256": sha("1"), "leg": key} for key in keys],
            "models": {key: {"claimed": (claims or {}).get(key)} for key in keys}}
    return render_report(ReportInput("evaluation", "d" * 40, validation={"ok": True, "problems": []}, plan=plan,
                                     records=records, collected={"missing": missing or []}))


def bot_headline_success_for_flagged(**_):
    from tests.support.ci_records import evaluated_record, per_sample, sha

    record = evaluated_record(KEY, sha("1"), per_sample(10000))
    body = comment_for({KEY: record}, {KEY: {"clean_accuracy": 95.0, "aa_robust_accuracy": 90.0}})
    return body.split("\n\n")[1] + "\n" + body


def failed_check_reason_hidden(**_):
    log = ("apb check " + KEY + "\nresult      FAILED\n    sparsity: measured weights sparsity 50.00% is below the "
           "accepted 89.5-92.5% for the claimed 90%; fix `sparsity`\nerror: the check failed\n")
    body = comment_for({}, missing=[{"model_key": KEY, "reason": "no output", "log": log}])
    return next(line for line in body.splitlines() if line.startswith("#### ❌"))


def model_key_maker_percent_sign(**_):
    from evaluator.registry.model_keys import model_key_maker

    with pytest.raises(ValueError) as error:
        model_key_maker("HYDRA_Sehwag2020Hydra", "resnet18", "CIFAR10", "weights", "90%")
    return str(error.value)


def cuda_without_gpu(monkeypatch, **_):
    from evaluator.device import checked_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(APBError) as error:
        checked_device("cuda:0")
    return str(error.value)


def training_args_namespace(resnet_state, **_):
    import argparse

    return load_message(torch_bytes({"state_dict": resnet_state, "args": argparse.Namespace(lr=0.1)}),
                        state_dict_key="state_dict")


def weights_under_another_key(resnet_state, **_):
    return load_message(torch_bytes({"net": resnet_state, "epoch": 3}), state_dict_key="state_dict")


def check_of_an_ap_without_manifest(tmp_path, capsys, **_):
    (tmp_path / "submissions").mkdir()
    (tmp_path / "taxonomy").mkdir()
    return cli_message(["check", "MyMethod_Doe2025Robust", "--root", str(tmp_path)], capsys)


def prepare_with_the_wrong_sparsity(tmp_path, **_):
    from evaluator.run.prepare import prepare_checkpoint
    from tests.support.training_checkpoints import pruned_resnet18, save_training_checkpoint

    path = save_training_checkpoint(pruned_resnet18(90), tmp_path / "checkpoint.pt")
    with pytest.raises(APBError) as error:
        prepare_checkpoint(path, architecture="resnet18", dataset="CIFAR10", structure="weights", sparsity=95)
    assert not (tmp_path / "checkpoint.safetensors").exists()  # bad input changes nothing on disk
    return str(error.value)


# (the wording, how the mistake is made, what the message must name)
MISTAKES = [
    ("A pasted Google Drive share link passes apb validate", drive_share_link, ["gdrive://1AbCdEfGhIjKlMnOpQr"]),
    ("an HF /blob/ URL passes apb validate", hf_blob_url, ["hf://doe/robust/r18.safetensors@<40-hex commit of main>"]),
    ("hf://user/repo/blob/main/x.pt is accepted too and fetches the wrong path", hf_scheme_blob,
     ["hf://user/repo/x.pt@<40-hex commit of main>"]),
    ("apb check prints PASSED because it reads the file from the local cache and never contacts the URL",
     broken_url_passes_local_check, ["HTTP 404", "models[0].url"]),
    ("its safetensors entry inherits state_dict_key: state_dict", safetensors_inherits_state_dict_key,
     ["state_dict_key: null"]),
    ("CONTRIBUTING never states the rule of one complete (architecture, dataset, structure) triple",
     no_complete_triple, ["complete (architecture, dataset, structure) triple", "models"]),
    ("nor the local file:// -> apb lock -> --allow-file-urls -> publish -> swap-URL flow", file_url_in_submissions,
     ["--allow-file-urls", "publish"]),
    ("nor --n with the demo's test set", n_with_the_demos_test_set, ["--n 12"]),
    ("problems surface in waves (a new entry without its sha256)", missing_sha256, ["apb lock"]),
    ("a DataParallel file with strip_prefix: null never says set strip_prefix: module.",
     dataparallel_without_strip_prefix, ["strip_prefix: 'module.'"]),
    ("a ResNet18 declared as vgg16", resnet_declared_vgg16, ["architecture: resnet18"]),
    ("the other base architecture (a VGG16 declared as resnet18)", vgg_declared_resnet18, ["architecture: vgg16"]),
    ("a torchvision ResNet18 (7x7 conv1)", torchvision_resnet18,
     ["torchvision's ImageNet ResNet18", "not the benchmark's CIFAR ResNet18"]),
    ("mean/std buffers inside the model", normalization_buffers_inside, ["normalization_buffers", "normalization"]),
    ("HYDRA-style popup_scores", hydra_popup_scores, ["masks: popup-scores"]),
    ("A safetensors file declared format: torch says it holds objects other than tensors",
     safetensors_declared_torch, ["set format: safetensors"]),
    ("safetensors magic bytes vs format (a torch file declared format: safetensors)", torch_declared_safetensors,
     ["set format: torch"]),
    ("torch.save(model) prints torch's add_safe_globals advice", whole_model_pickled, ["save model.state_dict()"]),
    ("apb check --download offline prints a 72-line traceback", offline_download, ["--download", "network"]),
    ("a 99.99%-sparse file passes as matches the claimed 90%", sparsity_far_above_claim, ["above", "`sparsity`"]),
    ("the sparsity check is one-directional (a denser file than claimed)", sparsity_below_claim,
     ["below", "`sparsity`"]),
    ("A clean accuracy 70 points below the author's claim (wrong normalization) passes without a word",
     clean_far_below_claim, ["below the claimed 80%", "`normalization`"]),
    ("the headline is success for a flagged model whose measured numbers are far off its claims",
     bot_headline_success_for_flagged, ["**⚠️", "claimed clean outside the 95% interval"]),
    ("a failed check hides its reason in a collapsed log tail", failed_check_reason_hidden,
     ["check failed: sparsity", "fix \\`sparsity\\`"]),
    ("model_key_maker(sparsity_rate='90%') raises a bare ValueError", model_key_maker_percent_sign,
     ["sparsity_rate", "90"]),
    ("device='cuda:0' without a GPU gives torch's raw error", cuda_without_gpu, ["device='cpu'"]),
    ("a training checkpoint that keeps its argparse arguments", training_args_namespace,
     ["allowed_globals: [argparse.Namespace]"]),
    ("the weights sit under another key than state_dict_key", weights_under_another_key, ["set state_dict_key: net"]),
    ("apb check takes one model key (not an AP): an AP without a manifest", check_of_an_ap_without_manifest,
     ["apb new MyMethod_Doe2025Robust"]),
    ("no command turns a training checkpoint into a clean submission file (apb prepare with a wrong --sparsity)",
     prepare_with_the_wrong_sparsity, ["sparsity", "below the accepted"]),
]


def test_thirty_mistakes_are_listed():
    assert len(MISTAKES) == 30 and len({wording for wording, _, _ in MISTAKES}) == 30


@pytest.mark.parametrize(("wording", "make", "names"), MISTAKES, ids=[m[1].__name__ for m in MISTAKES])
def test_the_message_names_the_fix(wording, make, names, tmp_path, monkeypatch, capsys, resnet_state):
    message = make(tmp_path=tmp_path, monkeypatch=monkeypatch, capsys=capsys, resnet_state=resnet_state)
    missing = [name for name in names if name not in message]
    assert not missing, f"{wording}: {missing} not in:\n{message}"
    assert "add_safe_globals" not in message and "Traceback" not in message

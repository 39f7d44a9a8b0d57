"""``apb lock``: download unpinned checkpoints from a local server and pin them, touching nothing else."""
from __future__ import annotations

import hashlib
import os

import pytest

from evaluator import cli
from evaluator.errors import APBError
from evaluator.checkpoint.lock import lock_manifests, pin_sha256
from evaluator.repository.manifest import load_manifest
from tests.support.entries import AP_KEY
from tests.support.http_server import LocalServer

FIRST, SECOND = os.urandom(5000), os.urandom(7000)
SHA_FIRST, SHA_SECOND = hashlib.sha256(FIRST).hexdigest(), hashlib.sha256(SECOND).hexdigest()
PINNED = "ab" * 32
REV = "c0ffee" * 6 + "c0ff"  # a 40-hex commit: manifests pin hf:// files to commits

MANIFEST = f"""# Demo manifest: comments, blank lines, quoting and key order must survive apb lock.
schema_version: 1
ap_key: {AP_KEY}

defaults:
  state_dict_key: state_dict   # where the weights sit
models:
  - architecture: resnet18     # first
    dataset: CIFAR10
    structure: weights
    sparsity: 90
    url: "gdrive://1AbC-dEf_2"
    sha256: null    # pin me
    claimed: {{clean_accuracy: 80.1}}
  - architecture: resnet18
    dataset: CIFAR10
    structure: weights
    sparsity: 95
    url: hf://doe/pruned/r18_95.pt@{REV}
    imported: original-benchmark
  - architecture: vgg16
    dataset: SVHN
    structure: filters
    sparsity: 50
    url: hf://doe/pruned/v16.pt@{REV}
    sha256: {PINNED}
    claimed: {{clean_accuracy: 60.0}}
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository with one manifest whose two unpinned files are on a local Drive-like and Hub-like server."""
    with LocalServer() as server:
        server.add("/uc?id=1AbC-dEf_2", FIRST)
        server.add_hf_file("doe/pruned", "r18_95.pt", SECOND, revision=REV)
        monkeypatch.setenv("APB_GDRIVE_URL", server.url("/uc?id={id}"))
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        folder = tmp_path / "repo" / "submissions" / AP_KEY
        folder.mkdir(parents=True)
        (tmp_path / "repo" / "taxonomy").mkdir()
        (folder / "manifest.yaml").write_text(MANIFEST)
        yield tmp_path / "repo", folder / "manifest.yaml", server


def test_lock_pins_unpinned_entries_and_changes_nothing_else(repo, tmp_path):
    root, manifest, _ = repo
    result = lock_manifests(root, cache_dir=tmp_path / "cache", progress=False)
    assert result.problems == []
    assert [(item.model_key, item.sha256) for item in result.pinned] == [
        (f"{AP_KEY}_R18_CIFAR10_US_90", SHA_FIRST), (f"{AP_KEY}_R18_CIFAR10_US_95", SHA_SECOND)]
    expected = (MANIFEST.replace("    sha256: null    # pin me", f"    sha256: {SHA_FIRST}    # pin me")
                .replace(f"    url: hf://doe/pruned/r18_95.pt@{REV}\n",
                         f"    url: hf://doe/pruned/r18_95.pt@{REV}\n    sha256: {SHA_SECOND}\n"))
    assert manifest.read_text() == expected
    assert [entry.sha256 for entry in load_manifest(manifest)] == [SHA_FIRST, SHA_SECOND, PINNED]
    assert (tmp_path / "cache" / "sha256" / SHA_FIRST).read_bytes() == FIRST
    assert sorted(path.name for path in manifest.parent.iterdir()) == ["manifest.yaml"]  # no temp files left
    again = lock_manifests(root, cache_dir=tmp_path / "cache", progress=False)
    assert again.pinned == [] and manifest.read_text() == expected


def test_a_failed_download_pins_the_others_and_names_the_entry(repo, tmp_path):
    root, manifest, server = repo
    server.add("/uc?id=1AbC-dEf_2", FIRST, html=True)
    result = lock_manifests(root, cache_dir=tmp_path / "cache", progress=False)
    assert [item.sha256 for item in result.pinned] == [SHA_SECOND]
    [problem] = result.problems
    assert f"{AP_KEY}_R18_CIFAR10_US_90" in str(problem) and "HTML page" in str(problem)
    assert "sha256: null    # pin me" in manifest.read_text()


def test_apb_lock_command(repo, tmp_path, capsys, monkeypatch):
    root, manifest, _ = repo
    monkeypatch.setenv("APB_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["lock", AP_KEY, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"pinned {AP_KEY}_R18_CIFAR10_US_90: sha256 {SHA_FIRST}" in out
    assert cli.main(["lock", "--root", str(root)]) == 0
    assert "nothing to pin" in capsys.readouterr().out
    assert cli.main(["lock", "Nope_Nobody2020Nothing", "--root", str(root)]) == 1
    assert "no AP directory for Nope_Nobody2020Nothing" in capsys.readouterr().err


def test_invalid_manifest_is_reported_not_edited(repo, tmp_path):
    root, manifest, _ = repo
    broken = MANIFEST.replace("sparsity: 90", "sparsity: 91")
    manifest.write_text(broken)
    result = lock_manifests(root, cache_dir=tmp_path / "cache", progress=False)
    assert result.pinned == [] and "sparsity" in str(result.problems[0]) and manifest.read_text() == broken


ENTRY = """schema_version: 1
ap_key: {ap}
models:
  - architecture: resnet18
    dataset: CIFAR10
    structure: weights
    sparsity: 90
    url: gdrive://x1
    imported: original-benchmark
{sha_line}"""


@pytest.mark.parametrize("sha_line, pinned_line", [
    ("    sha256: ~\n", f"    sha256: {PINNED}\n"),
    ("    sha256:\n", f"    sha256: {PINNED}\n"),
    ("    sha256: ''   # later\n", f"    sha256: {PINNED}   # later\n"),
])
def test_pin_sha256_value_forms(sha_line, pinned_line):
    text = ENTRY.format(ap=AP_KEY, sha_line=sha_line)
    pinned = pin_sha256(text, 0, PINNED, "m.yaml")
    assert pinned == ENTRY.format(ap=AP_KEY, sha_line=pinned_line)


def test_pin_sha256_adds_the_line_after_the_url_when_there_is_none():
    text = ENTRY.format(ap=AP_KEY, sha_line="")
    assert pin_sha256(text, 0, PINNED, "m.yaml") == text.replace("url: gdrive://x1\n",
                                                                  f"url: gdrive://x1\n    sha256: {PINNED}\n")


def test_pin_sha256_keeps_crlf_line_endings():
    text = ENTRY.format(ap=AP_KEY, sha_line="    sha256: null\n").replace("\n", "\r\n")
    assert pin_sha256(text, 0, PINNED, "m.yaml") == text.replace("sha256: null", f"sha256: {PINNED}")


def test_pin_sha256_refuses_flow_style_entries_and_gives_the_pin():
    text = f"schema_version: 1\nap_key: {AP_KEY}\nmodels:\n  - {{architecture: vgg16, url: 'gdrive://x'}}\n"
    with pytest.raises(APBError) as error:
        pin_sha256(text, 0, PINNED, "m.yaml")
    assert "flow style" in str(error.value) and f"sha256: {PINNED}" in str(error.value) and "m.yaml:4" in str(error.value)

"""CONTRIBUTING.md, run as written: every block of the guide in order, in a copy of the repository, on typical
training checkpoints (torch.nn.utils.prune masks, DataParallel prefix, a nested {'state_dict': ..., 'epoch': ...}
dict). The walk new -> prepare -> validate (file://) -> check -> publish -> lock -> validate -> check --refetch
-> evaluate (smoke-v2) -> preview must be green at every step: this is the author path of issue 12.

Blocks: ``bash`` lines starting with ``apb`` run through the CLI (in this process); the few other commands
are listed in NOT_RUN with the reason. A ``json`` block after ``<!-- file: PATH -->`` is written to PATH. The
first ``yaml`` block is the entry ``apb prepare`` adds (compared with what it added); the second is the URL
swap after publishing, which the test performs: it serves the files where the Hugging Face Hub would (a
local server, ``HF_ENDPOINT``) and edits the manifest as the block shows. The ``python`` upload block is
checked against huggingface_hub's signatures (uploading needs the network) and the URLs it prints must
validate."""
from __future__ import annotations

import ast
import inspect
import re
import shlex
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from evaluator.cli import main
from evaluator.run.datasets import write_cifar10_test
from evaluator.untrusted.safeio import parse_yaml_text
from evaluator.repository.manifest import url_problem
from tests.support.evaluation import one_torch_thread  # noqa: F401  (fixture)
from tests.support.http_server import LocalServer
from tests.support.training_checkpoints import (labels_without_constant_class, pruned_resnet18,
                                                save_training_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "CONTRIBUTING.md"
AP = "MyMethod_Doe2025Robust"
REVISION = "4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
NOT_RUN = {
    "make install": "the tests run with the package installed",
    "git add": "committing and pushing need the author's fork",
    "git commit": "committing and pushing need the author's fork",
    "git push": "committing and pushing need the author's fork",
}
# The guide's example claim (80.1%) is what a trained model measures; the test's checkpoints are untrained (0% on
# its test file), so the claim the test makes in their name is what they measure: the only edit to the guide.
CLAIM_AS_WRITTEN, CLAIM_OF_THE_TEST_MODELS = "80.1", "1"
BLOCK = re.compile(r"^(?:<!-- file: (?P<file>\S+) -->\n)?(?P<indent> *)```(?P<lang>\w+)\n(?P<body>.*?)^(?P=indent)```$",
                   re.M | re.S)


def guide_blocks() -> list[tuple[str, str, str | None]]:
    """(language, dedented body, file marker) of every fenced block of CONTRIBUTING.md up to the sample comment."""
    text = GUIDE.read_text(encoding="utf-8").split("<!-- sample-report:start", 1)[0]
    return [(m["lang"], textwrap.dedent(m["body"]), m["file"]) for m in BLOCK.finditer(text)]


def write_training_checkpoints(base: Path) -> dict[int, Path]:
    return {sparsity: save_training_checkpoint(pruned_resnet18(sparsity), base / "runs" / f"r18_w{sparsity}" /
                                               "checkpoint.pt") for sparsity in (90, 95, 99)}


def run_apb(line: str, capsys) -> str:
    code = main(shlex.split(line)[1:])
    out = capsys.readouterr()
    assert code == 0, f"{line}\n{out.out}\n{out.err}"
    return out.out + out.err


def check_upload_snippet(body: str) -> None:
    """The upload example calls HfApi methods with arguments they accept, and prints hf:// URLs that validate."""
    from huggingface_hub import HfApi

    tree = ast.parse(body)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "api"]
    assert {call.func.attr for call in calls} == {"create_repo", "upload_file"}
    for call in calls:
        signature = inspect.signature(getattr(HfApi, call.func.attr))
        signature.bind(None, *[None] * len(call.args), **{kw.arg: None for kw in call.keywords})
    template = re.search(r'print\(f"(hf://[^"]+)"\)', body)[1]
    for name in re.search(r"for name in \[(.*?)\]", body)[1].replace('"', "").split(", "):
        url = template.replace("{name}", name).replace("{info.oid}", REVISION)
        assert url_problem(url, allow_file_urls=False) is None, url


def publish_and_swap(body: str, base: Path, server: LocalServer, prepared: dict[str, str]) -> None:
    """Serve each prepared file where the Hub serves hf://doe/robust-pruning/<name>@REVISION and edit the
    manifest as the guide's block shows (its url and `sha256: null`)."""
    shown = parse_yaml_text(body, "CONTRIBUTING.md")[0]
    assert shown["sha256"] is None and shown["url"].startswith("hf://doe/robust-pruning/")
    manifest = base / "submissions" / AP / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8")
    for name, sha in prepared.items():
        data = (base / "runs" / f"{name}.safetensors").read_bytes()
        url = server.add_hf_file("doe/robust-pruning", f"{name}.safetensors", data, revision=REVISION)
        assert url == shown["url"].replace("r18_c10_w90", name)
        old = f'url: "{(base / "runs" / f"{name}.safetensors").resolve().as_uri()}"\n    sha256: {sha}\n'
        assert old in text
        text = text.replace(old, f"url: {url}\n    sha256: null\n")
    manifest.write_text(text, encoding="utf-8")


def test_the_author_path_of_contributing_runs_green(tmp_path, monkeypatch, capsys):
    base = tmp_path / "repo"
    for folder in ("taxonomy", "submissions"):
        shutil.copytree(ROOT / folder, base / folder)
    write_training_checkpoints(base)
    images = np.random.default_rng(0).integers(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)
    write_cifar10_test(base / "data", images, labels_without_constant_class(100))
    monkeypatch.chdir(base)
    monkeypatch.setenv("APB_ROOT", str(base))
    monkeypatch.setenv("APB_CACHE_DIR", str(tmp_path / "cache"))
    outputs: list[str] = []
    yaml_blocks = 0
    prepared: dict[str, str] = {}
    with LocalServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        for lang, body, file in guide_blocks():
            body = body.replace(f"--claimed-clean {CLAIM_AS_WRITTEN}", f"--claimed-clean {CLAIM_OF_THE_TEST_MODELS}")
            body = body.replace(f"clean_accuracy: {CLAIM_AS_WRITTEN}", f"clean_accuracy: {CLAIM_OF_THE_TEST_MODELS}")
            if lang == "bash":
                for line in filter(None, (raw.split(" #")[0].strip() for raw in body.splitlines())):
                    if line.startswith("apb "):
                        outputs.append(run_apb(line, capsys))
                    else:
                        assert any(line.startswith(prefix) for prefix in NOT_RUN), f"unlisted command: {line}"
            elif lang == "json":
                assert file and (base / file).is_file(), "the json block replaces a file `apb new` wrote"
                (base / file).write_text(body, encoding="utf-8")
            elif lang == "python":
                check_upload_snippet(body)
            elif lang == "yaml" and yaml_blocks == 0:
                yaml_blocks += 1
                manifest = parse_yaml_text((base / "submissions" / AP / "manifest.yaml").read_text(), "m")[0]
                shown = parse_yaml_text(body, "CONTRIBUTING.md")[0][0]
                assert list(shown) == list(manifest["models"][0])
                prepared = {f"r18_c10_w{m['sparsity']}": m["sha256"] for m in manifest["models"]}
            elif lang == "yaml":
                yaml_blocks += 1
                publish_and_swap(body, base, server, prepared)
    text = "\n".join(outputs)
    manifest = parse_yaml_text((base / "submissions" / AP / "manifest.yaml").read_text(), "m")[0]
    assert {f"r18_c10_w{m['sparsity']}": m["sha256"] for m in manifest["models"]} == prepared  # lock pinned the same
    assert all(m["url"].startswith("hf://") for m in manifest["models"])
    assert "masks: 20 torch.nn.utils.prune masks folded" in text and "prefix: 'module.' stripped" in text
    assert "apb check MyMethod_Doe2025Robust: 3 of 3 passed" in text
    assert "clean accuracy" in text and "under protocol smoke-v2" in text
    preview = outputs[-1]
    assert "### APB evaluation of" in preview and "under protocol `smoke-v2`" in preview
    # green: no failure; the only flag is the honest one about the tiny test file
    assert "**⚠️ 3 model\\(s\\): 0 ok, 3 flagged, 0 failed**" in preview
    notes = re.findall(r"^\| ⚠️ \| `[^`]+` \|.*\| (.*) \|$", preview, re.M)
    assert notes == ["unofficial-test-set"] * 3, preview
    assert len([server_request for server_request in server.log if "/resolve/" in server_request.path]) >= 6


def test_section_8_automation_doc_and_validate_workflow_agree_on_leaderboard_check():
    """A data-only PR is validated without `apb leaderboard --check` (issue 20): the guide's section 8, the
    automation doc and the validate workflow's own steps say the same."""
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "validate.yml").read_text(encoding="utf-8"))
    steps = [step for job in workflow["jobs"].values() for step in job.get("steps", [])]
    check = [step for step in steps if "apb leaderboard --check" in step.get("run", "")]
    assert len(check) == 1 and "data_only != 'true'" in check[0]["if"]
    assert any("apb validate" in step.get("run", "") and "data_only" not in step.get("if", "") for step in steps)
    section = GUIDE.read_text(encoding="utf-8").split("## 8. What happens next", 1)[1].split("\n2. ", 1)[0]
    text = " ".join(section.split())
    assert "A data-only PR" in text and "does not run `apb leaderboard --check`" in text
    assert "A PR that changes code also runs `apb leaderboard --check`" in text
    automation = " ".join((ROOT / "docs" / "automation.md").read_text(encoding="utf-8").split())
    assert "A PR that changes code also runs `apb leaderboard --check`" in automation

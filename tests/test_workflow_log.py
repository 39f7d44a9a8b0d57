"""No workflow commands from data: under GitHub Actions ``apb`` wraps its output in ``::stop-commands::<token>``
... ``::<token>::`` and prints names from files with repr(), so a state-dict key holding ``\\n::notice ...`` is
never a command line in a runner's log."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from evaluator.registry.variants import build_model
from evaluator.untrusted.workflow_log import commands_stopped
from tests.support.entries import AP_KEY
from tests.support.fake_data import write_tiny_cifar10
from tests.support.http_server import LocalServer
from tests.test_check import write_synthetic_repo

REPO = Path(__file__).resolve().parents[1]
HOSTILE_KEYS = ["\n::notice title=x::pwned", "fc.bias\n::add-mask::hidden\n::error::from a key",
                "x\n::set-output name=a::b", "y\n::stop-commands::abc"]


def command_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("::")]


@pytest.mark.slow
def test_apb_check_under_actions_prints_no_workflow_command_from_a_hostile_key(tmp_path):
    state = dict(build_model("resnet18").state_dict())
    for key in HOSTILE_KEYS:
        state[key] = torch.zeros(1)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state}, path)
    data = path.read_bytes()
    write_tiny_cifar10(tmp_path / "data", n=4)
    with LocalServer() as server:
        url = server.add_hf_file("doe/pruned", "r18.pt", data, revision="0" * 40)
        write_synthetic_repo(tmp_path / "repo", url, hashlib.sha256(data).hexdigest())
        env = {**os.environ, "HF_ENDPOINT": server.base_url, "APB_CACHE_DIR": str(tmp_path / "cache"),
               "GITHUB_ACTIONS": "true", "PYTHONPATH": str(REPO)}
        result = subprocess.run([sys.executable, "-m", "evaluator.cli", "check", f"{AP_KEY}_R18_CIFAR10_US_90",
                                 "--root", str(tmp_path / "repo"), "--data-dir", str(tmp_path / "data"), "--n", "4",
                                 "--device", "cpu"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 1, result.stderr
    assert command_lines(result.stdout) == []  # stdout stays the command's own output
    stop, resume = command_lines(result.stderr)
    token = stop.removeprefix("::stop-commands::")
    assert len(token) == 32 and resume == f"::{token}::"
    assert result.stderr.splitlines()[0] == stop and result.stderr.splitlines()[-1] == resume
    for key in HOSTILE_KEYS:
        assert repr(key) in result.stdout  # one line, the newline shown as \n


def test_outside_actions_nothing_is_added():
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), commands_stopped({"GITHUB_ACTIONS": "false"}) as token:
        print("hello")
    assert token is None and out.getvalue() == "hello\n" and err.getvalue() == ""


def test_apb_validate_json_on_stdout_stays_json_under_actions(tmp_path):
    env = {**os.environ, "GITHUB_ACTIONS": "true", "PYTHONPATH": str(REPO)}
    (tmp_path / "submissions").mkdir()
    (tmp_path / "taxonomy").mkdir()
    result = subprocess.run([sys.executable, "-m", "evaluator.cli", "validate", "--root", str(tmp_path), "--format",
                             "json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert json.loads(result.stdout)["problems"] is not None
    assert [line.split("::")[1] == "stop-commands" for line in command_lines(result.stderr)] == [True, False]


def test_each_run_has_a_fresh_token():
    tokens = set()
    for _ in range(3):
        with redirect_stderr(io.StringIO()), commands_stopped({"GITHUB_ACTIONS": "true"}) as token:
            tokens.add(token)
    assert len(tokens) == 3

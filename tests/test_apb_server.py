"""The simulator's ``apb`` fork server answers a call as a new ``apb`` process would: same stdout, stderr and
exit status for the same argv, working directory and environment; and its shim falls back to a normal
exec when the server is not up."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.actions_sim import BIN, _pythonpath
from tests.support.apb_server import Server, write_client

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shims(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shims")
    server = Server.shared({"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": _pythonpath()})
    simulator = ROOT / "tests" / "support" / "actions_sim.py"
    write_client(folder / "served", server.socket, apb=BIN / "apb", simulator=simulator)
    write_client(folder / "fallback", folder / "no-such.sock", apb=BIN / "apb", simulator=simulator)
    return {"served": folder / "served", "fallback": folder / "fallback", "exec": BIN / "apb"}


def call(program: Path, *args: str, cwd: Path, stdin: str = "", **env: str) -> tuple[int, str, str]:
    done = subprocess.run([str(program), *args], cwd=cwd, input=stdin, capture_output=True, text=True,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": _pythonpath(), **env})
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("args, where, env", [
    (("validate",), "root", {}),  # success, stdout
    (("validate",), "root", {"APB_ROOT": "elsewhere"}),  # the caller's environment, not the server's
    (("validate", "no/such/file.json"), "root", {}),  # a refusal: exit status and stderr
    (("no-such-command",), "root", {}),  # argparse's usage error: status 2
    (("--version",), "elsewhere", {}),
])
def test_a_served_call_matches_a_new_process(shims, tmp_path, args, where, env):
    cwd = ROOT if where == "root" else tmp_path
    env = {name: str(tmp_path) if value == "elsewhere" else value for name, value in env.items()}
    fresh = call(shims["exec"], *args, cwd=cwd, **env)
    assert call(shims["served"], *args, cwd=cwd, **env) == fresh
    assert call(shims["fallback"], *args, cwd=cwd, **env) == fresh


def test_a_served_call_writes_into_the_callers_pipe_and_redirection(shims, tmp_path):
    """stdout and stderr are the caller's own descriptors: a pipeline and a redirection get the output, and the
    caller waits for the status of the call, not of the server."""
    script = (f'"{shims["served"]}" --version 2>"{tmp_path}/err" | tr 0-9 a-j; echo "status ${{PIPESTATUS[0]}}"; '
              f'"{shims["served"]}" validate no/such/file.json 2>"{tmp_path}/err" | cat; echo "status ${{PIPESTATUS[0]}}"')
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": _pythonpath()})
    version = call(shims["exec"], "--version", cwd=ROOT)[1]
    refused = call(shims["exec"], "validate", "no/such/file.json", cwd=ROOT)
    assert refused[0] != 0
    assert done.stdout == (version.translate(str.maketrans("0123456789", "abcdefghij")) + "status 0\n"
                           + refused[1] + f"status {refused[0]}\n")
    assert (tmp_path / "err").read_text() == refused[2]

"""A fork server for the ``apb`` calls of simulated workflow steps: one preloaded Python process that forks a
child per call, so a step's ``.venv/bin/apb ...`` costs a fork instead of an interpreter start and its imports.

The child runs the call as a fresh ``apb`` process would: the caller's argv, working directory and environment
(``os.environ`` replaced), the caller's own stdin/stdout/stderr (passed as file descriptors over the unix
socket, so pipes such as ``| tee`` and ``2>>file`` behave the same), ``atexit`` handlers run at the end, and
the exit status goes back to the caller's shim, which exits with it. ``apb evaluate`` goes to the simulator's
``shim_evaluate``, as the exec path does.

What the child inherits beyond a fresh process, all of it content-keyed or a pure function of the package:
- every ``evaluator`` module that imports without torch (torch itself is never preloaded: a module that needs
  it imports it in the child, as a fresh process would), and the simulator's ``shim_evaluate``;
- the caches one in-process ``apb validate`` of this checkout fills (compiled schemas, protocols, and
  ``safeio``'s parse cache keyed by the exact text);
- the parse cache primed with the manifests under the call's working directory (``submissions/*/
  manifest.yaml``), keyed by their exact text: a file the call changes first parses afresh.
No module of ``evaluator`` catches an ``ImportError`` at import time, so preloading under a torch block
leaves no module in a state a fresh process would not have.

The shim (``write_client``) falls back to a normal exec when the server is not running.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_HEADER = struct.Struct("!Q")  # length of the JSON request that follows
_STATUS = struct.Struct("!i")


class _NoTorch:
    """A meta path finder that refuses torch while the server preloads."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 -- importlib's protocol
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is not preloaded")
        return None


def _preload() -> None:
    import importlib
    import pkgutil

    import evaluator

    blocker = _NoTorch()
    sys.meta_path.insert(0, blocker)
    try:
        for module in pkgutil.walk_packages(evaluator.__path__, "evaluator."):
            try:
                importlib.import_module(module.name)
            except ImportError:
                pass  # needs torch: the child imports it when a command needs it
    finally:
        sys.meta_path.remove(blocker)
    assert "torch" not in sys.modules
    importlib.import_module("tests.support.actions_sim")  # its shim_evaluate answers ``apb evaluate``
    from evaluator.cli import main

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["validate"])  # fills the caches (schemas, protocols, parsed manifests of this checkout)
    except BaseException:  # noqa: BLE001 -- warming only; the calls report their own problems
        pass
    finally:
        os.chdir(here)


def _prime(cwd: str) -> None:
    from evaluator.errors import APBError
    from evaluator.untrusted.safeio import load_yaml

    for manifest in sorted(Path(cwd).glob("submissions/*/manifest.yaml")):
        try:
            load_yaml(manifest)
        except (APBError, OSError):
            pass  # the call reports it


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    while len(data) < _HEADER.size:
        data += conn.recv(_HEADER.size - len(data))
    (length,) = _HEADER.unpack(data)
    payload = b""
    while len(payload) < length:
        chunk = conn.recv(length - len(payload))
        if not chunk:
            raise EOFError("the shim hung up")
        payload += chunk
    return json.loads(payload), fds


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Runs in the forked child: become the call, run it, send its exit status, exit."""
    atexit._clear()  # type: ignore[attr-defined]  # the server's handlers are not the call's
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    sys.argv = ["apb", *argv]
    code: int
    try:
        if argv[:1] == ["evaluate"]:
            from tests.support.actions_sim import shim_evaluate

            code = shim_evaluate(argv[1:])
        else:
            from evaluator.cli import main

            code = main(argv)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 -- as the interpreter does: traceback, status 1
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()  # type: ignore[attr-defined]
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with contextlib.suppress(OSError):
            conn.sendall(_STATUS.pack(code))
        os._exit(code & 0xFF)


def _reap() -> None:
    """Wait for the children that have ended (their CPU time then counts in this process's children's)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _wait_all() -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()


def serve(path: str) -> None:
    """Preload, then answer one call per connection on the unix socket *path* until SIGTERM or until stdin
    reaches its end (the test process that started the server is gone)."""
    import gc
    import selectors

    _preload()
    gc.freeze()  # the children's collections leave the preloaded objects (and their shared pages) alone
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    watch = selectors.DefaultSelector()
    watch.register(listener, selectors.EVENT_READ)
    watch.register(sys.stdin.fileno(), selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        ready = {key.fd for key, _ in watch.select()}
        if sys.stdin.fileno() in ready:
            _wait_all()
            return
        conn, _ = listener.accept()
        _reap()
        try:
            request, fds = _receive(conn)
        except (OSError, EOFError, ValueError):
            conn.close()
            continue
        with contextlib.suppress(Exception):
            _prime(request["cwd"])
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        if os.fork() == 0:
            try:
                listener.close()
                watch.close()
                _child(conn, request, fds)
            finally:
                os._exit(70)  # only if the call could not even start (its working directory is gone)
        for fd in fds:
            os.close(fd)
        conn.close()


class Server:
    """The running server of this test process (one, shared by every simulator), stopped at exit."""

    _running: "Server | None" = None

    def __init__(self, env: dict[str, str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="apb-sim-"))
        self.socket = self.folder / "apb.sock"
        self.process = subprocess.Popen([sys.executable, __file__, "serve", str(self.socket)], env=env,
                                        cwd=self.folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the apb fork server did not start")
        atexit.register(self.stop)

    @classmethod
    def shared(cls, env: dict[str, str]) -> "Server":
        if cls._running is None or cls._running.process.poll() is not None:
            cls._running = cls(env)
        return cls._running

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the server's signal to wait for its children and end
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            self.socket.unlink()
            self.folder.rmdir()


CLIENT = '''#!{python} -IS
"""apb for simulated steps: the call runs in a child of the fork server at {socket} (argv, cwd, environment and
this process's stdin/stdout/stderr go with it; its exit status comes back); a normal exec when it is not up."""
import json, os, socket, struct, sys
try:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect({socket!r})
except OSError:
    if sys.argv[1:2] == ["evaluate"]:
        os.execv({python!r}, [{python!r}, {simulator!r}, *sys.argv[1:]])
    os.execv({apb!r}, [{apb!r}, *sys.argv[1:]])
request = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(conn, [struct.pack("!Q", len(request))], [0, 1, 2])
conn.sendall(request)
status = b""
while len(status) < 4:
    chunk = conn.recv(4 - len(status))
    if not chunk:
        sys.exit("apb fork server: the call ended without an exit status")
    status += chunk
sys.exit(struct.unpack("!i", status)[0] & 0xFF)
'''


def write_client(path: Path, socket_path: Path, *, apb: Path, simulator: Path) -> None:
    """The ``apb`` shim at *path*: a call through the server at *socket_path*, else exec *apb* (or the
    simulator's ``evaluate``)."""
    path.write_text(CLIENT.format(python=sys.executable, socket=str(socket_path), apb=str(apb),
                                  simulator=str(simulator)))
    path.chmod(0o755)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.path.insert(0, str(ROOT))
        serve(sys.argv[2])
        sys.exit(0)
    sys.exit(f"usage: {sys.argv[0]} serve SOCKET")

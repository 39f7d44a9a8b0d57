"""A small GitHub Actions simulator: runs a workflow file's jobs for one event against ``FakeGitHub``.

What it does as GitHub does:
- jobs in ``needs`` order; a job's ``if`` (``success()`` unless it says otherwise), results ``success`` /
  ``failure`` / ``skipped`` / ``cancelled``, ``outputs`` rendered from its steps' outputs;
- ``strategy.matrix`` from an expression (``fromJSON(needs.plan.outputs.matrix)``): one run of the job per
  ``include`` item; more than 256 is refused (the job fails), as GitHub refuses such a matrix;
- steps: ``if`` with ``success()`` / ``failure()`` / ``cancelled()`` / ``always()``; ``run:`` scripts executed
  for real with ``bash -e -o pipefail`` in the job's workspace (``working-directory``), with the workflow's, the
  job's and the step's ``env`` rendered by ``gh_expressions``, and per-job ``RUNNER_TEMP``,
  ``GITHUB_STEP_SUMMARY``, per-step ``GITHUB_OUTPUT``, ``GITHUB_REPOSITORY``, ``GITHUB_API_URL`` (the fake);
- the actions the workflows use: ``actions/checkout`` (a clone of the bare *origin* at ``ref`` or the run's
  sha, so ``git push origin`` reaches the origin), ``actions/setup-python`` (nothing: this interpreter),
  ``actions/upload-artifact`` (a zip of the path's files, hidden files left out, unique names, retention),
  ``actions/download-artifact`` (``name``; ``pattern`` with each artifact in ``path/<name>/`` unless
  ``merge-multiple``; ``run-id`` + ``github-token`` for another run's), ``actions/cache`` / ``cache/restore`` /
  ``cache/save`` against the fake's cache with GitHub's read-only rule for untrusted triggers.

What it does not: ``make install``, and every step named ``Install…`` (the hash-locked pip install of the
commit job), run a ``make`` shim that only links ``.venv/bin/apb`` (the venv already exists: this
interpreter's; nothing is downloaded); ``.venv/bin/apb`` runs the real ``apb`` of this checkout, except
``apb evaluate``, which writes a valid output for the model the manifest in its working directory pins
(``ci_records``'s ``write_evaluated`` / ``write_shard_outputs``) instead of attacking a checkpoint. Each ``apb``
call runs in a child forked from a preloaded process (``apb_server``: the call's argv, working directory,
environment, stdin, stdout, stderr and exit status; ``fork_server=False``: a new interpreter per call, as on a
runner). ``runs-on``, ``concurrency``, ``timeout-minutes`` and ``max-parallel`` are not modelled (runs run one
after another; a matrix's legs run *parallel* at a time, one by one when the run is to be cancelled in the
middle of them).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from ruamel.yaml import YAML

from tests.support.fake_github import FakeGitHub
from tests.support.gh_expressions import condition, evaluate, render

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MAX_MATRIX_JOBS = 256


@dataclass
class JobResult:
    result: str  # success | failure | skipped | cancelled
    outputs: dict = field(default_factory=dict)
    legs: int = 0  # matrix jobs run
    logs: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    run_id: int
    conclusion: str
    jobs: dict[str, JobResult]
    summary: str

    def log(self) -> str:
        return "\n".join(line for job in self.jobs.values() for line in job.logs)


class Simulator:
    """Runs workflows of *workflows* (a folder) for events on the bare repository *origin*, against *fake*."""

    def __init__(self, fake: FakeGitHub, origin: Path, work: Path, *, workflows: Path = ROOT / ".github" / "workflows",
                 variables: dict | None = None, parallel: int = 3, fork_server: bool = True) -> None:
        self.fake = fake
        self.origin = origin
        self.work = work
        self.workflows = workflows
        self.variables = variables or {}
        self.parallel = parallel
        self.fork_server = fork_server
        self._lock = threading.Lock()  # the fake's state and the run's summary, shared by parallel legs
        self.shims = work / "shims"
        self._write_shims()

    # ------------------------------------------------------------------------------------------ shims
    def _write_shims(self) -> None:
        self.shims.mkdir(parents=True, exist_ok=True)
        apb = self.shims / "apb"
        if self.fork_server:
            from tests.support.apb_server import Server, write_client

            server = Server.shared({"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": _pythonpath()})
            write_client(apb, server.socket, apb=BIN / "apb", simulator=Path(__file__).resolve())
        else:
            apb.write_text(f"""#!/bin/bash
if [ "$1" = evaluate ]; then shift; exec "{sys.executable}" "{Path(__file__).resolve()}" evaluate "$@"; fi
exec "{BIN / 'apb'}" "$@"
""")
        make = self.shims / "make"
        make.write_text(f"""#!/bin/bash
if [ "$1" = install ] && [ "$#" = 1 ]; then mkdir -p .venv/bin && ln -sf "{apb}" .venv/bin/apb; exit 0; fi
exec /usr/bin/make "$@"
""")
        for path in (apb, make):
            path.chmod(0o755)

    # ------------------------------------------------------------------------------------------ a run
    def run(self, workflow: str, event_name: str, event: dict, *, sha: str, ref: str = "refs/heads/main",
            cancel_after: tuple[str, int] | None = None, from_fork: bool = False) -> RunResult:
        """Run *workflow* for one event. *cancel_after* ``(job, n)`` cancels the run once *n* jobs (matrix legs)
        of *job* have finished, as a maintainer (or a newer run) cancelling it would."""
        spec = YAML(typ="safe", pure=True).load((self.workflows / workflow).read_text(encoding="utf-8"))
        github = {"event_name": event_name, "event": event, "sha": sha, "ref": ref,
                  "ref_name": ref.rsplit("/", 1)[-1], "repository": self.fake.full_name, "token": "sim-token",
                  "workflow": spec.get("name"), "server_url": "https://github.example"}
        title = render(spec.get("run-name") or spec.get("name") or workflow, {"github": github, "vars": self.variables})
        actions = self.fake.state.actions
        run_id = actions.start_run(f".github/workflows/{workflow}", event_name, sha, title=title.strip(),
                                   head_branch=github["ref_name"] if ref.startswith("refs/heads/") else ref,
                                   from_fork=from_fork)
        github["run_id"] = run_id
        state = _RunState(run_id, github, spec, cancel_after)
        for job_id in _job_order(spec["jobs"]):
            state.jobs[job_id] = self._job(state, job_id, spec["jobs"][job_id])
            if cancel_after == (job_id, 1) and state.jobs[job_id].legs == 0:
                state.cancelled = True
        results = {job.result for job in state.jobs.values()}
        conclusion = ("cancelled" if state.cancelled else "failure" if "failure" in results else "success")
        actions.finish_run(run_id, conclusion)
        return RunResult(run_id, conclusion, state.jobs, state.summary)

    def _context(self, state: "_RunState", job_id: str, **extra) -> dict:
        needs = {name: {"result": state.jobs[name].result, "outputs": state.jobs[name].outputs}
                 for name in _needs(state.spec["jobs"][job_id]) if name in state.jobs}
        return {"github": state.github, "vars": self.variables, "needs": needs,
                "runner": {"temp": str(extra.pop("temp", "")), "os": "Linux"}, "inputs": {}, **extra}

    def _job(self, state: "_RunState", job_id: str, job: dict) -> JobResult:
        needs = _needs(job)
        if state.cancelled:
            return JobResult("cancelled")
        success = all(state.jobs[name].result == "success" for name in needs)
        status = {"success": success, "failure": any(state.jobs[n].result == "failure" for n in needs),
                  "cancelled": state.cancelled, "always": True}
        context = {**self._context(state, job_id), "__status__": status}
        text = job.get("if")
        if text is None and not success:
            return JobResult("skipped")
        if text is not None:
            uses_status = any(f"{name}()" in str(text) for name in status)
            if not condition(str(text), context) or (not uses_status and not success):
                return JobResult("skipped")
        matrix_spec = (job.get("strategy") or {}).get("matrix")
        if matrix_spec is None:
            return self._job_once(state, job_id, job, None, 0)
        matrix = _value(matrix_spec, context)
        legs = list(matrix.get("include") or [])
        if len(legs) > MAX_MATRIX_JOBS:
            return JobResult("failure", logs=[f"{job_id}: the matrix has {len(legs)} jobs; GitHub allows "
                                              f"{MAX_MATRIX_JOBS}: the job fails before any leg starts"])
        if not legs:
            return JobResult("failure", logs=[f"{job_id}: the matrix is empty"])
        result = JobResult("success", legs=0)
        if state.cancel_after is None or state.cancel_after[0] != job_id:  # legs in parallel, as runners take them
            with ThreadPoolExecutor(max_workers=self.parallel) as pool:
                done = list(pool.map(lambda item: self._job_once(state, job_id, job, item[1], item[0]),
                                     enumerate(legs)))
        else:
            done = []
            for index, leg in enumerate(legs):
                if state.cancelled:
                    result.result = "cancelled"
                    break
                done.append(self._job_once(state, job_id, job, leg, index))
                if state.cancel_after == (job_id, len(done)):
                    state.cancelled = True
        for one in done:
            result.legs += 1
            result.logs += one.logs
            if one.result == "failure" and result.result == "success":
                result.result = "failure"
        return result

    def _job_once(self, state: "_RunState", job_id: str, job: dict, matrix: dict | None, index: int) -> JobResult:
        base = self.work / f"run-{state.run_id}" / f"{job_id}-{index}"
        workspace, temp = base / "workspace", base / "temp"
        workspace.mkdir(parents=True)
        temp.mkdir()
        summary = base / "summary.md"
        summary.touch()
        steps: dict[str, dict] = {}
        result = JobResult("success")
        failed = False
        saves: list[tuple[str, Path]] = []
        for number, step in enumerate(job.get("steps") or []):
            context = {**self._context(state, job_id, temp=temp), "matrix": matrix or {}, "steps": steps,
                       "__job__": job_id, "__status__": {"success": not failed, "failure": failed, "cancelled": state.cancelled,
                                      "always": True}}
            text = step.get("if")
            if text is not None:
                uses_status = any(f"{name}()" in str(text) for name in ("success", "failure", "cancelled", "always"))
                run_it = condition(str(text), context) and (uses_status or not failed)
            else:
                run_it = not failed
            name = step.get("name") or step.get("uses") or f"step {number}"
            if not run_it:
                if step.get("id"):
                    steps[step["id"]] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                continue
            outputs, ok, log = self._step(state, step, context, workspace, temp, summary, saves)
            result.logs.append(f"[{job_id}{'' if matrix is None else ' ' + str(matrix.get('leg'))}] {name}: "
                               f"{'ok' if ok else 'FAILED'}\n{log}".rstrip())
            if step.get("id"):
                steps[step["id"]] = {"outputs": outputs, "outcome": "success" if ok else "failure",
                                     "conclusion": "success" if ok else "failure"}
            failed = failed or not ok
        if not failed:
            for key, path in saves:  # actions/cache's post step: save when the job succeeded and missed
                self._cache_save(state, key, path, result.logs)
        result.result = "failure" if failed else "success"
        context = {**self._context(state, job_id, temp=temp), "matrix": matrix or {}, "steps": steps}
        result.outputs = {k: render(str(v), context) for k, v in (job.get("outputs") or {}).items()}
        with self._lock:
            state.summary += summary.read_text()
        return result

    # ------------------------------------------------------------------------------------------ steps
    def _step(self, state, step: dict, context: dict, workspace: Path, temp: Path, summary: Path,
              saves: list) -> tuple[dict, bool, str]:
        env = {}
        for scope in (state.spec.get("env") or {}, state.spec["jobs"][context["__job__"]].get("env") or {},
                      step.get("env") or {}):
            env.update({k: render(str(v), context) for k, v in scope.items()})
        if "run" in step and (step.get("name") or "").startswith("Install"):  # the venv already exists
            step = {**step, "run": "make install"}
        if "run" in step:
            return self._run_script(step, env, workspace, temp, summary, state)
        uses = step["uses"].split("@")[0]
        inputs = {k: render(str(v), context) for k, v in (step.get("with") or {}).items()}
        if uses.startswith("actions/cache"):
            return self._cache(state, inputs, workspace, saves, uses)
        handler = {"actions/checkout": self._checkout, "actions/setup-python": lambda *a: ({}, True, ""),
                   "actions/upload-artifact": self._upload, "actions/download-artifact": self._download}[uses]
        return handler(state, inputs, workspace)

    def _run_script(self, step, env, workspace, temp, summary, state) -> tuple[dict, bool, str]:
        output = temp / f"output-{os.urandom(4).hex()}"
        output.touch()
        cwd = workspace / step.get("working-directory", ".")
        full_env = {"PATH": f"{self.shims}:{BIN}:/usr/bin:/bin", "HOME": str(workspace.parent), "CI": "true",
                    "GITHUB_ACTIONS": "true",
                    "PYTHONPATH": _pythonpath(), "RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(output),
                    "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(workspace),
                    "GITHUB_REPOSITORY": self.fake.full_name, "GITHUB_API_URL": self.fake.base_url,
                    "GITHUB_SHA": state.github["sha"], "GITHUB_REF": state.github["ref"],
                    "GITHUB_EVENT_NAME": state.github["event_name"], "GITHUB_RUN_ID": str(state.run_id), **env}
        done = subprocess.run(["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", step["run"]], cwd=cwd,
                              env=full_env, capture_output=True, text=True)
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        return outputs, done.returncode == 0, (done.stdout + done.stderr)[-6000:]

    def _checkout(self, state, inputs: dict, workspace: Path) -> tuple[dict, bool, str]:
        if inputs.get("persist-credentials") not in ("false", "False"):
            return {}, False, "persist-credentials must be false"
        shutil.rmtree(workspace)
        subprocess.run(["git", "clone", "-q", str(self.origin), str(workspace)], check=True, capture_output=True)
        ref = inputs.get("ref") or state.github["sha"]
        subprocess.run(["git", "-C", str(workspace), "checkout", "-q", "--detach",
                        ref if len(ref) == 40 else f"origin/{ref}"], check=True, capture_output=True)
        for key, value in (("user.email", "sim@example.org"), ("user.name", "sim")):
            subprocess.run(["git", "-C", str(workspace), "config", key, value], check=True)
        return {}, True, f"checked out {ref}"

    def _upload(self, state, inputs: dict, workspace: Path) -> tuple[dict, bool, str]:
        path = Path(inputs["path"]) if os.path.isabs(inputs["path"]) else workspace / inputs["path"]
        files = ([path] if path.is_file() else
                 sorted(p for p in path.rglob("*") if p.is_file() and not any(
                     part.startswith(".") for part in p.relative_to(path).parts))) if path.exists() else []
        if not files:
            if inputs.get("if-no-files-found", "warn") == "error":
                return {}, False, f"No files were found with the provided path: {inputs['path']}"
            return {}, True, "no files: no artifact uploaded"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                archive.write(file, file.name if path.is_file() else file.relative_to(path).as_posix())
        try:
            with self._lock:
                self.fake.state.actions.upload(state.run_id, inputs["name"], buffer.getvalue(),
                                               retention_days=float(inputs.get("retention-days") or 90))
        except ValueError as error:
            return {}, False, str(error)
        return {}, True, f"uploaded {inputs['name']} ({len(files)} files)"

    def _download(self, state, inputs: dict, workspace: Path) -> tuple[dict, bool, str]:
        actions = self.fake.state.actions
        run_id = state.run_id
        if inputs.get("run-id"):
            if not inputs.get("github-token"):
                return {}, False, "run-id needs github-token"
            run_id = int(inputs["run-id"])
        target = Path(inputs.get("path") or workspace)
        target = target if target.is_absolute() else workspace / target
        available = [a for a in actions.artifacts_of(run_id) if not actions.expired(a)]
        if inputs.get("name"):
            chosen = [a for a in available if a["name"] == inputs["name"]]
            if not chosen:
                return {}, False, f"Unable to download artifact(s): Artifact not found for name: {inputs['name']}"
            _unzip(chosen[0]["data"], target)
            return {}, True, f"downloaded {inputs['name']}"
        chosen = [a for a in available if fnmatch(a["name"], inputs.get("pattern") or "*")]
        merge = inputs.get("merge-multiple") in ("true", "True")
        for artifact in chosen:
            _unzip(artifact["data"], target if merge else target / artifact["name"])
        return {}, True, f"downloaded {len(chosen)} artifact(s)"

    def _cache(self, state, inputs: dict, workspace: Path, saves: list, uses: str) -> tuple[dict, bool, str]:
        path = workspace / inputs["path"]
        if uses == "actions/cache/save":
            return {}, True, self._cache_save(state, inputs["key"], path, None)
        data = self.fake.state.actions.cache_restore(state.run_id, inputs["key"])
        if data is not None:
            _unzip(data, path)
        elif uses == "actions/cache":
            saves.append((inputs["key"], path))
        return {"cache-hit": "true" if data is not None else "false"}, True, f"cache hit: {data is not None}"

    def _cache_save(self, state, key: str, path: Path, logs: list | None) -> str:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                archive.write(file, file.relative_to(path).as_posix())
        with self._lock:
            saved = self.fake.state.actions.cache_save(state.run_id, key, buffer.getvalue())
        message = f"cache {key}: {'saved' if saved else 'warning: not saved'}"
        if logs is not None:
            logs.append(message)
        return message


@dataclass
class _RunState:
    run_id: int
    github: dict
    spec: dict
    cancel_after: tuple[str, int] | None
    jobs: dict[str, JobResult] = field(default_factory=dict)
    cancelled: bool = False
    summary: str = ""


def _pythonpath() -> str:
    """This checkout first: the steps' ``apb`` is this checkout's."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _needs(job: dict) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def _job_order(jobs: dict) -> list[str]:
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [name for name, job in jobs.items() if name not in order and all(n in order for n in _needs(job))]
        if not ready:
            raise ValueError("the jobs' needs form a cycle")
        order.append(ready[0])
    return order


def _value(text, context: dict):
    """A value that is one whole expression evaluates to its object (a matrix); anything else is rendered."""
    if isinstance(text, str) and text.strip().startswith("${{") and text.strip().endswith("}}"):
        return evaluate(text.strip()[3:-2], context)
    return text


def _unzip(data: bytes, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(target)


# ---------------------------------------------------------------------------------------------- apb evaluate


def shim_evaluate(args: list[str]) -> int:
    """``apb evaluate MODEL_KEY --protocol P [--shard i/n] --out OUT ...`` as the GPU leg calls it: a valid output
    of the model the manifest in the working directory pins, without evaluating anything."""
    import argparse
    import tempfile

    from evaluator.ci.plan import manifest_entries
    from tests.support.ci_records import write_evaluated, write_shard_outputs

    parser = argparse.ArgumentParser()
    parser.add_argument("model_key")
    parser.add_argument("--protocol", required=True)
    parser.add_argument("--shard", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parsed, _ = parser.parse_known_args(args)
    entry = next(e for e in manifest_entries(Path.cwd())[0] if e.model_key == parsed.model_key)
    parsed.out.mkdir(parents=True, exist_ok=True)
    if parsed.shard is None:
        write_evaluated(parsed.out, entry.model_key, entry.sha256, protocol=parsed.protocol)
    else:
        index, count = (int(part) for part in parsed.shard.split("/"))
        with tempfile.TemporaryDirectory() as scratch:
            folder = write_shard_outputs(Path(scratch), entry.model_key, entry.sha256, count,
                                         protocol=parsed.protocol)[index - 1]
            shutil.copytree(folder, parsed.out / folder.name)
    print(f"evaluated {entry.model_key} (simulated)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["evaluate"]:
        sys.exit(shim_evaluate(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} evaluate ...")

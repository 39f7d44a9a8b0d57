"""Issue 19, point 3: the jobs that hold a write token run nothing they did not pin.

- leaderboard.yml's commit job and report.yml install from ``requirements/bot.lock`` (every package pinned
  with its sha256, wheels only, no test tools, no torch) and the project with ``--no-deps``; the lock is
  complete (a requirements walk) and enough (the bot's commands run with nothing else importable);
- the commit job stages only records and generated files (``apb ci check-diff``) and no git hook of the
  checkout runs beside the token (``core.hooksPath=/dev/null``);
- pages.yml and report.yml accept only runs of this repository's own workflows, not a run by its name/title.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_workflows import (ROOT, copy_of_this_repository, gh_condition, init_repo, load, run_step,
                                  runner_env)

LOCK = ROOT / "requirements" / "bot.lock"
BOT_IN = ROOT / "requirements" / "bot.in"
PRIVILEGED_JOBS = [("leaderboard.yml", "commit"), ("report.yml", "report")]
# the runner the privileged jobs run on: CPython 3.11 (setup-python) on ubuntu-24.04, x86_64
RUNNER = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.9",
          "implementation_name": "cpython", "platform_python_implementation": "CPython", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in bot.lock; fails on any line that is not one."""
    entries: dict[str, tuple[str, list[str]]] = {}
    logical = re.sub(r"\\\n\s*", " ", LOCK.read_text(encoding="utf-8"))
    for line in logical.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        first, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", first)
        assert match, f"bot.lock: {line[:80]!r} is not `name==version --hash=...`"
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"bot.lock: {first} lacks sha256 hashes"
        assert len(hashes) == len(options), f"bot.lock: {first} has options besides --hash"
        entries[canonicalize_name(match[1])] = (match[2], hashes)
    return entries


def bot_requirements() -> list[Requirement]:
    return [Requirement(line) for line in BOT_IN.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))]


def test_every_package_of_the_lock_is_pinned_with_its_sha256():
    entries = locked()
    assert len(entries) > 20
    for banned in ("torch", "torchvision", "pytest", "zizmor", "selenium", "mypy", "import-linter",
                   "check-jsonschema", "pyautoattack", "optuna", "gdown", "huggingface-hub"):
        assert banned not in entries, f"{banned} is in the bot's lock: the privileged jobs need no {banned}"
    header = LOCK.read_text().split("\n\n")[0]
    assert "pip-compile" in header and "--generate-hashes" in header  # how to regenerate it


def test_the_lock_holds_every_requirement_of_the_bots_packages():
    """Walk the requirements (installed metadata, markers of the runner, extras followed) from requirements/bot.in:
    each one is in the lock at a version its specifier allows."""
    from importlib.metadata import PackageNotFoundError, distribution

    entries = locked()
    todo = [(req, "requirements/bot.in") for req in bot_requirements()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, wanted_by = todo.pop()
        name = canonicalize_name(req.name)
        assert name in entries, f"{req} (wanted by {wanted_by}) is not in requirements/bot.lock"
        assert req.specifier.contains(entries[name][0], prereleases=True), \
            f"bot.lock pins {name}=={entries[name][0]}, but {wanted_by} wants {req}"
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed here: cannot read its requirements")
        for text in requires:
            child = Requirement(text)
            extras = [""] + sorted(req.extras)
            if child.marker is None or any(child.marker.evaluate({**RUNNER, "extra": e}) for e in extras):
                todo.append((child, name))


def test_the_lock_agrees_with_constraints_and_pyproject():
    import tomllib

    entries = locked()
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            if canonicalize_name(name) in entries:
                assert entries[canonicalize_name(name)][0] == version, f"bot.lock and constraints.txt differ on {name}"
    declared = {canonicalize_name(Requirement(text).name): Requirement(text) for text in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for req in bot_requirements():
        name = canonicalize_name(req.name)
        if name in declared:
            assert declared[name].specifier.contains(entries[name][0]), f"bot.lock's {name} is outside pyproject.toml"
        else:
            assert name in ("setuptools", "wheel"), f"{name} is not a dependency of the project"


def test_the_privileged_jobs_install_from_the_lock_without_test_tools():
    scripts = []
    for workflow, job_id in PRIVILEGED_JOBS:
        steps = load(workflow)["jobs"][job_id]["steps"]
        runs = "\n".join(step.get("run", "") for step in steps)
        assert "make" not in runs.split() and "make install" not in runs, (workflow, job_id)
        assert "[test]" not in runs and "-e ." not in runs, (workflow, job_id)
        installs = [line.strip() for line in runs.splitlines() if "pip install" in line]
        assert installs == [
            ".venv/bin/python -m pip install --require-hashes --only-binary :all: -r requirements/bot.lock",
            ".venv/bin/python -m pip install --no-deps --no-build-isolation --no-index ."], (workflow, job_id)
        scripts.append(next(step["run"] for step in steps if "pip install" in step.get("run", "")))
    assert len(set(scripts)) == 1  # the same install in both jobs


@pytest.fixture
def only_locked(tmp_path) -> dict[str, str]:
    """An environment where a third-party module imports only if its distribution is in bot.lock."""
    allowed = sorted(locked()) + ["adversarial-pruning-benchmark"]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(f"""
import sys
from importlib.metadata import packages_distributions
from packaging.utils import canonicalize_name
ALLOWED = set({allowed!r})
OWNERS = {{m: {{canonicalize_name(d) for d in ds}} for m, ds in packages_distributions().items()}}
class Block:
    def find_spec(self, name, path=None, target=None):
        owners = OWNERS.get(name.split('.')[0])
        if owners and not owners & ALLOWED:
            raise ImportError(f'{{name}} is not in requirements/bot.lock')
        return None
sys.meta_path.insert(0, Block())
""")
    path = os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def python(env: dict, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def apb(env: dict, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return python(env, "-c", "import sys; from evaluator.cli import main; sys.exit(main())", *args, cwd=cwd)


def test_the_hook_really_blocks_what_is_not_locked(only_locked):
    assert "torch is not in requirements/bot.lock" in python(only_locked, "-c", "import torch").stderr
    assert python(only_locked, "-c", "import github, matplotlib.figure, pandas").returncode == 0


def test_the_bots_commands_run_with_only_the_locked_packages(only_locked, tmp_path):
    from tests.support.fake_github import FakeGitHub

    for args in (["validate"], ["leaderboard", "--check"]):
        result = apb(only_locked, *args)
        assert result.returncode == 0, (args, result.stderr)
    init_repo(tmp_path / "repo")
    (tmp_path / "repo" / "leaderboard").mkdir()
    (tmp_path / "repo" / "leaderboard" / "README.md").write_text("new\n")
    git(tmp_path / "repo", "add", "-A")
    check = apb(only_locked, "ci", "check-diff", "--root", str(tmp_path / "repo"))
    assert check.returncode == 0, check.stderr
    figure = python(only_locked, "-c", "import numpy as np; from evaluator.render.curves import security_curve, "
                    "png_bytes; from evaluator.protocol import load_protocol; threat = load_protocol('linf-8-255-v1')"
                    ".threat_model; assert png_bytes(security_curve({'AA': np.linspace(0, .1, 50)}, threat))"
                    ".startswith(b'\\x89PNG')")
    assert figure.returncode == 0, figure.stderr
    sha = "d" * 40
    (tmp_path / "artifacts" / "apb-validation").mkdir(parents=True)
    (tmp_path / "artifacts" / "apb-validation" / "validation.json").write_text('{"ok": true, "problems": []}')
    report = apb(only_locked, "ci", "report", "--kind", "validation", "--head-sha", sha, "--artifacts",
                 str(tmp_path / "artifacts"), "--out", str(tmp_path / "report.md"))
    assert report.returncode == 0, report.stderr
    with FakeGitHub() as fake:
        fake.add_pull(4, sha)
        env = {**only_locked, "GITHUB_TOKEN": "t", "GITHUB_API_URL": fake.base_url}
        published = apb(env, "ci", "publish", "--body", str(tmp_path / "report.md"), "--pr", "4", "--head-sha", sha,
                        "--repo", fake.full_name)
        assert published.returncode == 0, published.stderr
        assert [c["body"] for c in fake.comments_on(4)] == [(tmp_path / "report.md").read_text()]


# ------------------------------------------------------------------------------------------ the pushed diff
def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    init_repo(repo)
    for name in ("submissions/A_Doe2024A/manifest.yaml", "submissions/A_Doe2024A/records/m__p.json",
                 "leaderboard/README.md", "taxonomy/README.md", "taxonomy/vocabulary.yaml", "evaluator/x.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("old\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def check_diff(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return apb({**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
               "ci", "check-diff", "--root", str(repo), *args, cwd=repo)


def test_check_diff_accepts_records_and_generated_files(repo):
    (repo / "submissions/A_Doe2024A/records/m__p.json").write_text("new\n")
    (repo / "submissions/A_Doe2024A/records/m__p.npz").write_text("new\n")
    (repo / "leaderboard/models").mkdir()
    (repo / "leaderboard/models/m.md").write_text("new\n")
    (repo / "taxonomy/README.md").write_text("new\n")
    git(repo, "rm", "-q", "leaderboard/README.md")
    git(repo, "add", "-A")
    result = check_diff(repo)
    assert result.returncode == 0, result.stderr
    assert "5 changed paths" in result.stdout


@pytest.mark.parametrize("change, refused", [
    ("manifest", "'submissions/A_Doe2024A/manifest.yaml': refused: outside"),
    ("vocabulary", "'taxonomy/vocabulary.yaml': refused: outside"),
    ("symlink", "'leaderboard/evil.md': refused: a symlink"),
    ("executable", "'leaderboard/run.sh': refused: an executable file"),
    ("mode", "'leaderboard/README.md': refused: an executable file"),
    ("rename", "'evaluator/x.py': refused: outside"),
    ("submodule", "'leaderboard/sub': refused: a submodule"),
    ("records-elsewhere", "'submissions/records/x.json': refused: outside"),
])
def test_check_diff_refuses_anything_else_by_name(repo, change, refused):
    if change == "manifest":
        (repo / "submissions/A_Doe2024A/manifest.yaml").write_text("new\n")
    elif change == "vocabulary":
        (repo / "taxonomy/vocabulary.yaml").write_text("new\n")
    elif change == "symlink":
        (repo / "leaderboard/evil.md").symlink_to("/etc/passwd")
    elif change in ("executable", "mode"):
        target = repo / ("leaderboard/run.sh" if change == "executable" else "leaderboard/README.md")
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
    elif change == "rename":
        git(repo, "mv", "evaluator/x.py", "leaderboard/x.py")
    elif change != "submodule":
        (repo / "submissions/records").mkdir()
        (repo / "submissions/records/x.json").write_text("{}\n")
    (repo / "leaderboard/ok.md").write_text("fine\n")
    git(repo, "add", "-A")
    if change == "submodule":
        git(repo, "update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},leaderboard/sub")
    result = check_diff(repo)
    assert result.returncode == 1
    assert f"error: {refused}" in result.stderr, result.stderr
    assert "leaderboard/ok.md" not in result.stderr  # only what is refused is named


def test_check_diff_against_a_commit(repo):
    base = git(repo, "rev-parse", "HEAD")
    (repo / "evaluator/x.py").write_text("print('pwned')\n")
    git(repo, "commit", "-qam", "code")
    assert check_diff(repo).returncode == 0  # nothing staged
    result = check_diff(repo, "--against", base)
    assert result.returncode == 1 and "'evaluator/x.py': refused" in result.stderr


def hook(repo: Path, name: str, marker: Path) -> None:
    path = repo / ".git" / "hooks" / name
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(0o755)


def test_the_commit_step_refuses_a_staged_manifest_and_runs_no_hook(tmp_path):
    """Whatever left a manifest changed in the checkout, the bot does not commit it; a planted pre-commit hook
    does not run either."""
    repo = copy_of_this_repository(tmp_path)
    head = git(repo, "rev-parse", "HEAD")
    marker = tmp_path / "hook-ran"
    hook(repo, "pre-commit", marker)
    hook(repo, "commit-msg", marker)
    manifest = next(iter(sorted((repo / "submissions").glob("*/manifest.yaml"))))
    manifest.write_text(manifest.read_text() + "# changed by something in the job\n")
    env = runner_env(tmp_path)
    (Path(env["RUNNER_TEMP"]) / "apb-plan").mkdir()
    result = run_step("leaderboard.yml", "commit", "Bring in the records", repo, env)
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"'{manifest.relative_to(repo).as_posix()}': refused: outside" in result.stderr
    assert git(repo, "rev-parse", "HEAD") == head and not marker.exists()


def test_the_commit_step_commits_generated_files_without_running_hooks(tmp_path):
    repo = copy_of_this_repository(tmp_path)
    marker = tmp_path / "hook-ran"
    hook(repo, "pre-commit", marker)
    (repo / "leaderboard" / "README.md").write_text("stale\n")  # apb leaderboard regenerates it
    git(repo, "commit", "-qam", "a stale leaderboard", "--no-verify")
    env = runner_env(tmp_path)
    (Path(env["RUNNER_TEMP"]) / "apb-plan").mkdir()
    result = run_step("leaderboard.yml", "commit", "Bring in the records", repo, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == "leaderboard/README.md"
    assert not marker.exists()


def test_the_push_step_runs_no_hook_of_the_checkout(tmp_path):
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    seed = tmp_path / "seed"
    init_repo(seed)
    (seed / "leaderboard").mkdir()
    (seed / "leaderboard" / "README.md").write_text("old\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-qm", "main")
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    (work / "leaderboard" / "README.md").write_text("new\n")
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qam", "Update [skip ci]")
    marker = tmp_path / "hook-ran"
    hook(work, "pre-push", marker)
    result = run_step("leaderboard.yml", "commit", "Push, rebasing", work, {"TOKEN": "t"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert git(origin, "rev-parse", "main") == git(work, "rev-parse", "HEAD")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ workflow_run gates
def run_context(event: str, path: str, *, head_repo: str = "apb-org/benchmark", head_branch: str = "main",
                title: str = "Update the leaderboard", conclusion: str = "success") -> dict:
    return {"github": {"repository": "apb-org/benchmark", "event_name": "workflow_run",
                       "event": {"repository": {"full_name": "apb-org/benchmark", "default_branch": "main"},
                                 "workflow_run": {"event": event, "path": path, "display_title": title,
                                                  "head_branch": head_branch, "conclusion": conclusion,
                                                  "head_repository": {"full_name": head_repo}, "id": 9,
                                                  "repository": {"full_name": "apb-org/benchmark"}}}}}


def test_pages_deploys_only_after_this_repositorys_leaderboard_run_on_main():
    gate = load("pages.yml")["jobs"]["build"]["if"]
    leaderboard = ".github/workflows/leaderboard.yml"
    assert gh_condition(gate, run_context("push", leaderboard))
    assert gh_condition(gate, run_context("workflow_dispatch", leaderboard))
    # a fork's PR from its branch `main` adding a workflow named `leaderboard`: same name, title and branch name
    assert not gh_condition(gate, run_context("pull_request", ".github/workflows/x.yml", head_repo="eve/benchmark"))
    assert not gh_condition(gate, run_context("pull_request", leaderboard, head_repo="eve/benchmark"))
    assert not gh_condition(gate, run_context("push", leaderboard, head_repo="eve/benchmark"))
    assert not gh_condition(gate, run_context("push", leaderboard, head_branch="other"))
    assert not gh_condition(gate, run_context("push", ".github/workflows/x.yml"))
    assert not gh_condition(gate, run_context("push", leaderboard, conclusion="failure"))
    push = {"github": {"event_name": "push", "repository": "apb-org/benchmark", "event": {}}}
    assert gh_condition(gate, push) and gh_condition(gate, {**push, "github": {**push["github"],
                                                                               "event_name": "workflow_dispatch"}})


def test_report_takes_no_run_of_another_repositorys_workflow():
    gate = load("report.yml")["jobs"]["report"]["if"]
    title = f"APB PR #5 @ {'a' * 40}"
    evaluate, validate = ".github/workflows/evaluate.yml", ".github/workflows/validate.yml"
    assert gh_condition(gate, run_context("pull_request_target", evaluate, head_repo="eve/benchmark",
                                          head_branch="patch-1", title=title))
    assert gh_condition(gate, run_context("pull_request", validate, head_repo="eve/benchmark", head_branch="main",
                                          title=title))
    # a run the repository did not make (workflow_run.repository is another one) is never reported
    other = run_context("pull_request_target", evaluate, title=title)
    other["github"]["event"]["workflow_run"]["repository"] = {"full_name": "eve/benchmark"}
    assert not gh_condition(gate, other)
    assert not gh_condition(gate, run_context("pull_request", evaluate, head_repo="eve/benchmark", title=title))
    assert not gh_condition(gate, run_context("workflow_dispatch", evaluate, title=title))


def test_an_evaluation_is_posted_only_on_a_pr_to_the_default_branch():
    """An evaluate run of a PR to another branch ran that branch's (older, perhaps weaker) evaluate.yml: its
    report is not posted, whatever its title says."""
    from evaluator.ci.github import connect, get_repo, publish_report
    from tests.support.fake_github import FakeGitHub
    from tests.test_ci_github import report_body

    sha = "a" * 40
    with FakeGitHub() as fake:
        fake.add_pull(7, sha, base_ref="legacy")
        fake.add_pull(8, sha)
        repo = get_repo(connect("t", base_url=fake.base_url, throttle=False), fake.full_name)
        refused = publish_report(repo, 7, sha, report_body("evaluation"))
        assert refused.startswith("not posted: pull request #7 targets 'legacy'") and not fake.writes()
        assert "created comment" in publish_report(repo, 8, sha, report_body("evaluation"))
        assert "created comment" in publish_report(repo, 7, sha, report_body("validation"))  # its own workflow

"""The GitHub workflows lint clean (zizmor, offline; GitHub's workflow schema) and keep the security rules
of docs/automation.md: pinned actions, explicit permissions, no expression inside a script, a GPU job
without token, secrets or checkout."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
FILES = sorted(WORKFLOWS.glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def load(name: str) -> dict:
    return YAML(typ="safe", pure=True).load((WORKFLOWS / name).read_text(encoding="utf-8"))


def steps_of(workflow: dict):
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def test_there_are_the_five_workflows():
    assert [path.name for path in FILES] == ["evaluate.yml", "leaderboard.yml", "pages.yml", "report.yml", "validate.yml"]


def test_zizmor_offline_finds_nothing():
    result = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", "--color", "never",
                             "--persona", "auditor", str(WORKFLOWS)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_zizmor_offline_does_catch_a_bad_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("name: bad\non: pull_request_target\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - uses: actions/checkout@v4\n      - run: echo ${{ github.event.pull_request.title }}\n")
    result = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", "--color", "never", str(bad.parent)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "template-injection" in result.stdout and "dangerous-triggers" in result.stdout


def test_zizmor_ignores_are_justified_in_place():
    for path in FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "zizmor: ignore" in line:
                assert re.search(r"zizmor: ignore\[[a-z-]+\] -- \S.{20,}", line), f"{path.name}:{number}"


def test_workflows_match_githubs_schema():
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             *map(str, FILES)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit_with_the_version_in_a_comment(path):
    uses = [line for line in path.read_text().splitlines() if re.match(r"^\s*(- )?uses:", line)]
    assert uses
    for line in uses:
        ref, _, comment = line.split("uses:", 1)[1].strip().partition("#")
        assert PINNED.match(ref.strip()), line
        assert re.fullmatch(r"\s*v\d+\.\d+\.\d+", comment), line


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_permissions_are_explicit_everywhere_and_scripts_take_no_expressions(path):
    workflow = load(path.name)
    assert "permissions" in workflow
    for job_id, job in workflow["jobs"].items():
        assert "permissions" in job, job_id
    for job_id, step in steps_of(workflow):
        assert "${{" not in step.get("run", ""), f"{job_id}: pass values through env, not into the script"
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, job_id
    assert "secrets." not in path.read_text()


def test_the_gpu_job_has_no_token_no_checkout_and_fans_out():
    workflow = load("evaluate.yml")
    assert list(workflow["on"]) == ["pull_request_target", "workflow_dispatch"]
    assert workflow["on"]["pull_request_target"] == {"types": ["labeled"]}
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["evaluate"]
    assert job["runs-on"] == ["self-hosted", "gpu"] and job["permissions"] == {}
    assert not any(step.get("uses", "").startswith("actions/checkout@") for step in job["steps"])
    assert job["strategy"]["fail-fast"] is False
    assert job["strategy"]["max-parallel"] == "${{ fromJSON(vars.APB_MAX_PARALLEL || '2') }}"
    assert job["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    cache = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["key"] == "${{ matrix.cache_key }}"
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.event.pull_request.number" in workflow["concurrency"]["group"]
    # only the GPU job runs on the self-hosted runner; every other job is GitHub-hosted
    for name, other in workflow["jobs"].items():
        assert name == "evaluate" or other["runs-on"].startswith("ubuntu-")


def test_only_the_report_job_writes_to_pull_requests():
    for path in FILES:
        for job_id, job in load(path.name)["jobs"].items():
            writes = {k for k, v in (job["permissions"] or {}).items() if v == "write"}
            expected = {("report.yml", "report"): {"pull-requests", "checks"},
                        ("leaderboard.yml", "commit"): {"contents"},
                        ("pages.yml", "deploy"): {"pages", "id-token"}}.get((path.name, job_id), set())
            assert writes == expected, (path.name, job_id)
    report = load("report.yml")
    assert report["jobs"]["report"]["permissions"] == {"actions": "read", "pull-requests": "write", "checks": "write"}
    assert report["on"]["workflow_run"]["workflows"] == [load("validate.yml")["name"], load("evaluate.yml")["name"]]


def test_the_leaderboard_is_committed_by_one_job_at_a_time_and_skips_ci():
    workflow = load("leaderboard.yml")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert workflow["concurrency"] == {"group": "leaderboard", "cancel-in-progress": False}
    text = (WORKFLOWS / "leaderboard.yml").read_text()
    assert "[skip ci]" in text and "git diff --cached --quiet" in text and "rebase origin/main" in text


def test_pages_builds_main_without_write_access_and_only_the_deploy_job_can_publish():
    workflow = load("pages.yml")
    assert workflow["on"]["workflow_run"] == {"workflows": [load("leaderboard.yml")["name"]], "types": ["completed"],
                                              "branches": ["main"]}
    build = workflow["jobs"]["build"]
    assert build["permissions"] == {"contents": "read"}
    checkout = next(step for step in build["steps"] if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"] == {"ref": "main", "persist-credentials": False}
    script = next(step["run"] for step in build["steps"] if step.get("name") == "Build the site")
    assert "apb leaderboard --check" in script and "apb site --out" in script
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]


def test_run_names_are_what_the_report_parses():
    from evaluator.ci.report import RUN_TITLE

    pr, sha = "12", "a" * 40
    for name in ("validate.yml", "evaluate.yml"):
        template = load(name)["run-name"]
        expression = template if name == "validate.yml" else template.split("||")[1]
        text = (expression.replace("${{ github.event.pull_request.number }}", pr)
                .replace("${{ github.event.pull_request.head.sha }}", sha))
        if name == "evaluate.yml":  # format('APB PR #{0} @ {1}', number, sha)
            text = re.search(r"format\('([^']*)'", expression)[1].replace("{0}", pr).replace("{1}", sha)
        assert RUN_TITLE.match(text), (name, text)


def run_step(workflow: str, job: str, name_start: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run one step's script with bash as the runner does (``bash -e -o pipefail``), apb from this venv."""
    step = next(s for s in load(workflow)["jobs"][job]["steps"] if s.get("name", "").startswith(name_start))
    venv = cwd / ".venv" / "bin"
    venv.mkdir(parents=True, exist_ok=True)
    if not (venv / "apb").exists():
        (venv / "apb").symlink_to(BIN / "apb")
    full_env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd), **env}
    return subprocess.run(["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", step["run"]],
                          cwd=cwd, env=full_env, capture_output=True, text=True)


def test_the_plan_job_scripts_stage_the_pr_data_and_plan_the_matrix(tmp_path):
    from tests.support.ci_records import manifest_text, model
    from tests.test_ci_plan import AP, branch, commit, git

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.org")
    git(repo, "config", "user.name", "test")
    base = commit(repo, {f"submissions/{AP}/taxonomy.json": "{}\n", "taxonomy/vocabulary.yaml": "{}\n"}, "base")
    manifest = manifest_text(AP, [model("resnet18", 90, "1"), model("vgg16", 90, "3")])
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest})
    temp, output = tmp_path / "runner-temp", tmp_path / "github_output"
    temp.mkdir()
    env = {"EVENT": "pull_request_target", "BASE_SHA": base, "HEAD_SHA": head, "APB_SHARDS": "vgg16=2",
           "RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(output)}
    result = run_step("evaluate.yml", "plan", "Plan the matrix", repo, env)
    assert result.returncode == 0, result.stderr
    assert (temp / "stage" / "submissions" / AP / "manifest.yaml").read_text() == manifest
    assert not (temp / "stage" / ".venv").exists()  # the stage is the base commit's tracked files + data
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs["evaluate"] == "true" and len(json.loads(outputs["matrix"])["include"]) == 3
    result = run_step("evaluate.yml", "plan", "Validate the staged tree", repo, env)
    assert result.returncode == 0, result.stderr
    assert output.read_text().splitlines()[-1] in ("ok=true", "ok=false")
    assert "problems" in json.loads((temp / "apb-plan" / "validation.json").read_text())

    git(repo, "merge", "-q", "--ff-only", head)
    output.write_text("")
    result = run_step("leaderboard.yml", "plan", "Entries without a record", repo,
                      {"EVENT": "push", "BEFORE": base, "APB_SHARDS": "1", "RUNNER_TEMP": str(temp),
                       "GITHUB_OUTPUT": str(output)})
    assert result.returncode == 0, result.stderr
    plan = json.loads((temp / "apb-plan" / "plan.json").read_text())
    assert plan["base"] == base and [leg["leg"] for leg in plan["include"]] == [
        f"{AP}_R18_CIFAR10_US_90", f"{AP}_V16_CIFAR10_US_90"]

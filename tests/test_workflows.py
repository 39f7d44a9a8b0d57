"""The GitHub workflows lint clean (zizmor, offline; GitHub's workflow schema) and keep the security rules
of docs/automation.md: pinned actions, explicit permissions, no expression inside a script, a GPU job
without token, secrets or checkout."""
from __future__ import annotations

import json
import os
import re
import shutil
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


def test_there_are_the_six_workflows():
    assert [path.name for path in FILES] == ["evaluate.yml", "leaderboard.yml", "pages.yml", "report.yml",
                                             "revoke.yml", "validate.yml"]


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
    assert uses or path.name == "revoke.yml"  # revoke.yml uses no action at all
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
    assert list(workflow["on"]) == ["pull_request_target"]  # the entries main lacks: leaderboard.yml evaluates them
    assert workflow["on"]["pull_request_target"] == {"types": ["labeled"]}
    assert workflow["permissions"] == {}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.event.pull_request.number" in workflow["concurrency"]["group"]
    for name in ("evaluate.yml", "leaderboard.yml"):  # the one GPU leg, in both workflows
        job = load(name)["jobs"]["evaluate"]
        assert runs_on(job, {}) == ["self-hosted", "gpu"] and job["permissions"] == {}
        assert runs_on(job, {"APB_GPU_RUNS_ON": '"apb-gpu"'}) == "apb-gpu"  # an actions-runner-controller scale set
        assert not any(step.get("uses", "").startswith("actions/checkout@") for step in job["steps"])
        assert not any(step.get("uses", "").startswith("actions/cache") for step in job["steps"])
        assert job["strategy"]["fail-fast"] is False
        assert job["strategy"]["max-parallel"] == "${{ fromJSON(vars.APB_MAX_PARALLEL || '2') }}"
        assert job["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
        # only the GPU job runs on the self-hosted runner; every other job is GitHub-hosted
        for other_name, other in load(name)["jobs"].items():
            assert other_name == "evaluate" or other["runs-on"].startswith("ubuntu-")
    scripts = [[step.get("run") for step in load(name)["jobs"]["evaluate"]["steps"]]
               for name in ("evaluate.yml", "leaderboard.yml")]
    assert scripts[0] == scripts[1]  # the same leg: main's legs evaluate exactly as a PR's


UNTRUSTED_TRIGGERS = ("pull_request_target", "issue_comment", "workflow_run")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_workflow_of_an_untrusted_trigger_saves_to_the_cache(path):
    """Issue 19: GitHub gives these triggers a read-only cache token for the default branch (2026-06-26); a save
    there is skipped with a warning, so nothing may rely on one (and nothing should try)."""
    workflow = load(path.name)
    triggers = [workflow["on"]] if isinstance(workflow["on"], str) else list(workflow["on"])
    if not set(triggers) & set(UNTRUSTED_TRIGGERS):
        return
    for job_id, step in steps_of(workflow):
        action = step.get("uses", "").split("@")[0]
        assert action not in ("actions/cache", "actions/cache/save"), (path.name, job_id, step.get("name"))


def test_only_gpu_legs_may_run_on_the_gpu_runners_and_the_leaderboard_hands_off_with_actions_read_only():
    workflow = load("leaderboard.yml")
    plan = workflow["jobs"]["plan"]
    assert plan["permissions"] == {"actions": "read", "contents": "read"}
    handoff = next(step for step in plan["steps"] if step.get("id") == "handoff")
    assert "apb ci handoff" in handoff["run"] and handoff["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}
    assert workflow["jobs"]["collect"]["permissions"] == {}
    for name in ("evaluate.yml", "leaderboard.yml"):
        for job_id, step in steps_of(load(name)):
            assert "merge-multiple" not in (step.get("with") or {}), (name, job_id)


def runs_on(job: dict, variables: dict):
    """A job's runs-on, its expression (if any) evaluated with these repository variables."""
    from tests.support.gh_expressions import evaluate

    value = job["runs-on"]
    if isinstance(value, str) and value.startswith("${{"):
        return evaluate(value.strip()[3:-2], {"vars": variables})
    return value


def test_only_the_report_job_writes_to_pull_requests():
    for path in FILES:
        for job_id, job in load(path.name)["jobs"].items():
            writes = {k for k, v in (job["permissions"] or {}).items() if v == "write"}
            expected = {("report.yml", "report"): {"pull-requests", "checks"},
                        ("revoke.yml", "unlabel"): {"pull-requests"},
                        ("leaderboard.yml", "commit"): {"contents"},
                        ("pages.yml", "deploy"): {"pages", "id-token"}}.get((path.name, job_id), set())
            assert writes == expected, (path.name, job_id)
    report = load("report.yml")
    assert report["jobs"]["report"]["permissions"] == {"actions": "read", "pull-requests": "write", "checks": "write"}
    assert report["on"]["workflow_run"]["workflows"] == [load("validate.yml")["name"], load("evaluate.yml")["name"]]


def test_the_leaderboard_is_committed_by_one_job_at_a_time_and_skips_ci():
    workflow = load("leaderboard.yml")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert workflow["on"]["schedule"] and "workflow_dispatch" in workflow["on"]  # the carry-over runs by itself
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
    from evaluator.ci.report_input import RUN_TITLE

    pr, sha = "12", "a" * 40
    for name in ("validate.yml", "evaluate.yml"):
        template = load(name)["run-name"]
        expression = template
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
    if os.environ.get("PYTHONPATH"):  # a checkout run with another checkout's interpreter
        full_env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
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
                       "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")})
    assert result.returncode == 0, result.stderr
    plan = json.loads((temp / "apb-missing" / "plan.json").read_text())
    assert [leg["leg"] for leg in plan["include"]] == [f"{AP}_R18_CIFAR10_US_90", f"{AP}_V16_CIFAR10_US_90"]


# ------------------------------------------------------------------------------------------ the PR flow, end to end

NEW_AP = "NEWAP_Doe2025Example"


def init_repo(repo: Path) -> None:
    from tests.test_ci_plan import git

    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.org")
    git(repo, "config", "user.name", "test")


def copy_of_this_repository(tmp_path: Path) -> Path:
    """A git repository holding this checkout's tracked files (as they are on disk), one commit on main."""
    from tests.test_ci_plan import commit

    repo = tmp_path / "repo"
    init_repo(repo)
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, repo / name)
    commit(repo, {}, "main")
    return repo


def new_ap_files() -> dict[str, str]:
    """What CONTRIBUTING tells an author to commit for a new AP: taxonomy.json and manifest.yaml, nothing else."""
    from tests.support.ci_records import manifest_text, model

    taxonomy = json.loads((ROOT / "submissions" / "HYDRA_Sehwag2020Hydra" / "taxonomy.json").read_text())
    taxonomy.update(ap_key=NEW_AP, name="NEWAP", title="A new adversarial pruning method", year=2025)
    manifest = manifest_text(NEW_AP, [model("resnet18", sparsity, checkpoint)
                                      for sparsity, checkpoint in ((90, "1"), (95, "2"), (99, "3"))])
    return {f"submissions/{NEW_AP}/taxonomy.json": json.dumps(taxonomy, indent=2) + "\n",
            f"submissions/{NEW_AP}/manifest.yaml": manifest}


def runner_env(tmp_path: Path, **extra: str) -> dict:
    temp = tmp_path / "runner-temp"
    temp.mkdir(exist_ok=True)
    return {"RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(tmp_path / "github_output"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"), "APB_SHARDS": "1", **extra}


def outputs(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_a_pr_with_only_a_new_aps_data_validates_green_and_is_evaluable(tmp_path):
    """Point 1 of issue 10: validate.yml and evaluate.yml's plan job on a PR of taxonomy.json + manifest.yaml."""
    from tests.test_ci_plan import branch, git

    repo = copy_of_this_repository(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    head = branch(repo, new_ap_files())
    git(repo, "checkout", "-q", head)  # validate.yml checks out the PR
    env = runner_env(tmp_path, BASE_SHA=base)
    validate = load("validate.yml")["jobs"]["validate"]
    ran = []
    for step in validate["steps"]:
        if "run" not in step or step["run"].strip() == "make install":
            continue
        if step.get("if") and not gh_condition(step["if"], {"steps": {"changes": {"outputs": outputs(
                Path(env["GITHUB_OUTPUT"]))}}}):
            continue
        result = run_step("validate.yml", "validate", step["name"], repo, env)
        assert result.returncode == 0, (step["name"], result.stdout, result.stderr)
        ran.append(step["name"])
    assert ran == ["Which files this PR changes (submission data only, or code too)", "Validate the submissions",
                   "The generated files render from this PR's data"]  # a data PR runs no code of its own
    assert json.loads((tmp_path / "runner-temp" / "apb-validation" / "validation.json").read_text())["ok"] is True
    rendered = (tmp_path / "runner-temp" / "apb-rendered" / "taxonomy" / "README.md").read_text()
    assert "NEWAP" in rendered and "NEWAP" not in (repo / "taxonomy" / "README.md").read_text()

    git(repo, "checkout", "-q", "main")  # evaluate.yml's plan job: the base branch, the PR as git objects
    (tmp_path / "github_output").write_text("")
    env = runner_env(tmp_path, EVENT="pull_request_target", BASE_SHA=base, HEAD_SHA=head, PR_AUTHOR="newcomer")
    for name in ("Plan the matrix", "Validate the staged tree"):
        result = run_step("evaluate.yml", "plan", name, repo, env)
        assert result.returncode == 0, (name, result.stderr)
    found = outputs(tmp_path / "github_output")
    assert found["evaluate"] == "true" and found["ok"] == "true"
    legs = [leg["model_key"] for leg in json.loads(found["matrix"])["include"]]
    assert legs == [f"{NEW_AP}_R18_CIFAR10_US_{s}" for s in (90, 95, 99)]
    plan = json.loads((tmp_path / "runner-temp" / "apb-plan" / "plan.json").read_text())
    assert plan["ownership"] == [] and plan["pr_author"] == "newcomer"  # a new AP is its submitter's


def gh_condition(text: str, context: dict) -> bool:
    from tests.support.gh_expressions import condition

    return condition(text, {"cancelled": None, **context}) if "cancelled()" not in text else condition(
        text.replace("!cancelled()", "true"), context)


def test_three_quick_merges_lose_no_record_when_github_cancels_the_middle_run(tmp_path):
    """Point 2a: the leaderboard run of the last push plans the middle merge's entries too."""
    from tests.support.ci_records import manifest_text, model
    from tests.test_ci_plan import AP, OTHER_AP, commit

    repo = tmp_path / "repo"
    init_repo(repo)
    commit(repo, {"taxonomy/vocabulary.yaml": "{}\n"}, "base")
    aps = [AP, OTHER_AP, "THIRD_Doe2024Third"]
    merges = [commit(repo, {f"submissions/{ap}/taxonomy.json": "{}\n",
                            f"submissions/{ap}/manifest.yaml": manifest_text(ap, [model("resnet18", 90, str(i))])},
                     f"merge the PR of {ap}") for i, ap in enumerate(aps, 1)]
    # the run of merge 1 ran; GitHub cancelled the pending run of merge 2; the run of merge 3 starts now
    env = runner_env(tmp_path, EVENT="push", BEFORE=merges[1])
    result = run_step("leaderboard.yml", "plan", "Entries without a record", repo, env)
    assert result.returncode == 0, result.stderr
    legs = [leg["model_key"] for leg in json.loads((tmp_path / "runner-temp" / "apb-missing" / "plan.json").read_text())[
        "include"]]
    assert sorted(legs) == sorted(f"{ap}_R18_CIFAR10_US_90" for ap in aps)


def test_a_push_conflict_fails_red_instead_of_exiting_green(tmp_path):
    """Point 2b: the push step's rebase conflict is a failure, not a green run with the records missing."""
    from tests.test_ci_plan import commit, git

    origin = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    init_repo(seed)
    commit(seed, {"leaderboard/README.md": "old\n"}, "main")
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    work, other = tmp_path / "work", tmp_path / "other"
    for clone in (work, other):
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
        git(clone, "config", "user.email", "t@example.org")
        git(clone, "config", "user.name", "test")
    commit(other, {"leaderboard/README.md": "a maintainer's merge regenerated it\n"}, "another merge")
    git(other, "push", "-q", "origin", "HEAD:main")
    before = git(other, "rev-parse", "HEAD")
    commit(work, {"leaderboard/README.md": "the bot regenerated it\n"}, "Update the leaderboard [skip ci]")
    result = run_step("leaderboard.yml", "commit", "Push, rebasing", work, {"TOKEN": "t"})
    assert result.returncode != 0 and "::error::" in result.stdout
    assert git(other, "ls-remote", "origin", "refs/heads/main").split()[0] == before  # nothing was pushed


def test_the_bot_runs_apb_validate_before_it_commits(tmp_path):
    """Point 3: a record that passes the acceptance rule but not `apb validate` (here: a protocol that is not
    a leaderboard protocol) stops the commit step; nothing is committed."""
    from tests.support.ci_records import sha, write_evaluated
    from tests.test_ci_plan import commit, git

    repo = copy_of_this_repository(tmp_path)
    commit(repo, new_ap_files(), "merge the new AP")
    head = git(repo, "rev-parse", "HEAD")
    model_key = f"{NEW_AP}_R18_CIFAR10_US_90"
    env = runner_env(tmp_path)
    temp = Path(env["RUNNER_TEMP"])
    leg = {"model_key": model_key, "ap_key": NEW_AP, "sha256": sha("1"), "protocol": "smoke-v1", "shard": None,
           "cache_key": "apb-smoke-v1-x", "leg": model_key}
    plan = {"format": "apb-ci-plan/1", "protocol": "smoke-v1", "evaluate": True, "reason": "1", "changed_files": [],
            "blocked_files": [], "entries": {k: [] for k in ("added", "changed", "removed", "untouched")},
            "models": {}, "include": [leg], "skipped": [], "problems": []}
    (temp / "apb-plan").mkdir()
    (temp / "apb-plan" / "plan.json").write_text(json.dumps(plan))
    (temp / "apb-records" / "records").mkdir(parents=True)
    write_evaluated(temp / "apb-records" / "records", model_key, sha("1"), protocol="smoke-v1")
    (temp / "apb-records" / "collect.json").write_text(json.dumps(
        {"format": "apb-ci-collect/1", "protocol": "smoke-v1", "records": [f"{model_key}__smoke-v1.json"],
         "missing": [], "problems": []}))
    result = run_step("leaderboard.yml", "commit", "Bring in the records", repo, env)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "not a leaderboard protocol" in result.stdout + result.stderr
    assert git(repo, "rev-parse", "HEAD") == head


def test_a_push_to_a_labelled_pr_removes_the_label(tmp_path):
    """Point 5: revoke.yml's job only removes the label (no checkout, no other step), through the API."""
    from tests.support.fake_github import FakeGitHub

    workflow = load("revoke.yml")
    assert workflow["on"] == {"pull_request_target": {"types": ["synchronize", "reopened"]}}
    job = workflow["jobs"]["unlabel"]
    assert [set(step) - {"name", "env"} for step in job["steps"]] == [{"run"}]
    event = {"github": {"event": {"pull_request": {"labels": [{"name": "bug"}, {"name": "apb:evaluate"}]}}}}
    assert gh_condition(job["if"], event)
    assert not gh_condition(job["if"], {"github": {"event": {"pull_request": {"labels": [{"name": "bug"}]}}}})
    with FakeGitHub() as fake:
        fake.add_pull(9, "e" * 40, labels=("bug", "apb:evaluate"))
        env = {"TOKEN": "t", "API_URL": fake.base_url, "REPOSITORY": fake.full_name, "PR_NUMBER": "9",
               "HEAD_SHA": "e" * 40, "RUNNER_TEMP": str(tmp_path)}
        result = run_step("revoke.yml", "unlabel", "Remove the label", tmp_path, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert fake.state.pulls[9]["labels"] == ["bug"]
        assert [(r.method, r.path, r.authorization) for r in fake.writes()] == [
            ("DELETE", f"/repos/{fake.full_name}/issues/9/labels/apb%3Aevaluate", "Bearer t")]
        again = run_step("revoke.yml", "unlabel", "Remove the label", tmp_path, env)  # label already gone
        assert again.returncode == 0 and "no longer has the label" in again.stdout
        fake.fail("DELETE", r"/labels/", "403")
        fake.state.pulls[9]["labels"].append("apb:evaluate")
        refused = run_step("revoke.yml", "unlabel", "Remove the label", tmp_path, env)
        assert refused.returncode != 0 and "::error::" in refused.stdout


def report_context(event: str, path: str, title: str, run_id: int, conclusion: str = "success") -> dict:
    return {"github": {"repository": "apb-org/benchmark",
                       "event": {"workflow_run": {"event": event, "path": path, "display_title": title,
                                                  "id": run_id, "conclusion": conclusion,
                                                  "repository": {"full_name": "apb-org/benchmark"}}}}}


def test_report_concurrency_and_gate_use_trusted_values_only():
    """Point 6: a fork's run cannot share (and so cancel) another PR's report group, and a workflow the PR adds
    under the name validate or evaluate is not reported."""
    from tests.support.gh_expressions import render

    workflow = load("report.yml")
    group, gate = workflow["concurrency"]["group"], workflow["jobs"]["report"]["if"]
    title = f"APB PR #5 @ {'a' * 40}"
    victim = report_context("pull_request_target", ".github/workflows/evaluate.yml", title, 100)
    forged = report_context("pull_request", ".github/workflows/validate.yml", title, 101)  # a fork's own title
    assert render(group, victim) != render(group, forged)
    assert render(group, report_context("pull_request", ".github/workflows/validate.yml", title, 102)) != \
        render(group, forged)
    assert gh_condition(gate, victim) and gh_condition(gate, forged)
    assert not gh_condition(gate, report_context("pull_request", ".github/workflows/evil.yml", title, 103))
    assert not gh_condition(gate, report_context("pull_request", ".github/workflows/evaluate.yml", title, 104))
    assert not gh_condition(gate, report_context("pull_request_target", ".github/workflows/validate.yml", title, 105))
    assert not gh_condition(gate, report_context("pull_request", ".github/workflows/validate.yml", title, 106,
                                                 "cancelled"))


def test_a_failed_validate_run_is_a_failed_check_even_when_apb_validate_passed(tmp_path):
    """Point 8: report.yml's own steps, against the fake GitHub: validation.json says ok, the run failed
    (generated files or tests), and the check run `APB validation` says failure."""
    from tests.support.fake_github import FakeGitHub
    from tests.support.gh_expressions import render

    sha = "f" * 40
    (tmp_path / "artifacts" / "apb-validation").mkdir(parents=True)
    (tmp_path / "artifacts" / "apb-validation" / "validation.json").write_text('{"ok": true, "problems": []}')
    context = report_context("pull_request", ".github/workflows/validate.yml", f"APB PR #3 @ {sha}", 7, "failure")
    kind = render(load("report.yml")["jobs"]["report"]["env"]["KIND"], context)
    assert kind == "validation"
    env = {"KIND": kind, "RUNNER_TEMP": str(tmp_path), "RUN_TITLE": f"APB PR #3 @ {sha}", "RUN_HEAD_SHA": sha,
           "RUN_URL": "https://github.com/apb-org/benchmark/actions/runs/7", "RUN_CONCLUSION": "failure",
           "HEAD_REPO": "alice/benchmark", "HEAD_REF": "patch-1"}
    result = run_step("report.yml", "report", "Write the report", tmp_path, env)
    assert result.returncode == 0, result.stderr
    with FakeGitHub() as fake:
        fake.add_pull(3, sha, head_repo="alice/benchmark", head_ref="patch-1")
        posted = run_step("report.yml", "report", "Post the sticky comment", tmp_path,
                          {**env, "GITHUB_TOKEN": "t", "GITHUB_API_URL": fake.base_url,
                           "GITHUB_REPOSITORY": fake.full_name})
        assert posted.returncode == 0, posted.stderr
        (run,) = fake.state.check_runs.values()
        assert (run["name"], run["conclusion"]) == ("APB validation", "failure")
        assert "the validate workflow ended in failure" in run["output"]["title"]


def test_actionlint_knows_every_self_hosted_label_the_workflows_use():
    config = YAML(typ="safe", pure=True).load((ROOT / ".github" / "actionlint.yaml").read_text())
    declared = set(config["self-hosted-runner"]["labels"])
    for path in FILES:
        for job in load(path.name)["jobs"].values():
            labels = runs_on(job, {})
            labels = labels if isinstance(labels, list) else [labels]
            if "self-hosted" in labels:
                assert set(labels) - {"self-hosted"} <= declared, (path.name, labels)
    assert "gpu" in declared


def test_the_gpu_runners_are_registered_only_where_a_forks_workflow_cannot_reach_them():
    """Point 7: the documented registrations restrict the runners to evaluate.yml on main (a runner group),
    ephemeral, without credentials; the ARC configuration is in the repository."""
    values = YAML(typ="safe", pure=True).load((ROOT / "deploy" / "arc" / "values.yaml").read_text())
    assert re.fullmatch(r"https://github\.com/[^/]+", values["githubConfigUrl"])  # organization level
    assert values["runnerGroup"] == values["runnerScaleSetName"] == "apb-gpu"
    pod = values["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    (runner,) = pod["containers"]
    assert runner["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert runner["securityContext"]["allowPrivilegeEscalation"] is False
    assert not any("hostPath" in volume for volume in pod.get("volumes", []))
    assert all(mount.get("readOnly") for mount in runner.get("volumeMounts", []))
    policy = YAML(typ="safe", pure=True).load((ROOT / "deploy" / "arc" / "networkpolicy.yaml").read_text())
    blocked = {cidr for rule in policy["spec"]["egress"] for peer in rule.get("to", [])
               for cidr in peer.get("ipBlock", {}).get("except", [])}
    assert {"169.254.0.0/16", "10.0.0.0/8"} <= blocked
    runner_doc = (ROOT / "docs" / "runner.md").read_text()
    assert ".github/workflows/evaluate.yml@refs/heads/main" in runner_doc
    assert "/orgs/ORG/actions/runners/generate-jitconfig" in runner_doc
    assert "/repos/ORG/REPO/actions/runners" not in runner_doc  # no repository-level registration
    for line in runner_doc.splitlines():
        if "config.sh --url" in line:
            assert "--runnergroup apb-gpu" in line and "--ephemeral" in line + runner_doc, line
    assert "What a fork can do" in runner_doc

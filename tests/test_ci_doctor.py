"""Issue 19, point 4: `apb ci doctor` reports every setting the threat model relies on, against the fake GitHub
(GitHub's documented response shapes): a correct deployment is all ok, and each misconfiguration is a problem
with its fix, or could-not-check where the token may not read it."""
from __future__ import annotations

import pytest

from evaluator.ci.doctor import OK, PROBLEM, UNKNOWN, load_deployment, run_doctor
from evaluator.ci.github import connect
from evaluator.cli import main
from evaluator.registry.home import home
from tests.support.fake_github import FakeGitHub

REPO = home().repository  # the repository home.yaml names: its links and Pages address are checked too
OWNER = REPO.split("/")[0]
CLASSIC = {"url": "", "required_status_checks": {"strict": False, "contexts": ["validate"], "checks": []},
           "enforce_admins": {"enabled": False}, "required_signatures": {"enabled": False},
           "allow_force_pushes": {"enabled": False}, "allow_deletions": {"enabled": False},
           "lock_branch": {"enabled": False}}


@pytest.fixture
def fake():
    with FakeGitHub(*REPO.split("/")) as server:
        yield server


def doctor(fake) -> dict[str, tuple[str, str]]:
    findings = run_doctor(connect("read-token", base_url=fake.base_url, throttle=False), REPO, load_deployment())
    assert all(r.method == "GET" for r in fake.requests)  # a read token is enough: nothing is written
    return {f.setting: (f.status, f"{f.detail} | {f.fix}") for f in findings}


def test_a_correct_deployment_is_all_ok(fake):
    found = doctor(fake)
    assert {status for status, _ in found.values()} == {OK}, found
    assert set(found) == {"default workflow permissions", "approval of fork PR workflows", "GPU runner group 'apb-gpu'",
                          "protection of main", "the bot may push to main", "GitHub Pages source",
                          "GitHub Pages address", "label 'apb:evaluate'", "repository name"}


def test_the_cli_prints_each_setting_and_fails_on_a_problem(fake, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_TOKEN", "read-token")
    monkeypatch.setenv("GITHUB_API_URL", fake.base_url)
    assert main(["ci", "doctor", "--repo", REPO]) == 0
    assert "9 ok, 0 problems, 0 could not be checked" in capsys.readouterr().out
    fake.settings.labels.remove("apb:evaluate")
    assert main(["ci", "doctor", "--repo", REPO]) == 1
    out = capsys.readouterr().out
    assert "problem  label 'apb:evaluate': missing" in out and "fix: Issues > Labels > New label" in out


BROKEN = {
    "write token by default": (lambda s: s.workflow_permissions.update(default_workflow_permissions="write"),
                               "default workflow permissions", "'write' access by default"),
    "workflows approve PRs": (lambda s: s.workflow_permissions.update(can_approve_pull_request_reviews=True),
                              "default workflow permissions", "may approve pull requests"),
    "first-time contributors only": (lambda s: setattr(s, "fork_pr_approval", "first_time_contributors"),
                                     "approval of fork PR workflows", "'first_time_contributors'"),
    "no runner group": (lambda s: s.runner_groups.pop(), "GPU runner group 'apb-gpu'", "has no runner group"),
    "group open to all repositories": (lambda s: s.runner_groups[1].update(visibility="all"),
                                       "GPU runner group 'apb-gpu'", f"every repository of {OWNER}"),
    "group open to another repository": (lambda s: s.runner_groups[1]["repositories"].append(f"{OWNER}/other"),
                                         "GPU runner group 'apb-gpu'", f"not only {REPO}"),
    "group open to every workflow": (lambda s: s.runner_groups[1].update(restricted_to_workflows=False),
                                     "GPU runner group 'apb-gpu'", "any workflow may use it"),
    "group open to a PR's ref": (lambda s: s.runner_groups[1]["selected_workflows"].append(
        f"{REPO}/.github/workflows/evaluate.yml@refs/pull/*/merge"), "GPU runner group 'apb-gpu'", "not allowed:"),
    "group open to another workflow": (lambda s: s.runner_groups[1]["selected_workflows"].__setitem__(
        1, f"{REPO}/.github/workflows/validate.yml@main"), "GPU runner group 'apb-gpu'", "missing:"),
    "main unprotected": (lambda s: s.rulesets.clear(), "protection of main", "neither branch protection nor a ruleset"),
    "ruleset only evaluated": (lambda s: s.rulesets[0].update(enforcement="evaluate"), "protection of main",
                               "neither"),
    "bot cannot bypass": (lambda s: s.rulesets[0].update(bypass_actors=[]), "the bot may push to main",
                          "no bypass for the GitHub Actions app"),
    "bot may bypass only via PRs": (lambda s: s.rulesets[0]["bypass_actors"][0].update(bypass_mode="pull_request"),
                                    "the bot may push to main", "no bypass"),
    "classic protection with checks": (lambda s: setattr(s, "branch_protection", dict(CLASSIC)),
                                       "the bot may push to main", "requires status checks"),
    "classic push restrictions": (lambda s: setattr(s, "branch_protection", {
        **{k: v for k, v in CLASSIC.items() if k != "required_status_checks"},
        "restrictions": {"users": [], "teams": [], "apps": [{"id": 1, "slug": "renovate"}]}}),
        "the bot may push to main", "github-actions is not among the apps"),
    "pages from a branch": (lambda s: s.pages.update(build_type="legacy"), "GitHub Pages source", "'legacy'"),
    "pages off": (lambda s: setattr(s, "pages", None), "GitHub Pages source", "not enabled"),
    "pages on a custom domain": (lambda s: s.pages.update(cname="apb.example.org", html_url="https://apb.example.org"),
                                 "GitHub Pages address", "serves the site at 'https://apb.example.org'"),
    "no label": (lambda s: s.labels.remove("apb:evaluate"), "label 'apb:evaluate'", "missing"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_misconfiguration_is_a_problem_with_its_fix(fake, case):
    breaks, setting, text = BROKEN[case]
    breaks(fake.settings)
    found = doctor(fake)
    status, detail = found[setting]
    assert status == PROBLEM and text in detail, found
    assert detail.split(" | ")[1], f"{setting}: no fix given"
    others = {name: value for name, value in found.items() if name != setting and value[0] != OK}
    assert set(others) <= {"the bot may push to main", "protection of main"}, others


def test_classic_protection_that_lets_the_bot_push_is_ok(fake):
    fake.settings.rulesets.clear()
    fake.settings.branch_protection = {**{k: v for k, v in CLASSIC.items() if k != "required_status_checks"},
                                       "restrictions": {"users": [], "teams": [],
                                                        "apps": [{"id": 15368, "slug": "github-actions"}]}}
    found = doctor(fake)
    assert found["protection of main"][0] == OK and found["the bot may push to main"][0] == OK, found


@pytest.mark.parametrize("unreadable, settings", [
    ({"workflow-permissions", "fork-approval", "branch-protection"},
     {"default workflow permissions", "approval of fork PR workflows", "protection of main", "the bot may push to main"}),
    ({"runner-groups"}, {"GPU runner group 'apb-gpu'"}),
    ({"ruleset-bypass"}, {"the bot may push to main"}),
    ({"pages"}, {"GitHub Pages source"}),
])
def test_what_the_token_may_not_read_is_could_not_check(fake, unreadable, settings):
    fake.settings.unreadable |= unreadable
    found = doctor(fake)
    assert {name for name, (status, _) in found.items() if status == UNKNOWN} == settings, found
    assert all(status == OK for name, (status, _) in found.items() if name not in settings)
    assert all("use a token with" in found[name][1] for name in settings if name != "the bot may push to main")


def test_every_workflow_with_a_gpu_job_is_allowed_on_the_runner_group():
    """deployment.yaml names the workflows the GPU runner group must allow; a workflow that gains a GPU job
    must be added there, or doctor would call the correct group (which must allow it) wrong."""
    from tests.test_workflows import FILES, load

    gpu = {f".github/workflows/{path.name}" for path in FILES for job in load(path.name)["jobs"].values()
           if "gpu" in str(job.get("runs-on", "")).lower()}
    assert ".github/workflows/evaluate.yml" in gpu
    assert gpu <= set(load_deployment().gpu_workflows)


def test_the_label_doctor_looks_for_is_the_one_the_workflows_use():
    from tests.test_workflows import WORKFLOWS

    label = load_deployment().label
    for name in ("evaluate.yml", "revoke.yml"):
        assert label in (WORKFLOWS / name).read_text(), name


def test_an_organization_rulesets_bypass_list_is_read_from_the_organization(fake):
    ruleset = fake.settings.rulesets[0]
    fake.settings.rulesets.clear()
    fake.settings.org_rulesets.append(ruleset)
    found = doctor(fake)
    assert found["protection of main"][0] == OK and found["the bot may push to main"][0] == OK, found
    ruleset["bypass_actors"] = []
    assert "no bypass for the GitHub Actions app" in doctor(fake)["the bot may push to main"][1]


def test_a_fork_deployed_elsewhere_is_told_to_change_home_yaml():
    """Issue 22: the Pages address in README.md and leaderboard/README.md is home.yaml's; a deployment under
    another name is a problem whose fix names the file and the value GitHub reports."""
    with FakeGitHub("Someone", "apb-fork") as other:
        findings = run_doctor(connect("read-token", base_url=other.base_url, throttle=False), "Someone/apb-fork",
                              load_deployment())
    found = {f.setting: f for f in findings}
    assert found["repository name"].status == PROBLEM and found["GitHub Pages address"].status == PROBLEM
    assert "set repository: Someone/apb-fork in evaluator/registry/home.yaml" in found["repository name"].fix
    assert "set pages_url: https://someone.github.io/apb-fork/ in evaluator/registry/home.yaml" in \
        found["GitHub Pages address"].fix


def test_the_readmes_link_the_site_at_home_yamls_address():
    """README.md (by hand) and leaderboard/README.md (generated) give the real Pages address, not a pattern."""
    from evaluator.paths import repo_root
    from evaluator.registry.home import same_site
    from tests.support.fake_github import pages_url

    url = home().pages_url
    for name in ("README.md", "leaderboard/README.md", "docs/site.md"):
        text = (repo_root() / name).read_text(encoding="utf-8")
        assert url in text and "<owner>.github.io" not in text, name
    assert same_site(pages_url(home().repository), url)  # the address GitHub gives that repository, no custom domain
    host = url.split("/")[2]
    assert same_site(url.replace(host, host.upper()).rstrip("/"), url)
    assert not same_site(url.rstrip("/") + "-other/", url)

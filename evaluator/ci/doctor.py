"""``apb ci doctor``: check, through the GitHub API with a read token, the repository and organization settings
the threat model of docs/automation.md relies on. Each setting is ``ok``, a ``problem`` (with the fix) or
``could-not-check`` (the token may not read it: the line says which permission would).

What is expected comes from ``evaluator/ci/deployment.yaml`` (label, runner group, the workflows allowed on the
GPU runners, the bot's app). Every request is a GET through one PyGithub session: PyGithub's own call where it
has one (the repository, the label), else its requester on the REST path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from github import GithubException

from evaluator.errors import APBError, Problem

DEPLOYMENT_FILE = Path(__file__).with_name("deployment.yaml")
OK, PROBLEM, UNKNOWN = "ok", "problem", "could-not-check"
# rule types of a ruleset that refuse a direct push of an unsigned bot commit without checks unless bypassed
BLOCKING_RULES = ("pull_request", "required_status_checks", "required_signatures", "update", "required_deployments",
                  "code_scanning", "workflows", "merge_queue")


@dataclass(frozen=True)
class Deployment:
    default_branch: str
    label: str
    runner_group: str
    gpu_workflows: tuple[str, ...]
    bot_app_id: int
    bot_app_slug: str


@dataclass(frozen=True)
class Finding:
    setting: str
    status: str  # OK | PROBLEM | UNKNOWN
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        fix = f"\n    fix: {self.fix}" if self.fix and self.status != OK else ""
        return f"{self.status:>15}  {self.setting}: {self.detail}{fix}"


def load_deployment(path: Path = DEPLOYMENT_FILE) -> Deployment:
    from evaluator.untrusted.safeio import load_yaml

    data, _ = load_yaml(path)
    try:
        return Deployment(str(data["default_branch"]), str(data["label"]), str(data["runner_group"]),
                          tuple(str(w) for w in data["gpu_workflows"]), int(data["bot_app"]["id"]),
                          str(data["bot_app"]["slug"]))
    except (KeyError, TypeError, ValueError) as error:
        raise APBError(Problem(str(path), f"missing or malformed field {error}; see the comments in the file")) from None


class NotReadable(Exception):
    """The API refused to show a setting (status, GitHub's message)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _unreadable(error: GithubException) -> NotReadable:
    data = error.data if isinstance(error.data, dict) else {}
    return NotReadable(error.status, str(data.get("message") or error))


class Api:
    """GET requests through the PyGithub session *gh*."""

    def __init__(self, gh: Any) -> None:
        self.gh = gh

    def get(self, path: str, **params: Any) -> Any:
        try:
            _, data = self.gh.requester.requestJsonAndCheck("GET", path, parameters=params or None)
        except GithubException as error:
            raise _unreadable(error) from None
        return data

    def pages(self, path: str, key: str) -> Iterator[dict]:
        """The items of a paginated list answer ``{"total_count": n, key: [...]}``."""
        page = 1
        while True:
            data = self.get(path, per_page=100, page=page)
            items = data.get(key) or []
            yield from items
            if len(items) < 100:
                return
            page += 1


def _needs(permission: str, error: NotReadable) -> str:
    return f"the token may not read it ({error.status}: {error.message}); use a token with {permission}"


def check_workflow_permissions(api: Api, repo: str, _: Deployment) -> Finding:
    setting = "default workflow permissions"
    try:
        data = api.get(f"/repos/{repo}/actions/permissions/workflow")
    except NotReadable as error:
        return Finding(setting, UNKNOWN, _needs("repository Administration: read", error))
    value = data.get("default_workflow_permissions")
    fix = "Settings > Actions > General > Workflow permissions: Read repository contents and packages permissions"
    if value != "read":
        return Finding(setting, PROBLEM, f"GITHUB_TOKEN gets {value!r} access by default, not 'read'", fix)
    if data.get("can_approve_pull_request_reviews"):
        return Finding(setting, PROBLEM, "workflows may approve pull requests",
                       fix + "; untick 'Allow GitHub Actions to create and approve pull requests'")
    return Finding(setting, OK, "read-only, and workflows cannot approve pull requests")


def check_fork_approval(api: Api, repo: str, _: Deployment) -> Finding:
    setting = "approval of fork PR workflows"
    try:
        policy = api.get(f"/repos/{repo}/actions/permissions/fork-pr-contributor-approval").get("approval_policy")
    except NotReadable as error:
        return Finding(setting, UNKNOWN, _needs("repository Administration: read", error))
    if policy != "all_external_contributors":
        return Finding(setting, PROBLEM, f"approval_policy is {policy!r}: some outside contributors' runs start "
                                         "without a maintainer", "Settings > Actions > General > Approval for "
                                                                 "running fork pull request workflows: Require "
                                                                 "approval for all external contributors")
    return Finding(setting, OK, "every outside contributor's run waits for a maintainer")


def check_runner_group(api: Api, repo: str, deployment: Deployment) -> Finding:
    group_name, org = deployment.runner_group, repo.split("/")[0]
    setting = f"GPU runner group {group_name!r}"
    expected = {f"{repo}/{path}@refs/heads/{deployment.default_branch}" for path in deployment.gpu_workflows}
    fix = (f"Organization settings > Actions > Runner groups > {group_name}: Repository access 'Selected "
           f"repositories' = {repo} only; Workflow access 'Selected workflows' = {', '.join(sorted(expected))}")
    try:
        groups = [g for g in api.pages(f"/orgs/{org}/actions/runner-groups", "runner_groups") if g.get("name") == group_name]
        if not groups:
            return Finding(setting, PROBLEM, f"organization {org} has no runner group {group_name!r}",
                           "create it as docs/runner.md says; " + fix)
        group = groups[0]
        repositories = ([r.get("full_name") for r in api.pages(f"/orgs/{org}/actions/runner-groups/{group['id']}"
                                                                 "/repositories", "repositories")]
                        if group.get("visibility") == "selected" else None)
    except NotReadable as error:
        return Finding(setting, UNKNOWN, _needs("organization Self-hosted runners: read (admin:org for a classic "
                                                "token)", error), fix)
    wrong = []
    if group.get("visibility") != "selected":
        wrong.append(f"visibility is {group.get('visibility')!r}: every repository of {org} may use it")
    elif repositories != [repo]:
        wrong.append(f"repositories {sorted(map(str, repositories or []))}, not only {repo}")
    allowed = {_full_ref(w) for w in group.get("selected_workflows") or []}
    if not group.get("restricted_to_workflows"):
        wrong.append("any workflow may use it (restricted_to_workflows is false)")
    elif allowed != expected:
        extra, missing = sorted(allowed - expected), sorted(expected - allowed)
        wrong.append("selected workflows " + "; ".join(filter(None, [f"not allowed: {', '.join(extra)}" if extra else "",
                                                                      f"missing: {', '.join(missing)}" if missing else ""])))
    if wrong:
        return Finding(setting, PROBLEM, "; ".join(wrong), fix)
    return Finding(setting, OK, f"only {repo}, only {', '.join(sorted(expected))}")


def _full_ref(workflow: str) -> str:
    """``o/r/.github/workflows/x.yml@main`` and ``…@refs/heads/main`` name the same thing."""
    path, _, ref = workflow.partition("@")
    return f"{path}@{ref if ref.startswith('refs/') else 'refs/heads/' + ref}"


def check_branch_protection(api: Api, repo: str, deployment: Deployment) -> list[Finding]:
    branch = deployment.default_branch
    protected, bot = f"protection of {branch}", f"the bot may push to {branch}"
    app = deployment.bot_app_slug
    findings: list[Finding] = []
    classic: dict | None = None
    try:
        classic = api.get(f"/repos/{repo}/branches/{quote(branch)}/protection")
    except NotReadable as error:
        if not (error.status == 404 and "not protected" in error.message.lower()):
            findings.append(Finding(protected, UNKNOWN, _needs("repository Administration: read", error)))
            return findings + [Finding(bot, UNKNOWN, "needs the branch protection above")]
    try:
        rules = api.get(f"/repos/{repo}/rules/branches/{quote(branch)}", per_page=100)
    except NotReadable as error:
        return findings + [Finding(protected, UNKNOWN, _needs("repository Metadata: read", error)),
                           Finding(bot, UNKNOWN, "needs the rules of the branch")]
    if classic is None and not rules:
        return [Finding(protected, PROBLEM, f"{branch} has neither branch protection nor a ruleset: anyone with write "
                                            "access can push anything", f"protect {branch} with a ruleset (require "
                                            "the validate check, block force pushes) that GitHub Actions may bypass"),
                Finding(bot, OK, "nothing restricts pushes")]
    kinds = (["branch protection"] if classic is not None else []) + (["rulesets"] if rules else [])
    findings.append(Finding(protected, OK, " and ".join(kinds)))
    blocked = []
    if classic is not None:
        apps = [a.get("slug") for a in (classic.get("restrictions") or {}).get("apps", [])]
        if classic.get("restrictions") is not None and app not in apps:
            blocked.append(f"branch protection restricts who can push and {app} is not among the apps")
        for key, what in (("required_pull_request_reviews", "requires pull requests"),
                          ("required_status_checks", "requires status checks"),
                          ("required_signatures", "requires signed commits")):
            if (classic.get(key) or {}).get("enabled", key in classic):
                blocked.append(f"branch protection {what}, which the bot's direct push cannot have")
        if (classic.get("lock_branch") or {}).get("enabled"):
            blocked.append("the branch is locked")
    unknown = []
    sources = {r.get("ruleset_id"): r.get("ruleset_source_type") for r in rules if r.get("type") in BLOCKING_RULES}
    for ruleset_id, source in sorted(sources.items()):
        types = sorted({r["type"] for r in rules if r.get("ruleset_id") == ruleset_id and r.get("type") in BLOCKING_RULES})
        owner = f"/orgs/{repo.split('/')[0]}" if source == "Organization" else f"/repos/{repo}"
        try:
            ruleset = api.get(f"{owner}/rulesets/{ruleset_id}")
        except NotReadable as error:
            unknown.append(f"ruleset {ruleset_id}: {error.message}")
            continue
        if "bypass_actors" not in ruleset:
            unknown.append(f"ruleset {ruleset.get('name', ruleset_id)!r} does not show its bypass list to this token")
        elif not any(actor.get("actor_type") == "Integration" and actor.get("actor_id") == deployment.bot_app_id
                     and actor.get("bypass_mode", "always") == "always" for actor in ruleset["bypass_actors"]):
            blocked.append(f"ruleset {ruleset.get('name', ruleset_id)!r} ({', '.join(types)}) has no bypass for the "
                           f"GitHub Actions app ({deployment.bot_app_id})")
    fix = (f"in the ruleset of {branch}, add the GitHub Actions app to the bypass list (always), and move any "
           "classic branch protection rule into that ruleset")
    if blocked:
        findings.append(Finding(bot, PROBLEM, "; ".join(blocked), fix))
    elif unknown:
        findings.append(Finding(bot, UNKNOWN, "; ".join(unknown) + "; use a token with repository Administration: "
                                                                   "read", fix))
    else:
        findings.append(Finding(bot, OK, f"{app} may push the leaderboard commit"))
    return findings


def check_pages(api: Api, repo: str, _: Deployment) -> list[Finding]:
    """Pages publishes pages.yml's artifact, at the address README.md and the leaderboard link (home.yaml)."""
    from evaluator.registry.home import HOME_FILE_SHOWN, home, same_site

    setting, address = "GitHub Pages source", "GitHub Pages address"
    fix = "Settings > Pages > Build and deployment > Source: GitHub Actions"
    try:
        site = api.get(f"/repos/{repo}/pages")
    except NotReadable as error:
        if error.status == 404:
            return [Finding(setting, PROBLEM, "GitHub Pages is not enabled", fix)]
        return [Finding(setting, UNKNOWN, _needs("repository Pages: read", error), fix)]
    build_type, html_url = site.get("build_type"), str(site.get("html_url") or "")
    findings = [Finding(setting, OK, "GitHub Actions (pages.yml deploys)") if build_type == "workflow" else
                Finding(setting, PROBLEM, f"build_type is {build_type!r}: Pages publishes a branch, not pages.yml's "
                                          "artifact", fix)]
    if same_site(html_url, home().pages_url):
        findings.append(Finding(address, OK, f"{html_url}, as the READMEs link it"))
    else:
        findings.append(Finding(address, PROBLEM, f"GitHub serves the site at {html_url!r}, but the READMEs and the "
                                                  f"site link {home().pages_url}",
                                f"set pages_url: {html_url} in {HOME_FILE_SHOWN}, then "
                                "`apb leaderboard` and edit README.md's link"))
    return findings


def check_home_repository(repo_object: Any) -> Finding:
    """The repository checked is the one home.yaml names (its links point there)."""
    from evaluator.registry.home import HOME_FILE_SHOWN, home

    setting, full_name = "repository name", str(repo_object.full_name)
    if full_name.lower() == home().repository.lower():
        return Finding(setting, OK, f"{full_name}, as {HOME_FILE_SHOWN.name} names it")
    return Finding(setting, PROBLEM, f"is {full_name}, but {HOME_FILE_SHOWN.name} names {home().repository}: the READMEs' "
                                     "and the site's links point there",
                   f"set repository: {full_name} in {HOME_FILE_SHOWN}")


def check_label(repo_object: Any, deployment: Deployment) -> Finding:
    setting = f"label {deployment.label!r}"
    try:
        repo_object.get_label(deployment.label)
    except GithubException as error:
        if error.status == 404:
            return Finding(setting, PROBLEM, "missing: maintainers cannot start an evaluation",
                           f"Issues > Labels > New label: {deployment.label}")
        return Finding(setting, UNKNOWN, _needs("repository Metadata: read", _unreadable(error)))
    return Finding(setting, OK, "present")


def run_doctor(gh: Any, repo: str, deployment: Deployment) -> list[Finding]:
    """Every check, in the order docs/automation.md lists the settings."""
    from evaluator.ci.github import get_repo

    repo_object = get_repo(gh, repo)
    api = Api(gh)
    findings: list[Finding] = []
    if repo_object.default_branch != deployment.default_branch:
        findings.append(Finding("default branch", PROBLEM, f"is {repo_object.default_branch!r}; the workflows "
                                f"push to and deploy from {deployment.default_branch!r}",
                                f"Settings > General > Default branch: {deployment.default_branch}"))
    findings += [check_workflow_permissions(api, repo, deployment), check_fork_approval(api, repo, deployment),
                 check_runner_group(api, repo, deployment), *check_branch_protection(api, repo, deployment),
                 *check_pages(api, repo, deployment), check_label(repo_object, deployment),
                 check_home_repository(repo_object)]
    return findings

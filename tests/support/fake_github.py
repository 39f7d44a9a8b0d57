"""A small fake of the GitHub REST API on 127.0.0.1, for testing the PyGithub client over real HTTP.

It implements only what ``evaluator.ci.github`` and the workflows' scripts call: get a repository, an issue, a
pull request and a commit; list (paginated, with ``Link`` headers) / create / edit issue comments; list the
check runs of a commit, create / update check runs; remove a label from a pull request. Every request is recorded; ``fail(...)`` makes matching requests answer 403,
404 or a rate-limit error instead.

The Actions side (``FakeActions``, its own section below) models what the hand-off relies on, as GitHub
documents it: workflow runs (path, event, ``head_sha`` -- for ``pull_request_target`` the base branch's commit --,
title, status / conclusion, cancellation), listed per workflow with the ``event`` / ``status`` / ``head_sha`` /
``created`` filters; artifacts per run with their retention (an expired one is listed with ``expired: true`` and
its download answers 410), downloaded as a zip through a redirect to a storage URL; the pull requests of a
commit; and the Actions cache with scopes, where a run of an untrusted trigger (``pull_request_target``,
``issue_comment``, a fork's ``workflow_run``) gets a read-only token for the default branch's scope: its save is
skipped with a warning, its restores work (GitHub changelog 2026-06-26, "Read-only Actions cache for untrusted
triggers").

    with FakeGitHub() as fake:
        fake.add_pull(7, head_sha="a" * 40)
        gh = Github(auth=Auth.Token("t"), base_url=fake.base_url)
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

BOT_LOGIN = "github-actions[bot]"
RATE_LIMIT_MESSAGE = "API rate limit exceeded for installation ID 1."


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None
    authorization: str | None


@dataclass
class Failure:
    method: str
    path: re.Pattern
    kind: str  # "403" | "404" | "rate-limit" | "secondary-rate-limit"
    remaining: int | None  # answer this many more times; None = always


@dataclass
class FakeState:
    owner: str
    name: str
    token_login: str
    pulls: dict[int, dict] = field(default_factory=dict)
    comments: dict[int, dict] = field(default_factory=dict)
    check_runs: dict[int, dict] = field(default_factory=dict)
    next_id: int = 1000
    actions: "FakeActions" = field(default_factory=lambda: FakeActions())


class FakeGitHub:
    """The fake server; use as a context manager or call ``start()`` / ``stop()``."""

    def __init__(self, owner: str = "apb-org", name: str = "benchmark", *, token_login: str = BOT_LOGIN,
                 app_slug: str = "github-actions") -> None:
        self.state = FakeState(owner, name, token_login)
        self.settings = DeploymentSettings.correct(f"{owner}/{name}")
        self.app_slug = app_slug
        self.requests: list[Request] = []
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeGitHub":
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def full_name(self) -> str:
        return f"{self.state.owner}/{self.state.name}"

    # ------------------------------------------------------------------------------------------ set-up
    def add_pull(self, number: int, head_sha: str, *, head_repo: str | None = None, head_ref: str = "patch-1",
                 labels: tuple[str, ...] = (), base_ref: str = "main") -> None:
        self.state.pulls[number] = {"head_sha": head_sha, "head_repo": head_repo or f"contributor/{self.state.name}",
                                    "head_ref": head_ref, "labels": list(labels), "base_ref": base_ref}

    def add_comment(self, number: int, body: str, *, login: str, user_type: str = "User") -> int:
        with self._lock:
            return self._new_comment(number, body, login, user_type)["id"]

    def add_check_run(self, head_sha: str, name: str, *, app_slug: str | None = None,
                      conclusion: str = "success") -> int:
        with self._lock:
            return self._new_check_run({"name": name, "head_sha": head_sha, "status": "completed",
                                        "conclusion": conclusion, "output": {"title": name, "summary": ""}},
                                       app_slug or self.app_slug)["id"]

    def fail(self, method: str, path_regex: str, kind: str, *, times: int | None = None) -> None:
        """Answer requests whose method and path match with *kind*: ``403``, ``404``, ``rate-limit`` (403 with
        the primary rate-limit message and ``X-RateLimit-Remaining: 0``) or ``secondary-rate-limit`` (429)."""
        if kind not in ("403", "404", "rate-limit", "secondary-rate-limit"):
            raise ValueError(f"unknown failure kind {kind!r}")
        self.failures.append(Failure(method.upper(), re.compile(path_regex), kind, times))

    def comments_on(self, number: int) -> list[dict]:
        return [c for c in sorted(self.state.comments.values(), key=lambda c: c["id"]) if c["issue"] == number]

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]

    # ------------------------------------------------------------------------------------------ payloads
    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _repo_path(self) -> str:
        return f"/repos/{self.state.owner}/{self.state.name}"

    def _user(self, login: str, user_type: str) -> dict:
        return {"login": login, "id": abs(hash(login)) % 100000, "type": user_type,
                "url": self._url(f"/users/{login}")}

    def _new_comment(self, number: int, body: str, login: str, user_type: str) -> dict:
        self.state.next_id += 1
        comment_id = self.state.next_id
        comment = {"id": comment_id, "issue": number, "body": body, "login": login, "user_type": user_type,
                   "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
        self.state.comments[comment_id] = comment
        return comment

    def _comment_json(self, comment: dict) -> dict:
        path = f"{self._repo_path()}/issues/comments/{comment['id']}"
        return {"id": comment["id"], "body": comment["body"],
                "user": self._user(comment["login"], comment["user_type"]),
                "url": self._url(path), "issue_url": self._url(f"{self._repo_path()}/issues/{comment['issue']}"),
                "html_url": f"https://github.example/{self.full_name}/pull/{comment['issue']}"
                            f"#issuecomment-{comment['id']}",
                "created_at": comment["created_at"], "updated_at": comment["updated_at"]}

    def _new_check_run(self, fields: dict, app_slug: str) -> dict:
        self.state.next_id += 1
        run = {"id": self.state.next_id, "app_slug": app_slug, **fields}
        self.state.check_runs[run["id"]] = run
        return run

    def _check_run_json(self, run: dict) -> dict:
        return {"id": run["id"], "name": run["name"], "head_sha": run["head_sha"], "status": run.get("status"),
                "conclusion": run.get("conclusion"), "output": run.get("output") or {},
                "app": {"id": 15368, "slug": run["app_slug"], "name": run["app_slug"]},
                "url": self._url(f"{self._repo_path()}/check-runs/{run['id']}"),
                "html_url": f"https://github.example/{self.full_name}/runs/{run['id']}"}

    def _repo_json(self) -> dict:
        return {"id": 1, "name": self.state.name, "full_name": self.full_name,
                "owner": self._user(self.state.owner, "Organization"), "private": False, "default_branch": self.settings.default_branch,
                "url": self._url(self._repo_path())}

    def _commit_json(self, sha: str) -> dict:
        return {"sha": sha, "url": self._url(f"{self._repo_path()}/commits/{sha}"), "files": [],
                "commit": {"message": "a commit", "url": self._url(f"{self._repo_path()}/git/commits/{sha}")}}

    def _issue_json(self, number: int) -> dict:
        path = f"{self._repo_path()}/issues/{number}"
        return {"id": number, "number": number, "title": f"PR {number}", "state": "open",
                "url": self._url(path), "comments_url": self._url(f"{path}/comments"),
                "pull_request": {"url": self._url(f"{self._repo_path()}/pulls/{number}")}}

    def _pull_json(self, number: int) -> dict:
        pull = self.state.pulls[number]
        merged = pull.get("merged_at")
        return {"id": number, "number": number, "state": "closed" if merged else "open", "title": f"PR {number}",
                "merged_at": merged, "merge_commit_sha": pull.get("merge_commit_sha"),
                "created_at": pull.get("created_at", "2026-01-01T00:00:00Z"),
                "url": self._url(f"{self._repo_path()}/pulls/{number}"),
                "issue_url": self._url(f"{self._repo_path()}/issues/{number}"),
                "head": {"sha": pull["head_sha"], "ref": pull["head_ref"],
                         "repo": {"full_name": pull["head_repo"], "name": pull["head_repo"].split("/")[1]}},
                "base": {"sha": "b" * 40, "ref": pull.get("base_ref", "main"),
                         "repo": {"full_name": self.full_name, "name": self.state.name}}}

    # ------------------------------------------------------------------------------------------ dispatch
    def handle(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, dict, object]:
        """(status, extra headers, JSON payload) for one request."""
        for failure in self.failures:
            if failure.method == method and failure.path.search(path) and failure.remaining != 0:
                if failure.remaining is not None:
                    failure.remaining -= 1
                return _failure_response(failure.kind)
        deployment = self._deployment_route(method, path)
        if deployment is not None:
            return deployment
        repo = self._repo_path()
        routes = [
            ("GET", rf"^{re.escape(repo)}$", lambda m: (200, {}, self._repo_json())),
            ("GET", rf"^{re.escape(repo)}/issues/(\d+)$", self._get_issue),
            ("GET", rf"^{re.escape(repo)}/pulls/(\d+)$", self._get_pull),
            ("GET", rf"^{re.escape(repo)}/issues/(\d+)/comments$", lambda m: self._list_comments(m, query)),
            ("POST", rf"^{re.escape(repo)}/issues/(\d+)/comments$", lambda m: self._create_comment(m, body)),
            ("PATCH", rf"^{re.escape(repo)}/issues/comments/(\d+)$", lambda m: self._edit_comment(m, body)),
            ("GET", rf"^{re.escape(repo)}/commits/([0-9a-f]{{40}})$", lambda m: (200, {}, self._commit_json(m[1]))),
            ("GET", rf"^{re.escape(repo)}/commits/([0-9a-f]{{40}})/check-runs$", lambda m: self._list_runs(m, query)),
            ("POST", rf"^{re.escape(repo)}/check-runs$", lambda m: self._create_run(body)),
            ("PATCH", rf"^{re.escape(repo)}/check-runs/(\d+)$", lambda m: self._edit_run(m, body)),
            ("DELETE", rf"^{re.escape(repo)}/issues/(\d+)/labels/([^/]+)$", self._remove_label),
        ]
        routes += self._actions_routes(repo, query)
        for route_method, pattern, action in routes:
            match = re.match(pattern, path)
            if match and route_method == method:
                with self._lock:
                    return action(match)
        return _not_found()

    def _remove_label(self, match: re.Match) -> tuple[int, dict, object]:
        pull = self.state.pulls.get(int(match[1]))
        name = unquote(match[2])
        if pull is None or name not in pull["labels"]:
            return 404, {}, {"message": "Label does not exist"}
        pull["labels"].remove(name)
        return 200, {}, [{"name": label} for label in pull["labels"]]

    def _get_issue(self, match: re.Match) -> tuple[int, dict, object]:
        number = int(match[1])
        return (200, {}, self._issue_json(number)) if number in self.state.pulls else _not_found()

    def _get_pull(self, match: re.Match) -> tuple[int, dict, object]:
        number = int(match[1])
        return (200, {}, self._pull_json(number)) if number in self.state.pulls else _not_found()

    def _list_comments(self, match: re.Match, query: dict) -> tuple[int, dict, object]:
        number = int(match[1])
        if number not in self.state.pulls:
            return _not_found()
        items = [self._comment_json(c) for c in self.comments_on(number)]
        return self._page(items, query, f"{self._repo_path()}/issues/{number}/comments")

    def _page(self, items: list, query: dict, path: str, wrap: str | None = None) -> tuple[int, dict, object]:
        per_page = int(query.get("per_page", ["30"])[0])
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            extra = "".join(f"&{k}={v[0]}" for k, v in sorted(query.items()) if k not in ("page", "per_page"))
            last = (len(items) + per_page - 1) // per_page
            headers["Link"] = (f'<{self._url(path)}?per_page={per_page}&page={page + 1}{extra}>; rel="next", '
                               f'<{self._url(path)}?per_page={per_page}&page={last}{extra}>; rel="last"')
        payload = {"total_count": len(items), wrap: chunk} if wrap else chunk
        return 200, headers, payload

    def _create_comment(self, match: re.Match, body: dict | None) -> tuple[int, dict, object]:
        number = int(match[1])
        if number not in self.state.pulls:
            return _not_found()
        if not body or not isinstance(body.get("body"), str):
            return 422, {}, {"message": "Validation Failed"}
        if len(body["body"]) > 65536:
            return 422, {}, {"message": "Validation Failed",
                             "errors": [{"message": "Body is too long (maximum is 65536 characters)"}]}
        return 201, {}, self._comment_json(self._new_comment(number, body["body"], self.state.token_login, "Bot"))

    def _edit_comment(self, match: re.Match, body: dict | None) -> tuple[int, dict, object]:
        comment = self.state.comments.get(int(match[1]))
        if comment is None:
            return _not_found()
        if comment["login"] != self.state.token_login:
            return 403, {}, {"message": "Resource not accessible by integration"}
        comment["body"] = (body or {}).get("body", comment["body"])
        comment["updated_at"] = "2026-01-02T00:00:00Z"
        return 200, {}, self._comment_json(comment)

    def _list_runs(self, match: re.Match, query: dict) -> tuple[int, dict, object]:
        name = query.get("check_name", [None])[0]
        runs = [self._check_run_json(r) for r in sorted(self.state.check_runs.values(), key=lambda r: r["id"])
                if r["head_sha"] == match[1] and (name is None or r["name"] == name)]
        return self._page(runs, query, f"{self._repo_path()}/commits/{match[1]}/check-runs", wrap="check_runs")

    def _create_run(self, body: dict | None) -> tuple[int, dict, object]:
        if not body or "name" not in body or not re.fullmatch(r"[0-9a-f]{40}", str(body.get("head_sha"))):
            return 422, {}, {"message": "Validation Failed"}
        fields = {k: body.get(k) for k in ("name", "head_sha", "status", "conclusion", "output")}
        return 201, {}, self._check_run_json(self._new_check_run(fields, self.app_slug))

    def _edit_run(self, match: re.Match, body: dict | None) -> tuple[int, dict, object]:
        run = self.state.check_runs.get(int(match[1]))
        if run is None:
            return _not_found()
        if run["app_slug"] != self.app_slug:
            return 403, {}, {"message": "Invalid app_id `15368` - check run can only be modified by the GitHub App "
                                        "that created it."}
        run.update({k: v for k, v in (body or {}).items() if k in ("status", "conclusion", "output", "name")})
        return 200, {}, self._check_run_json(run)

    # ------------------------------------------------------------------------------------------ Actions
    def merge_pull(self, number: int, merge_commit_sha: str, *, commits: tuple[str, ...] = ()) -> None:
        """Mark PR *number* merged as *merge_commit_sha*; ``GET /commits/{sha}/pulls`` lists it for that commit
        and for *commits* (a rebase merge's other commits)."""
        pull = self.state.pulls[number]
        pull.update(merged_at="2026-01-02T00:00:00Z", merge_commit_sha=merge_commit_sha)
        for sha in (merge_commit_sha, *commits):
            self.state.actions.commit_pulls.setdefault(sha, []).append(number)

    def _actions_routes(self, repo: str, query: dict) -> list:
        r = re.escape(repo)
        return [
            ("GET", rf"^{r}/actions/workflows/([\w.-]+)$", self._get_workflow),
            ("GET", rf"^{r}/actions/workflows/([\w.-]+)/runs$", lambda m: self._list_workflow_runs(m, query)),
            ("GET", rf"^{r}/actions/runs/(\d+)$", self._get_run),
            ("GET", rf"^{r}/actions/runs/(\d+)/artifacts$", lambda m: self._list_artifacts(m, query)),
            ("GET", rf"^{r}/actions/artifacts/(\d+)/zip$", self._download_artifact),
            ("GET", r"^/_storage/artifacts/(\d+)$", self._artifact_blob),
            ("GET", rf"^{r}/commits/([0-9a-f]{{40}})/pulls$", lambda m: self._commit_pulls(m, query)),
        ]

    def _workflow_json(self, file_name: str) -> dict:
        path = f".github/workflows/{file_name}"
        return {"id": abs(hash(path)) % 10**6, "name": file_name.rsplit(".", 1)[0], "path": path, "state": "active",
                "url": self._url(f"{self._repo_path()}/actions/workflows/{file_name}")}

    def _run_json(self, run: dict) -> dict:
        path = f"{self._repo_path()}/actions/runs/{run['id']}"
        return {"id": run["id"], "name": run["name"], "path": run["path"], "event": run["event"],
                "head_sha": run["head_sha"], "head_branch": run["head_branch"], "display_title": run["title"],
                "status": run["status"], "conclusion": run["conclusion"], "run_number": run["id"],
                "created_at": run["created_at"], "url": self._url(path),
                "artifacts_url": self._url(f"{path}/artifacts"), "repository": self._repo_json(),
                "head_repository": self._repo_json()}

    def _get_workflow(self, match: re.Match) -> tuple[int, dict, object]:
        return 200, {}, self._workflow_json(match[1])

    def _list_workflow_runs(self, match: re.Match, query: dict) -> tuple[int, dict, object]:
        wanted = {name: query[name][0] for name in ("event", "status", "head_sha", "created") if name in query}
        runs = [run for run in sorted(self.state.actions.runs.values(), key=lambda run: -run["id"])
                if run["path"] == f".github/workflows/{match[1]}" and _run_matches(run, wanted)]
        return self._page([self._run_json(run) for run in runs], query,
                          f"{self._repo_path()}/actions/workflows/{match[1]}/runs", wrap="workflow_runs")

    def _get_run(self, match: re.Match) -> tuple[int, dict, object]:
        run = self.state.actions.runs.get(int(match[1]))
        return (200, {}, self._run_json(run)) if run else _not_found()

    def _list_artifacts(self, match: re.Match, query: dict) -> tuple[int, dict, object]:
        run_id = int(match[1])
        if run_id not in self.state.actions.runs:
            return _not_found()
        name = query.get("name", [None])[0]
        items = [self._artifact_json(a) for a in self.state.actions.artifacts_of(run_id)
                 if name is None or a["name"] == name]
        return self._page(items, query, f"{self._repo_path()}/actions/runs/{run_id}/artifacts", wrap="artifacts")

    def _artifact_json(self, artifact: dict) -> dict:
        path = f"{self._repo_path()}/actions/artifacts/{artifact['id']}"
        return {"id": artifact["id"], "name": artifact["name"], "size_in_bytes": len(artifact["data"]),
                "expired": self.state.actions.expired(artifact), "url": self._url(path),
                "archive_download_url": self._url(f"{path}/zip"), "created_at": "2026-01-01T00:00:00Z",
                "expires_at": artifact["expires_at_text"],
                "workflow_run": {"id": artifact["run_id"],
                                 "head_sha": self.state.actions.runs[artifact["run_id"]]["head_sha"]}}

    def _download_artifact(self, match: re.Match) -> tuple[int, dict, object]:
        artifact = self.state.actions.artifacts.get(int(match[1]))
        if artifact is None:
            return _not_found()
        if self.state.actions.expired(artifact):
            return 410, {}, {"message": "Artifact has expired",
                             "documentation_url": "https://docs.github.com/rest/actions/artifacts#download-an-artifact"}
        return 302, {"Location": self._url(f"/_storage/artifacts/{artifact['id']}")}, {}

    def _artifact_blob(self, match: re.Match) -> tuple[int, dict, object]:
        artifact = self.state.actions.artifacts.get(int(match[1]))
        return (200, {}, artifact["data"]) if artifact else _not_found()

    def _commit_pulls(self, match: re.Match, query: dict) -> tuple[int, dict, object]:
        numbers = self.state.actions.commit_pulls.get(match[1], [])
        return self._page([self._pull_json(n) for n in numbers], query, f"{self._repo_path()}/commits/{match[1]}/pulls")

    # ------------------------------------------------------------------------------------------ deployment settings
    # The settings `apb ci doctor` reads (GET only), answered in the shapes GitHub's REST reference documents.
    # ``settings.unreadable`` names the settings the token may not read: they answer 403 as to a read token.
    def _deployment_route(self, method: str, path: str) -> tuple[int, dict, object] | None:
        if method != "GET":
            return None
        repo, org, settings = re.escape(self._repo_path()), re.escape(f"/orgs/{self.state.owner}"), self.settings
        routes = [
            ("workflow-permissions", rf"^{repo}/actions/permissions/workflow$", lambda m: settings.workflow_permissions),
            ("fork-approval", rf"^{repo}/actions/permissions/fork-pr-contributor-approval$",
             lambda m: {"approval_policy": settings.fork_pr_approval}),
            ("runner-groups", rf"^{org}/actions/runner-groups$", lambda m: self._runner_groups()),
            ("runner-groups", rf"^{org}/actions/runner-groups/(\d+)/repositories$", self._group_repositories),
            ("branch-protection", rf"^{repo}/branches/([^/]+)/protection$", self._branch_protection),
            ("rules", rf"^{repo}/rules/branches/([^/]+)$", self._branch_rules),
            ("rulesets", rf"^{repo}/rulesets/(\d+)$", lambda m: self._ruleset(m, settings.rulesets, "Repository")),
            ("rulesets", rf"^{org}/rulesets/(\d+)$", lambda m: self._ruleset(m, settings.org_rulesets, "Organization")),
            ("pages", rf"^{repo}/pages$", lambda m: settings.pages),
            ("labels", rf"^{repo}/labels/([^/]+)$", self._label),
        ]
        for name, pattern, answer in routes:
            match = re.match(pattern, path)
            if match:
                if name in settings.unreadable:
                    return 403, {}, {"message": "Resource not accessible by integration",
                                     "documentation_url": "https://docs.github.com/rest"}
                with self._lock:
                    payload = answer(match)
                if payload is _BRANCH_NOT_PROTECTED:
                    return 404, {}, {"message": "Branch not protected", "documentation_url":
                                     "https://docs.github.com/rest/branches/branch-protection#get-branch-protection"}
                return (200, {}, payload) if payload is not None else _not_found()
        return None

    def _runner_groups(self) -> dict:
        org = self._url(f"/orgs/{self.state.owner}/actions/runner-groups")
        groups = [{"default": False, "inherited": False, "allows_public_repositories": True,
                   "workflow_restrictions_read_only": False, "runners_url": f"{org}/{g['id']}/runners",
                   **({"selected_repositories_url": f"{org}/{g['id']}/repositories"} if g["visibility"] == "selected"
                      else {}),
                   **{k: v for k, v in g.items() if k != "repositories"}} for g in self.settings.runner_groups]
        return {"total_count": len(groups), "runner_groups": groups}

    def _group_repositories(self, match: re.Match) -> dict | None:
        group = next((g for g in self.settings.runner_groups if g["id"] == int(match[1])), None)
        if group is None:
            return None
        repos = [{"id": i + 1, "name": name.split("/")[1], "full_name": name,
                  "owner": self._user(name.split("/")[0], "Organization"), "private": False}
                 for i, name in enumerate(group["repositories"])]
        return {"total_count": len(repos), "repositories": repos}

    def _branch_protection(self, match: re.Match) -> object:
        protection = self.settings.branch_protection if unquote(match[1]) == self.settings.default_branch else None
        if protection is None:
            return _BRANCH_NOT_PROTECTED
        return protection

    def _branch_rules(self, match: re.Match) -> list:
        if unquote(match[1]) != self.settings.default_branch:
            return []
        owned = [(ruleset, "Repository", self.full_name) for ruleset in self.settings.rulesets] + \
            [(ruleset, "Organization", self.state.owner) for ruleset in self.settings.org_rulesets]
        return [{"type": rule["type"], "ruleset_source_type": kind, "ruleset_source": source,
                 "ruleset_id": ruleset["id"], **({"parameters": rule["parameters"]} if "parameters" in rule else {})}
                for ruleset, kind, source in owned if ruleset["enforcement"] == "active" for rule in ruleset["rules"]]

    def _ruleset(self, match: re.Match, rulesets: list[dict], kind: str) -> dict | None:
        ruleset = next((r for r in rulesets if r["id"] == int(match[1])), None)
        if ruleset is None:
            return None
        source = self.full_name if kind == "Repository" else self.state.owner
        shown = {"target": "branch", "source_type": kind, "source": source,
                 "conditions": {"ref_name": {"include": ["~DEFAULT_BRANCH"], "exclude": []}},
                 "current_user_can_bypass": "never", **ruleset}
        if "ruleset-bypass" in self.settings.unreadable:  # GitHub shows the bypass list only to who may edit it
            shown.pop("bypass_actors", None)
        return shown

    def _label(self, match: re.Match) -> dict | None:
        name = unquote(match[1])
        if name not in self.settings.labels:
            return None
        return {"id": 1, "node_id": "LA_1", "url": self._url(f"{self._repo_path()}/labels/{quote(name)}"), "name": name,
                "color": "0e8a16", "default": False, "description": "a maintainer approved the evaluation"}


_BRANCH_NOT_PROTECTED = "branch not protected"


@dataclass
class DeploymentSettings:
    """The repository and organization settings ``apb ci doctor`` checks; ``correct()`` is the deployment
    docs/automation.md asks for. Tests break one field at a time."""

    default_branch: str
    workflow_permissions: dict
    fork_pr_approval: str
    runner_groups: list[dict]
    branch_protection: dict | None
    rulesets: list[dict]
    pages: dict | None
    labels: list[str]
    org_rulesets: list[dict] = field(default_factory=list)  # rulesets of the organization that reach this repository
    unreadable: set[str] = field(default_factory=set)

    @classmethod
    def correct(cls, full_name: str) -> "DeploymentSettings":
        workflows = [f"{full_name}/.github/workflows/{name}@refs/heads/main" for name in ("evaluate.yml", "leaderboard.yml")]
        return cls(
            default_branch="main",
            workflow_permissions={"default_workflow_permissions": "read", "can_approve_pull_request_reviews": False},
            fork_pr_approval="all_external_contributors",
            runner_groups=[{"id": 1, "name": "Default", "visibility": "all", "restricted_to_workflows": False,
                            "selected_workflows": [], "repositories": []},
                           {"id": 2, "name": "apb-gpu", "visibility": "selected", "restricted_to_workflows": True,
                            "selected_workflows": workflows, "repositories": [full_name]}],
            branch_protection=None,
            rulesets=[{"id": 42, "name": "main", "enforcement": "active",
                       "bypass_actors": [{"actor_id": 15368, "actor_type": "Integration", "bypass_mode": "always"}],
                       "rules": [{"type": "deletion"}, {"type": "non_fast_forward"},
                                 {"type": "required_status_checks", "parameters": {
                                     "strict_required_status_checks_policy": False,
                                     "required_status_checks": [{"context": "validate"}]}}]}],
            pages={"url": "", "status": "built", "cname": None, "custom_404": False, "html_url": pages_url(full_name),
                   "build_type": "workflow", "source": {"branch": "main", "path": "/"}, "public": True,
                   "https_enforced": True},
            labels=["apb:evaluate", "bug"])


def pages_url(full_name: str) -> str:
    """The ``html_url`` GitHub gives a Pages site without a custom domain: ``https://<owner>.github.io/<name>/``
    (the host in lower case), or the domain's root for the repository named ``<owner>.github.io``."""
    owner, name = full_name.split("/")
    host = f"{owner.lower()}.github.io"
    return f"https://{host}/" if name.lower() == host else f"https://{host}/{name}/"


def _not_found() -> tuple[int, dict, object]:
    return 404, {}, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


def _failure_response(kind: str) -> tuple[int, dict, object]:
    reset = str(int(time.time()) + 3600)
    if kind == "403":
        return 403, {}, {"message": "Resource not accessible by integration"}
    if kind == "404":
        return _not_found()
    if kind == "rate-limit":
        return 403, {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, \
            {"message": RATE_LIMIT_MESSAGE}
    return 429, {"X-RateLimit-Reset": reset}, {"message": "You have exceeded a secondary rate limit."}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeGitHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        query = parse_qs(split.query)
        self.owner.requests.append(Request(self.command, split.path, query, body, self.headers.get("Authorization")))
        status, headers, payload = self.owner.handle(self.command, split.path, query, body)
        raw_bytes = isinstance(payload, bytes)  # an artifact's zip from the storage URL
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/zip" if raw_bytes else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


# ---------------------------------------------------------------------------------------------- Actions state

UNTRUSTED_EVENTS = ("pull_request_target", "issue_comment")  # + a workflow_run cascading from a fork's PR
DAY = 86400.0


def _run_matches(run: dict, wanted: dict) -> bool:
    """The list-runs filters as GitHub applies them: ``status`` is a status or a conclusion, ``created`` a date
    range (only ``>=YYYY-MM-DD`` is modelled)."""
    if "event" in wanted and run["event"] != wanted["event"]:
        return False
    if "head_sha" in wanted and run["head_sha"] != wanted["head_sha"]:
        return False
    if "status" in wanted and wanted["status"] not in (run["status"], run["conclusion"]):
        return False
    if "created" in wanted:
        since = wanted["created"].removeprefix(">=")
        if run["created_at"][:10] < since:
            return False
    return True


@dataclass
class FakeActions:
    """Workflow runs, their artifacts, the pull requests of commits and the Actions cache of one repository."""

    default_branch: str = "main"
    now: float = 1_780_000_000.0  # the fake clock (seconds); ``advance`` moves it
    runs: dict[int, dict] = field(default_factory=dict)
    artifacts: dict[int, dict] = field(default_factory=dict)
    commit_pulls: dict[str, list[int]] = field(default_factory=dict)
    caches: list[dict] = field(default_factory=list)  # {"key", "scope", "data"}
    warnings: list[str] = field(default_factory=list)
    next_id: int = 5000

    def advance(self, days: float) -> None:
        self.now += days * DAY

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def start_run(self, path: str, event: str, head_sha: str, *, title: str, head_branch: str = "main",
                  from_fork: bool = False) -> int:
        """A new in-progress run of workflow *path*; for ``pull_request_target`` pass the base branch's commit as
        *head_sha*, as GitHub reports it."""
        import datetime as dt

        run_id = self._new_id()
        created = dt.datetime.fromtimestamp(self.now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.runs[run_id] = {"id": run_id, "name": path.rsplit("/", 1)[-1].rsplit(".", 1)[0], "path": path,
                             "event": event, "head_sha": head_sha, "head_branch": head_branch, "title": title,
                             "status": "in_progress", "conclusion": None, "created_at": created,
                             "from_fork": from_fork}
        return run_id

    def finish_run(self, run_id: int, conclusion: str) -> None:
        self.runs[run_id].update(status="completed", conclusion=conclusion)

    def upload(self, run_id: int, name: str, data: bytes, *, retention_days: float = 90) -> int:
        """Store artifact *name* of run *run_id* (a zip). Names are unique within a run, as upload-artifact v4+
        enforces."""
        import datetime as dt

        if any(a["name"] == name for a in self.artifacts_of(run_id)):
            raise ValueError(f"run {run_id} already has an artifact named {name!r}")
        artifact_id = self._new_id()
        expires = self.now + retention_days * DAY
        self.artifacts[artifact_id] = {"id": artifact_id, "run_id": run_id, "name": name, "data": data,
                                       "expires_at": expires, "expires_at_text": dt.datetime.fromtimestamp(
                                           expires, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        return artifact_id

    def artifacts_of(self, run_id: int) -> list[dict]:
        return [a for a in sorted(self.artifacts.values(), key=lambda a: a["id"]) if a["run_id"] == run_id]

    def expired(self, artifact: dict) -> bool:
        return self.now >= artifact["expires_at"]

    def cache_scope(self, run_id: int) -> str:
        """The cache scope of a run: its branch's ref (``pull_request_target`` runs in the base branch's)."""
        return f"refs/heads/{self.runs[run_id]['head_branch']}"

    def read_only_cache(self, run_id: int) -> bool:
        """GitHub's rule: an untrusted trigger in the default branch's scope gets a read-only cache token."""
        run = self.runs[run_id]
        untrusted = run["event"] in UNTRUSTED_EVENTS or (run["event"] == "workflow_run" and run["from_fork"])
        return untrusted and self.cache_scope(run_id) == f"refs/heads/{self.default_branch}"

    def cache_save(self, run_id: int, key: str, data: bytes) -> bool:
        """Save *data* under *key* in the run's scope; False (and a warning, as actions/cache logs it) when the
        run's cache token is read-only or the key exists (entries are immutable)."""
        scope = self.cache_scope(run_id)
        if self.read_only_cache(run_id):
            self.warnings.append(f"run {run_id}: Failed to save: the cache token is read-only for this workflow "
                                 f"event ({self.runs[run_id]['event']}); cache {key} was not saved")
            return False
        if any(c["key"] == key and c["scope"] == scope for c in self.caches):
            self.warnings.append(f"run {run_id}: cache {key} already exists; not saved")
            return False
        self.caches.append({"key": key, "scope": scope, "data": data})
        return True

    def cache_restore(self, run_id: int, key: str) -> bytes | None:
        """The entry *key* from the run's scope or, failing that, the default branch's."""
        for scope in (self.cache_scope(run_id), f"refs/heads/{self.default_branch}"):
            for entry in self.caches:
                if entry["key"] == key and entry["scope"] == scope:
                    return entry["data"]
        return None

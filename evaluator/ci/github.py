"""The GitHub side of the report workflow: one sticky PR comment and one check run, through PyGithub.

Every GitHub failure becomes an ``APBError`` that says what was being done and what to do: a 403 names the
permissions the workflow needs, a 404 the repository / PR / commit that was not found, a rate limit the time
it resets. Nothing here retries a refused or rate-limited request (a report is cheap to re-run); only
transient 502/503/504 answers to reads are retried.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass
from typing import Iterator

from github import Auth, Github, GithubException, RateLimitExceededException
from requests import RequestException
from urllib3.util.retry import Retry

from evaluator.ci.report import CHECK_NAMES, REPORT_MARKER, read_meta
from evaluator.errors import APBError, Problem

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_BOT_LOGIN = "github-actions[bot]"  # the author of everything GITHUB_TOKEN writes
DEFAULT_APP_SLUG = "github-actions"  # the app that owns check runs made with GITHUB_TOKEN
MAX_COMMENT_CHARS = 65_536  # GitHub refuses longer comment bodies
MAX_CHECK_SUMMARY_CHARS = 65_535  # and longer check-run summaries
CONCLUSIONS = ("success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required")
_SHA = re.compile(r"^[0-9a-f]{40}\Z")


@dataclass(frozen=True)
class PullHead:
    """Where a pull request's head points, as GitHub reports it."""

    sha: str
    repo: str | None  # owner/name of the head repository (None if it was deleted)
    ref: str
    base_ref: str = ""  # the branch the PR targets


def connect(token: str, *, base_url: str = DEFAULT_API_URL, throttle: bool = True) -> Github:
    """A PyGithub client. *throttle* keeps PyGithub's pauses between requests (GitHub asks for them to
    avoid secondary rate limits); tests against a local fake turn them off."""
    if not token:
        raise APBError(Problem("GITHUB_TOKEN", "no GitHub token; set GITHUB_TOKEN (the workflow passes "
                                               "${{ github.token }})"))
    retry = Retry(total=3, connect=3, read=0, status=2, backoff_factor=1, status_forcelist=(502, 503, 504),
                  allowed_methods=frozenset({"GET"}), respect_retry_after_header=False, raise_on_status=False)
    if throttle:
        return Github(auth=Auth.Token(token), base_url=base_url.rstrip("/"), retry=retry)
    return Github(auth=Auth.Token(token), base_url=base_url.rstrip("/"), retry=retry,
                  seconds_between_requests=None, seconds_between_writes=None)


def explain(error: Exception, action: str) -> APBError:
    """An ``APBError`` that says what GitHub refused and what to do about it."""
    status = getattr(error, "status", None)
    headers = getattr(error, "headers", None) or {}
    data = getattr(error, "data", None)
    message = data.get("message") if isinstance(data, dict) else None
    detail = f": {message}" if message else ""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    if isinstance(error, RateLimitExceededException) or status == 429 or (
            status == 403 and lowered.get("x-ratelimit-remaining") == "0"):
        reset = lowered.get("x-ratelimit-reset")
        when = (dt.datetime.fromtimestamp(int(reset), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                if reset and str(reset).isdigit() else "in a while")
        text = f"GitHub rate limit exceeded while {action}{detail}; it resets {when}: re-run the job after that"
    elif status == 403:
        text = (f"GitHub refused (403) {action}{detail}. The token lacks a permission: the report job needs "
                "`pull-requests: write` and `checks: write`, and the repository must let workflows write "
                "(Settings > Actions > General > Workflow permissions)")
    elif status == 404:
        text = (f"GitHub found nothing (404) while {action}{detail}. Check the repository name, PR number and "
                "commit; a token without access to the repository also gets 404")
    elif status == 401:
        text = f"GitHub rejected the token (401) while {action}{detail}; pass a valid GITHUB_TOKEN"
    elif isinstance(error, GithubException):
        text = f"GitHub answered {status} while {action}{detail}"
    else:
        text = f"could not reach GitHub while {action}: {error}"
    return APBError(Problem("github", text))


@contextlib.contextmanager
def github_errors(action: str) -> Iterator[None]:
    """Turn PyGithub and connection errors inside the block into an explained ``APBError``."""
    try:
        yield
    except (GithubException, RequestException) as error:
        raise explain(error, action) from None


def get_repo(gh, full_name: str):
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", full_name or ""):
        raise APBError(Problem("github", f"repository {full_name!r} is not of the form owner/name"))
    with github_errors(f"reading repository {full_name}"):
        return gh.get_repo(full_name)


def pull_head(repo, pr_number: int) -> PullHead:
    """The current head of pull request *pr_number*."""
    with github_errors(f"reading pull request #{pr_number}"):
        pull = repo.get_pull(pr_number)
        head = pull.head
        return PullHead(head.sha, head.repo.full_name if head.repo else None, head.ref, pull.base.ref)


def find_comment(repo, pr_number: int, *, marker: str, bot_login: str | None = None):
    """The oldest comment on the PR that starts with *marker* and was written by the bot, or None.

    A comment by anybody else is never returned, whatever its text (someone quoting the bot's comment, or
    imitating it, must not get their comment overwritten nor be mistaken for the bot's)."""
    login = bot_login or DEFAULT_BOT_LOGIN
    with github_errors(f"listing the comments of pull request #{pr_number}"):
        for comment in repo.get_issue(pr_number).get_comments():
            if comment.user is not None and comment.user.login == login and (comment.body or "").startswith(marker):
                return comment
    return None


def upsert_comment(repo, pr_number: int, body: str, *, marker: str, bot_login: str | None = None) -> tuple[int, bool]:
    """Edit the bot's comment that carries *marker*, or create it; returns ``(comment_id, created)``."""
    if not body.startswith(marker):
        raise ValueError("the comment body must start with its marker, or it could never be found again")
    if len(body) > MAX_COMMENT_CHARS:
        raise APBError(Problem("github", f"comment body has {len(body):,} characters, over GitHub's "
                                         f"{MAX_COMMENT_CHARS:,}; shorten the report"))
    existing = find_comment(repo, pr_number, marker=marker, bot_login=bot_login)
    if existing is not None:
        if existing.body != body:
            with github_errors(f"editing comment {existing.id} on pull request #{pr_number}"):
                existing.edit(body)
        return existing.id, False
    with github_errors(f"commenting on pull request #{pr_number}"):
        created = repo.get_issue(pr_number).create_comment(body)
    return created.id, True


def upsert_check_run(repo, head_sha: str, name: str, conclusion: str, summary: str, *, title: str | None = None,
                     app_slug: str | None = DEFAULT_APP_SLUG) -> tuple[int, bool]:
    """Complete the check run *name* on *head_sha* with *conclusion* and *summary*, updating the one this app
    made before (a check run of another app with the same name is left alone); returns ``(id, created)``."""
    if conclusion not in CONCLUSIONS:
        raise ValueError(f"conclusion {conclusion!r} is not one of {', '.join(CONCLUSIONS)}")
    if not _SHA.match(head_sha):
        raise APBError(Problem("github", f"head sha {head_sha!r} is not 40 lower-case hex digits"))
    output = {"title": (title or name)[:1000], "summary": clip(summary, MAX_CHECK_SUMMARY_CHARS)}
    with github_errors(f"listing check runs of {head_sha[:12]}"):
        mine = [run for run in repo.get_commit(head_sha).get_check_runs(check_name=name)
                if app_slug is None or (run.app is not None and run.app.slug == app_slug)]
    if mine:
        run = mine[0]
        with github_errors(f"updating check run {name!r} on {head_sha[:12]}"):
            run.edit(status="completed", conclusion=conclusion, output=output)
        return run.id, False
    with github_errors(f"creating check run {name!r} on {head_sha[:12]}"):
        run = repo.create_check_run(name=name, head_sha=head_sha, status="completed", conclusion=conclusion,
                                    output=output)
    return run.id, True


def clip(text: str, limit: int) -> str:
    """*text* cut to *limit* characters, with a note where it was cut."""
    if len(text) <= limit:
        return text
    note = "\n\n_(cut to fit GitHub's size limit)_\n"
    return text[: limit - len(note)] + note


def publish_report(repo, pr_number: int, head_sha: str, body: str, *, head_repo: str | None = None,
                   head_ref: str | None = None, bot_login: str | None = None) -> str:
    """Post a report made by ``apb ci report``: the sticky comment and the check run of its kind, on the PR
    whose head is still *head_sha* (and *head_repo* / *head_ref* when given). Returns what was done.

    Nothing is written when the PR has moved on (the results are stale, or the PR number came from an
    untrusted source and names another PR). A validation report does not replace an evaluation report of the
    same commit (the evaluation report already holds the validation)."""
    meta = read_meta(body)
    if not meta or meta.get("kind") not in CHECK_NAMES or meta.get("head_sha") != head_sha:
        raise APBError(Problem("report", f"the report is not an `apb ci report` body for commit {head_sha}"))
    head = pull_head(repo, pr_number)
    if meta["kind"] == "evaluation" and head.base_ref != repo.default_branch:
        # pull_request_target ran the *base* branch's evaluate.yml: only the default branch's is trusted
        return (f"not posted: pull request #{pr_number} targets {head.base_ref!r}, not the default branch "
                f"{repo.default_branch!r}; only the default branch's evaluate workflow is reported")
    if head.sha != head_sha or (head_repo and head.repo != head_repo) or (head_ref and head.ref != head_ref):
        return (f"not posted: pull request #{pr_number} is at {head.sha[:12]} of {head.repo}:{head.ref}, "
                f"not {head_sha[:12]}{f' of {head_repo}' if head_repo else ''}{f':{head_ref}' if head_ref else ''}")
    done = []
    existing = find_comment(repo, pr_number, marker=REPORT_MARKER, bot_login=bot_login)
    old = read_meta(existing.body) if existing is not None else None
    if meta["kind"] == "validation" and old and old.get("kind") == "evaluation" and old.get("head_sha") == head_sha:
        done.append(f"kept the evaluation report of {head_sha[:12]} in comment {existing.id}")
    else:
        comment_id, created = upsert_comment(repo, pr_number, body, marker=REPORT_MARKER, bot_login=bot_login)
        done.append(f"{'created' if created else 'updated'} comment {comment_id}")
    run_id, created = upsert_check_run(repo, head_sha, CHECK_NAMES[meta["kind"]], meta["conclusion"], body,
                                       title=meta.get("title"))
    done.append(f"{'created' if created else 'updated'} check run {run_id} ({meta['conclusion']})")
    return f"pull request #{pr_number}: " + "; ".join(done)

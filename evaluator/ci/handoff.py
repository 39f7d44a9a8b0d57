"""``apb ci handoff``: what main lacks, taken from the PRs' approved evaluations, and the rest batched for main.

Since 2026-06-26 a ``pull_request_target`` run gets a read-only cache token for the default branch's scope, so
the evaluate workflow cannot hand its results to the leaderboard workflow through the cache. They go through
the evaluate run's artifacts instead, read with ``actions: read`` only:

1. for each entry main lacks a record of (``apb ci plan --missing``), the commit on main's first-parent chain
   that brought the entry's current pin (the newest commit whose manifest has the entry as it is now while its
   first parent had it otherwise or not at all: ``pinning_commit``). Walking main's own history, rather than
   trusting a PR number from an event or a title, finds the PR whatever the merge method (merge, squash or
   rebase commits are all on that chain) and also after later, unrelated merges;
2. the pull request merged into the default branch with that commit (``GET /commits/{sha}/pulls``);
3. the completed runs of this repository's ``.github/workflows/evaluate.yml`` under ``pull_request_target``
   whose title (set by that file's ``run-name``) names the PR, those of its merged head sha first (a run has
   an ``apb-plan`` artifact only if a maintainer's label approved it);
4. the run's ``apb-plan`` artifact: the plan the base branch's code made, which must be for the commit the
   title names and list
   legs whose result keys (``Leg.cache_key``: protocol, evaluator version, model key, checkpoint sha256,
   loading fields, shard) are exactly those main asks for now;
5. the leg artifacts ``apb-leg-<leg>`` of that run, downloaded by run id, unpacked under
   ``artifacts.unzip_artifact``'s rules and accepted by the one acceptance rule (``collect.accept_model``).

Everything without a usable result (no PR, a PR never labelled, expired artifacts, another checkpoint,
protocol or evaluator version, a failed leg) is evaluated on main by the leaderboard workflow's own GPU legs,
at most ``GPU_BATCH`` legs per run (whole models only); the rest is carried over to the next run. A failed API
call fails the step: nothing is sent to the GPUs on a guess.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from evaluator.ci.artifacts import load_checked_json, unzip_artifact
from evaluator.ci.collect import LEG_PREFIX, accept_model, legs_by_model
from evaluator.ci.plan import (EMPTY_TREE, MAX_LEGS, evaluation_fields, evaluator_version, git, manifest_entries,
                               parse_manifest_blob, read_blob)
from evaluator.errors import APBError, Problem
from evaluator.repository.manifest import ModelEntry
from evaluator.paths import MANIFEST, SUBMISSIONS

HANDOFF_FORMAT = "apb-ci-handoff/1"
EVALUATE_WORKFLOW = ".github/workflows/evaluate.yml"
EVALUATE_EVENT = "pull_request_target"
PLAN_ARTIFACT = "apb-plan"
PLAN_FILE = "plan.json"
# The hand-off is one job that downloads through the API, not a matrix: every one of GitHub's MAX_LEGS matrix
# jobs of a run goes to the GPU legs. GPU_BATCH = MAX_LEGS - 0 hand-off matrix jobs.
HANDOFF_MATRIX_JOBS = 0
GPU_BATCH = MAX_LEGS - HANDOFF_MATRIX_JOBS


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_sha: str
    created: str  # YYYY-MM-DD: no evaluate run of the PR is older


@dataclass(frozen=True)
class Run:
    id: int
    head_sha: str  # the PR commit the run evaluated (its title; the plan must say the same)


class Actions:
    """The read-only GitHub calls of the hand-off (a token with ``actions: read`` and ``contents: read``)."""

    def __init__(self, repo, token: str, *, timeout: float = 120.0) -> None:
        self.repo = repo
        self.token = token
        self.timeout = timeout

    def merged_pull(self, commit: str) -> PullRequest | None:
        """The pull request merged into the default branch with *commit*, or None (a direct push)."""
        from evaluator.ci.github import github_errors

        with github_errors(f"listing the pull requests of commit {commit[:12]}"):
            default = self.repo.default_branch
            pulls = [p for p in self.repo.get_commit(commit).get_pulls()
                     if p.merged_at is not None and p.base.ref == default
                     and p.base.repo is not None and p.base.repo.full_name == self.repo.full_name]
            pulls.sort(key=lambda p: p.merge_commit_sha != commit)  # the PR merged *as* this commit first
            return (PullRequest(pulls[0].number, pulls[0].head.sha, pulls[0].created_at.strftime("%Y-%m-%d"))
                    if pulls else None)

    def evaluate_runs(self, pull: PullRequest) -> list[Run]:
        """This repository's completed ``evaluate.yml`` runs under ``pull_request_target`` for PR *pull*: the runs
        of its merged head first, then those of its earlier commits, newest first.

        A ``pull_request_target`` run's ``head_sha`` is the base branch's commit, not the PR's, so the PR and the
        evaluated commit come from the run's title, which evaluate.yml's ``run-name`` (the base branch's file,
        checked here by path and event) sets to ``APB PR #<n> @ <sha>``; the plan it recorded must name the same
        commit (``Finder.plan_of``)."""
        from evaluator.ci.github import github_errors
        from evaluator.ci.report_input import RUN_TITLE

        with github_errors(f"listing the evaluate runs of PR #{pull.number}"):
            workflow = self.repo.get_workflow(EVALUATE_WORKFLOW.rsplit("/", 1)[1])
            runs = []
            for run in workflow.get_runs(event=EVALUATE_EVENT, status="completed", created=f">={pull.created}"):
                title = RUN_TITLE.match(run.display_title or "")
                if (title and int(title[1]) == pull.number and run.path == EVALUATE_WORKFLOW
                        and run.event == EVALUATE_EVENT and run.status == "completed"
                        and run.repository.full_name == self.repo.full_name):
                    runs.append(Run(run.id, title[2]))
        return sorted(runs, key=lambda run: (run.head_sha != pull.head_sha, -run.id))

    def artifacts(self, run_id: int) -> dict[str, dict]:
        """The artifacts of run *run_id* by name (the newest of a name): ``{"id", "expired", "url"}``."""
        from evaluator.ci.github import github_errors

        with github_errors(f"listing the artifacts of run {run_id}"):
            found: dict[str, dict] = {}
            for artifact in sorted(self.repo.get_workflow_run(run_id).get_artifacts(), key=lambda a: a.id):
                found[artifact.name] = {"id": artifact.id, "expired": bool(artifact.expired),
                                        "url": artifact.archive_download_url}
        return found

    def download(self, artifact: dict) -> bytes | None:
        """An artifact's zip, or None when GitHub says it expired (410). GitHub answers with a redirect to a
        short-lived storage URL, which is fetched without the token."""
        import requests

        from evaluator.ci.artifacts import MAX_ZIP_BYTES

        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json"}
        try:
            answer = requests.get(artifact["url"], headers=headers, allow_redirects=False, timeout=self.timeout)
            if answer.status_code == 410:
                return None
            if answer.status_code in (301, 302, 303, 307, 308) and answer.headers.get("Location"):
                answer = requests.get(answer.headers["Location"], stream=True, timeout=self.timeout)
                data = answer.raw.read(MAX_ZIP_BYTES + 1, decode_content=True) if answer.ok else b""
            else:
                data = answer.content[:MAX_ZIP_BYTES + 1]
        except requests.RequestException as error:
            raise APBError(Problem("github", f"could not download artifact {artifact['id']}: {error}")) from None
        if answer.status_code != 200:
            raise APBError(Problem("github", f"GitHub answered {answer.status_code} to the download of artifact "
                                             f"{artifact['id']}; re-run the job"))
        return data


@dataclass
class HandOff:
    """What one leaderboard run does with the entries main lacks."""

    plan: dict  # the plan of this run: handed-off legs + the GPU batch (what collect checks)
    handed_off: list[dict] = field(default_factory=list)  # plan["handoff"]
    evaluate: list[dict] = field(default_factory=list)  # the GPU legs of this run (the matrix)
    remaining: list[str] = field(default_factory=list)  # model keys carried over to the next run
    unusable: list[dict] = field(default_factory=list)  # {"model_key", "reason"}: why it is evaluated on main

    def matrix(self) -> dict:
        return {"include": self.evaluate}

    def to_dict(self) -> dict:
        return {"format": HANDOFF_FORMAT, "handed_off": self.handed_off,
                "evaluate": sorted({leg["model_key"] for leg in self.evaluate}), "evaluate_legs": len(self.evaluate),
                "remaining": self.remaining, "unusable": self.unusable}

    def summary(self) -> str:
        """The run summary: how many were handed off, evaluated here and carried over, and why."""
        models = len({leg["model_key"] for leg in self.evaluate})
        lines = ["### Records main lacks", "",
                 f"- handed off from approved PR evaluations: {len(self.handed_off)}",
                 f"- evaluated on main in this run: {models} model(s) in {len(self.evaluate)} GPU leg(s) "
                 f"(at most {GPU_BATCH} per run)",
                 f"- remaining, carried over to the next run: {len(self.remaining)}"]
        if self.unusable:
            lines += ["", "No usable PR result (evaluated on main, in this run or a later one):", ""]
            lines += [f"- `{item['model_key']}`: {item['reason']}" for item in self.unusable[:100]]
            if len(self.unusable) > 100:
                lines.append(f"- … and {len(self.unusable) - 100} more")
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ git


class History:
    """Main's manifests at past commits, each parsed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._parsed: dict[tuple[str, str], dict[str, ModelEntry]] = {}

    def entries_at(self, commit: str, path: str) -> dict[str, ModelEntry]:
        if (commit, path) not in self._parsed:
            try:
                self._parsed[commit, path] = parse_manifest_blob(path, read_blob(self.root, commit, path))
            except APBError:  # a manifest that did not load then held no usable pin
                self._parsed[commit, path] = {}
        return self._parsed[commit, path]

    def pinning_commit(self, entry: ModelEntry) -> str | None:
        """The newest commit of HEAD's first-parent chain whose manifest has *entry* as it is now (same
        checkpoint, URL and loading fields) while its first parent had it otherwise or not at all."""
        path = f"{SUBMISSIONS}/{entry.ap_key}/{MANIFEST}"
        wanted = evaluation_fields(entry)
        commits = git(self.root, "log", "--first-parent", "--format=%H %P", "HEAD", "--", path).decode().splitlines()
        for line in commits:
            commit, *parents = line.split()
            now = self.entries_at(commit, path).get(entry.model_key)
            if now is None or evaluation_fields(now) != wanted:
                continue
            before = self.entries_at(parents[0] if parents else EMPTY_TREE, path).get(entry.model_key)
            if before is None or evaluation_fields(before) != wanted:
                return commit
        return None


# ------------------------------------------------------------------------------------------------ hand-off


class Finder:
    """Finds and stages the PR result of one model at a time; remembers what it read from GitHub."""

    def __init__(self, root: Path, actions: Actions, handoff_dir: Path, protocol: str) -> None:
        self.history = History(root)
        self.actions = actions
        self.handoff_dir = handoff_dir
        self.protocol = protocol
        self._pulls: dict[str, PullRequest | None] = {}
        self._runs: dict[int, list[Run]] = {}
        self._artifacts: dict[int, dict[str, dict]] = {}
        self._plans: dict[int, dict | str] = {}

    def pull(self, commit: str) -> PullRequest | None:
        if commit not in self._pulls:
            self._pulls[commit] = self.actions.merged_pull(commit)
        return self._pulls[commit]

    def runs(self, pull: PullRequest) -> list[Run]:
        if pull.number not in self._runs:
            self._runs[pull.number] = self.actions.evaluate_runs(pull)
        return self._runs[pull.number]

    def artifacts(self, run_id: int) -> dict[str, dict]:
        if run_id not in self._artifacts:
            self._artifacts[run_id] = self.actions.artifacts(run_id)
        return self._artifacts[run_id]

    def _unzip(self, run_id: int, name: str, into: Path) -> str | None:
        """Download artifact *name* of run *run_id* into *into*; the reason it cannot be used, or None."""
        artifact = self.artifacts(run_id).get(name)
        if artifact is None:
            return f"run {run_id} has no artifact {name}"
        data = None if artifact["expired"] else self.actions.download(artifact)
        if data is None:
            return f"artifact {name} of run {run_id} has expired"
        problems = unzip_artifact(data, into)
        return f"artifact {name} of run {run_id}: {problems[0].message}" if problems else None

    def plan_of(self, run: Run) -> dict | str:
        """The plan recorded by run *run* (checked against its schema and the run's head), or why not."""
        if run.id not in self._plans:
            with tempfile.TemporaryDirectory(prefix="apb-handoff-plan-") as scratch:
                reason = self._unzip(run.id, PLAN_ARTIFACT, Path(scratch))
                plan: dict | str = reason or ""
                if reason is None:
                    try:
                        read: dict = load_checked_json(Path(scratch) / PLAN_FILE, "plan.schema.json")
                    except APBError as error:
                        plan = f"the plan of run {run.id} is not valid: {error.problems[0].message}"
                    else:
                        plan = read if read.get("head") == run.head_sha else \
                            f"the plan of run {run.id} is for {read.get('head')}, not the run's head"
            self._plans[run.id] = plan
        return self._plans[run.id]

    def stage(self, legs: list[dict], run: Run) -> str | None:
        """Stage *legs* (one model's) from run *run* into the hand-off folder and accept them; the reason they
        are not usable, or None."""
        plan = self.plan_of(run)
        if isinstance(plan, str):
            return plan
        if plan.get("evaluator_version", evaluator_version()) != evaluator_version():
            return f"run {run.id} ran evaluator {plan.get('evaluator_version')}, main's is {evaluator_version()}"
        theirs = sorted(leg["cache_key"] for leg in plan["include"] if leg["model_key"] == legs[0]["model_key"])
        if not theirs:
            return f"run {run.id} did not evaluate it"
        if theirs != sorted(leg["cache_key"] for leg in legs):
            return (f"run {run.id} evaluated another checkpoint, protocol, evaluator version, loading or sharding "
                    f"than main pins now")
        for leg in legs:
            name = f"{LEG_PREFIX}{leg['leg']}"
            reason = self._unzip(run.id, name, self.handoff_dir / name)
            if reason:
                return reason
        try:
            accept_model(legs, self.handoff_dir, self.protocol)
        except APBError as error:
            return f"the result of run {run.id}: {error.problems[0].message}"[:500]
        return None

    def find(self, entry: ModelEntry, legs: list[dict]) -> tuple[dict | None, str]:
        """``(handoff item, "")`` when a PR's result of *entry* is staged, else ``(None, reason)``."""
        commit = self.history.pinning_commit(entry)
        if commit is None:
            return None, "no commit of main's first-parent history brought its current pin"
        pull = self.pull(commit)
        if pull is None:
            return None, f"commit {commit[:12]} was not merged from a pull request"
        runs = self.runs(pull)
        if not runs:
            return None, f"PR #{pull.number} has no completed evaluate run (never labelled apb:evaluate?)"
        reasons = []
        for run in runs:
            reason = self.stage(legs, run)
            if reason is None:
                return {"model_key": entry.model_key, "run_id": run.id, "pull": pull.number,
                        "head_sha": run.head_sha}, ""
            self.discard(legs)
            reasons.append(reason)
        return None, f"PR #{pull.number}: " + "; ".join(reasons)[:800]

    def discard(self, legs: list[dict]) -> None:
        for leg in legs:
            shutil.rmtree(self.handoff_dir / f"{LEG_PREFIX}{leg['leg']}", ignore_errors=True)


def hand_off(root: Path, missing: dict, actions: Actions, handoff_dir: Path, *, batch: int = GPU_BATCH) -> HandOff:
    """Split the plan *missing* (``apb ci plan --missing``) into the models handed off from PR runs (staged in
    *handoff_dir*, one ``apb-leg-<leg>/`` per leg, as collect reads them), a GPU batch of at most *batch* legs
    (whole models, in plan order) and the models carried over to the next run."""
    if not 1 <= batch <= MAX_LEGS:
        raise APBError(Problem("--batch", f"{batch} legs: a matrix holds 1 to {MAX_LEGS} jobs", field="batch"))
    handoff_dir.mkdir(parents=True, exist_ok=True)
    entries = {entry.model_key: entry for entry in manifest_entries(root)[0]}
    finders: dict[str, Finder] = {}
    result = HandOff(plan={})
    from_pr: list[dict] = []
    for (model_key, protocol), legs in legs_by_model(missing).items():
        entry = entries.get(model_key)
        finder = finders.setdefault(protocol, Finder(root, actions, handoff_dir, protocol))
        item, reason = finder.find(entry, legs) if entry is not None else (None, "not in main's manifests")
        if item is not None:
            result.handed_off.append(item)
            from_pr.extend(legs)
            continue
        result.unusable.append({"model_key": model_key, "reason": reason})
        if len(result.evaluate) + len(legs) <= batch and not result.remaining:
            result.evaluate.extend(legs)
        else:
            result.remaining.append(model_key)
    plan = copy.deepcopy(missing)
    plan.update(include=from_pr + result.evaluate, handoff=result.handed_off, evaluate=bool(result.evaluate),
                evaluator_version=evaluator_version(),
                reason=(f"{len(result.handed_off)} handed off from PR evaluations, "
                        f"{len({leg['model_key'] for leg in result.evaluate})} evaluated on main, "
                        f"{len(result.remaining)} carried over to the next run"))
    result.plan = plan
    return result

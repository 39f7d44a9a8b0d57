"""What one ``apb ci report`` is made of: the downloaded workflow artifacts of one PR commit, read as untrusted
data (schema-checked; a plan made for another commit, or a refused file, is left out with a problem)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from evaluator.ci.artifacts import Expected, accept_record, load_checked_json
from evaluator.ci.collect import RECORDS, read_collected
from evaluator.errors import APBError, Problem
from evaluator.record.records import record_stem
from evaluator.record.types import Record

KINDS = ("validation", "evaluation")
RUN_TITLE = re.compile(r"^APB PR #([0-9]{1,9}) @ ([0-9a-f]{40})\Z")
_SHA = re.compile(r"^[0-9a-f]{40}\Z")


@dataclass
class ReportInput:
    """Everything one report is made of (each part may be missing)."""

    kind: str  # validation | evaluation
    head_sha: str
    validation: dict | None = None
    plan: dict | None = None
    collected: dict | None = None
    records: dict[str, Record] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # artifact files that were refused
    run_url: str | None = None
    run_conclusion: str | None = None  # what GitHub says of the run (trusted, unlike its artifacts)
    published: dict = field(default_factory=dict)  # leaderboard cell -> {model key: published AA} (evaluator.ci.cell)


def parse_run_title(title: str) -> tuple[int, str]:
    """``APB PR #12 @ <sha>`` (the run-name the workflows set) -> ``(12, sha)``."""
    match = RUN_TITLE.match(title or "")
    if not match:
        raise APBError(Problem("run title", f"{title!r} is not of the form 'APB PR #<number> @ <40-hex sha>'"))
    return int(match[1]), match[2]


def _load(what: str, loader, problems: list[Problem]):
    try:
        return loader()
    except APBError as error:
        problems.extend(Problem(p.file, f"{what} not used: {p.message}", p.line, p.field) for p in error.problems)
        return None


def load_report_input(kind: str, head_sha: str, artifacts: Path, *, run_url: str | None = None,
                      run_conclusion: str | None = None, root: Path | None = None) -> ReportInput:
    """Read the downloaded artifacts of a validate run (``apb-validation/``) or an evaluate run (``apb-plan/``,
    ``apb-records/``) under *artifacts*, as untrusted data. A plan made for another commit than *head_sha*
    (the one the label approved) is not used."""
    if kind not in KINDS:
        raise APBError(Problem("apb ci report", f"kind must be one of {', '.join(KINDS)}", field="kind"))
    if run_conclusion is not None and not re.fullmatch(r"[a-z_]{1,40}", run_conclusion):
        raise APBError(Problem("apb ci report", f"{run_conclusion!r} is not a run conclusion", field="run-conclusion"))
    if not _SHA.match(head_sha):
        raise APBError(Problem("apb ci report", f"{head_sha!r} is not a 40-hex commit sha", field="head-sha"))
    if run_url is not None and not re.fullmatch(r"https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~/-]*)?", run_url):
        raise APBError(Problem("apb ci report", f"{run_url!r} is not a plain https URL", field="run-url"))
    found = ReportInput(kind, head_sha, run_url=run_url, run_conclusion=run_conclusion)
    if root is not None:
        from evaluator.ci.cell import published_numbers

        found.published = published_numbers(root)
    folder = artifacts / ("apb-validation" if kind == "validation" else "apb-plan")
    if (folder / "validation.json").exists():
        found.validation = _load("validation output", lambda: load_checked_json(
            folder / "validation.json", "validation.schema.json"), found.problems)
    if kind == "validation":
        return found
    if (artifacts / "apb-plan" / "plan.json").exists():
        found.plan = _load("plan", lambda: load_checked_json(artifacts / "apb-plan" / "plan.json",
                                                             "plan.schema.json"), found.problems)
    if found.plan is not None and found.plan.get("head") != head_sha:
        found.problems.append(Problem("apb-plan/plan.json", f"plan not used: it was made for commit "
                                                            f"{found.plan.get('head')}, not {head_sha}"))
        found.plan = None
    records_dir = artifacts / "apb-records"
    if found.plan is not None and (records_dir / "collect.json").exists():
        found.collected = _load("collect.json", lambda: read_collected(records_dir), found.problems)
    if found.plan is not None and found.collected is not None:
        expected = {leg["model_key"]: Expected(leg["model_key"], leg["sha256"], leg["protocol"])
                    for leg in found.plan["include"]}
        for model_key, wanted in expected.items():
            path = records_dir / RECORDS / f"{record_stem(model_key, wanted.protocol)}.json"
            if path.exists():
                accepted = _load(f"record of {model_key}", lambda: accept_record(path, wanted), found.problems)
                if accepted is not None:
                    found.records[model_key] = accepted.record
    return found

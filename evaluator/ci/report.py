"""``apb ci report``: the workflow artifacts of one PR commit -> the Markdown of the sticky bot comment.

The comment starts with ``REPORT_MARKER`` (how the bot finds its own comment again) and a hidden meta line
(kind, commit, conclusion, title) that ``apb ci publish`` reads. Per model it shows the compliance check,
measured vs claimed sparsity, clean / AutoAttack / HO-FMN / worst-case accuracy with 95% intervals and the
difference to the author's claims, the record's flags and the wall time, one short section per model so it
reads on a phone. Every text that comes from an artifact is escaped (no Markdown, HTML or @mentions get
through). The comment stays under ``MAX_REPORT_CHARS``: sections that do not fit are replaced by a note.
"""
from __future__ import annotations

import json

from evaluator.ci.report_input import ReportInput
from evaluator.untrusted.markdown_text import code_span as code
from evaluator.untrusted.markdown_text import fenced, inline
from evaluator.record.records import metric_label, metrics_in
from evaluator.record.types import Record

REPORT_MARKER = "<!-- apb-bot:report -->"
META_PREFIX = "<!-- apb-bot:meta "
META_SUFFIX = " -->"
MAX_REPORT_CHARS = 60_000  # GitHub's limit is 65,536 (comments) / 65,535 (check summaries); keep a margin
CHECK_NAMES = {"validation": "APB validation", "evaluation": "APB evaluation"}
EVALUATE_LABEL = "apb:evaluate"
MAX_PROBLEMS_SHOWN = 50
METRIC_ROWS = tuple((metric_label(metric, "short"), metric) for metric in metrics_in("bot"))  # (label, metric) rows
ICONS = {"ok": "✅", "flagged": "⚠️", "failed": "❌"}


# ------------------------------------------------------------------------------------------------ escaping


def esc(text: object, limit: int = 1000) -> str:
    """Inline text from an artifact, made inert (:func:`evaluator.untrusted.markdown_text.inline`): no Markdown, HTML,
    links, bare-URL autolinks, @mentions, #references or bidi reordering; one line."""
    return inline(text, limit)


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def duration(seconds: float | None) -> str:
    """``3 min 12 s``, ``1 h 02 min``."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# ------------------------------------------------------------------------------------------------ verdicts


def claim_of(report: ReportInput, model_key: str, metric: str) -> float | None:
    """The author's claimed value of *metric* (percent) for a model, from the manifest via the plan."""
    model = ((report.plan or {}).get("models") or {}).get(model_key) or {}
    value = (model.get("claimed") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def claim_outside(record: Record, metric: str, claimed: float | None) -> bool:
    """True when a claim lies outside the measured 95% interval."""
    interval = (record.get("intervals") or {}).get(metric)
    if claimed is None or not interval:
        return False
    return not interval[0] <= claimed <= interval[1]


def model_status(report: ReportInput, model_key: str) -> str:
    """ok, flagged or failed."""
    record = report.records.get(model_key)
    if record is None:
        return "failed"
    check = record.get("check")
    if isinstance(check, dict) and check.get("ok") is False:
        return "failed"
    claims_off = any(claim_outside(record, metric, claim_of(report, model_key, metric)) for _, metric in METRIC_ROWS)
    return "flagged" if record.get("flags") or claims_off or check_warnings(record) else "ok"


def check_warnings(record: Record) -> list[str]:
    """The check's findings that did not fail it (a clean accuracy far below the claim, randomized outputs)."""
    check = record.get("check")
    warnings = check.get("warnings") if isinstance(check, dict) else None
    return [str(item) for item in warnings if isinstance(item, str)] if isinstance(warnings, list) else []


def failure_reason(missing: dict | None) -> str:
    """Why a model has no record, in one line: the failed check's lines from its log, else the collect reason."""
    log = (missing or {}).get("log") or ""
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("result") and "FAILED" in line:
            failures = [item.strip() for item in lines[index + 1:] if item.startswith("    ")]
            if failures:
                return "check failed: " + "; ".join(failures)
    for line in lines:
        if line.startswith("compliance") and "FAILED" in line:
            return "check failed: " + line.split("FAILED:", 1)[-1].strip()
    return str((missing or {}).get("reason") or "the evaluation produced no record (see the run's log)")


def headline_reason(report: ReportInput, model_key: str, missing: dict | None) -> str:
    """The short reason shown next to a model's name: why it failed, or what is flagged; '' when ok."""
    record = report.records.get(model_key)
    if record is None:
        if report.validation is not None and not report.validation.get("ok"):
            return "not evaluated: the submission does not validate"
        return failure_reason(missing)
    check = record.get("check")
    if isinstance(check, dict) and check.get("ok") is False:
        return "check failed: " + "; ".join(str(item) for item in check.get("failures") or [])
    reasons = [f"claimed {label} outside the 95% interval" for label, metric in METRIC_ROWS
               if claim_outside(record, metric, claim_of(report, model_key, metric))]
    reasons += [str(flag.get("code")) for flag in record.get("flags") or [] if isinstance(flag, dict)]
    reasons += [warning.split(":", 1)[0] + " far below the claim" for warning in check_warnings(record)
                if warning.startswith("clean accuracy")]
    return "; ".join(dict.fromkeys(reasons))


def planned_models(report: ReportInput) -> list[str]:
    seen: dict[str, None] = {}
    for leg in (report.plan or {}).get("include", []):
        seen.setdefault(leg["model_key"], None)
    return list(seen)


def conclusion_and_title(report: ReportInput) -> tuple[str, str]:
    """The check-run conclusion and a one-line title."""
    validation_ok = bool(report.validation and report.validation.get("ok"))
    n_problems = len((report.validation or {}).get("problems", []))
    validation_title = ("validation passed" if validation_ok else "validation output missing"
                        if report.validation is None else f"validation: {n_problems} problem(s)")
    if report.kind == "validation":
        if report.run_conclusion not in (None, "success"):
            return "failure", f"the validate workflow ended in {report.run_conclusion}" + (
                " (after `apb validate` passed: generated files or tests)" if validation_ok else f"; {validation_title}")
        return ("success" if validation_ok else "failure"), validation_title
    if report.plan is None:
        return "failure", "no evaluation plan: the evaluate run produced none"
    statuses = [model_status(report, key) for key in planned_models(report)]
    counts = {name: statuses.count(name) for name in ICONS}
    if not statuses:
        title = "no evaluation" if report.plan["blocked_files"] else "nothing to evaluate"
        failed = not validation_ok or bool(report.plan["problems"])
        return ("failure" if failed else "neutral"), (validation_title if failed else title)
    title = f"{len(statuses)} model(s): {counts['ok']} ok, {counts['flagged']} flagged, {counts['failed']} failed"
    failed = bool(counts["failed"] or not validation_ok or report.plan["problems"])
    return ("failure" if failed else "success"), title if validation_ok else f"{title}; {validation_title}"


# ------------------------------------------------------------------------------------------------ sections


def meta_line(report: ReportInput, conclusion: str, title: str) -> str:
    meta = {"kind": report.kind, "head_sha": report.head_sha, "conclusion": conclusion, "title": title}
    return META_PREFIX + json.dumps(meta, separators=(",", ":")).replace("--", "- -") + META_SUFFIX


def read_meta(body: str) -> dict | None:
    """The meta of a report body (None if it has none or it is not ours)."""
    for line in body.splitlines()[:3]:
        if line.startswith(META_PREFIX) and line.endswith(META_SUFFIX):
            try:
                meta = json.loads(line[len(META_PREFIX):-len(META_SUFFIX)])
            except ValueError:
                return None
            return meta if isinstance(meta, dict) else None
    return None


def validation_section(report: ReportInput) -> list[str]:
    """One block for the verdict, one per problem shown."""
    if report.validation is None:
        return ["#### ❌ Validation\nNo validation output was found; see the workflow run's log."]
    problems = report.validation.get("problems", [])
    if report.validation.get("ok") and not problems:
        return ["#### ✅ Validation\n`apb validate` found no problem."]
    blocks = [f"#### ❌ Validation\n`apb validate` found {len(problems)} problem(s); fix them and push again:"]
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        where = problem["file"] + (f":{problem['line']}" if problem.get("line") else "")
        field_text = f" {code(problem['field'])}" if problem.get("field") else ""
        blocks.append(f"- {code(where)}{field_text}: {esc(problem['message'])}")
    if len(problems) > MAX_PROBLEMS_SHOWN:
        blocks.append(f"- … and {len(problems) - MAX_PROBLEMS_SHOWN} more: run `apb validate` locally for all")
    return blocks


def plan_section(report: ReportInput) -> list[str]:
    plan = report.plan
    if plan is None:
        return []
    blocks = []
    if plan["blocked_files"]:
        shown = ", ".join(code(p) for p in plan["blocked_files"][:20])
        more = f" and {len(plan['blocked_files']) - 20} more" if len(plan["blocked_files"]) > 20 else ""
        blocks.append(f"#### ⏸️ No evaluation\nThis PR changes files besides `submissions/<ap>/manifest.yaml` and "
                      f"`taxonomy.json`: {shown}{more}. The evaluator only runs on pure submission changes; a "
                      "maintainer reviews the rest as code.")
    for problem in plan["problems"][:MAX_PROBLEMS_SHOWN]:
        where = problem["file"] + (f":{problem['line']}" if problem.get("line") else "")
        blocks.append(f"- ❌ {code(where)}: {esc(problem['message'])}")
    if not plan["blocked_files"] and not plan["include"] and not plan["problems"]:
        blocks.append(f"#### Nothing to evaluate\n{esc(plan['reason'])}.")
    return blocks


def sparsity_text(record: Record) -> str:
    sparsity = ((record.get("check") or {}).get("sparsity")) or {}
    measured = sparsity.get("measured")
    if not isinstance(measured, (int, float)):
        return f"sparsity: not measured (claimed {record.get('sparsity')}%)"
    claimed = sparsity.get("claimed", record.get("sparsity"))
    icon = "✅" if sparsity.get("ok", True) else "❌"
    structure = esc(sparsity.get("structure", ""), 20)
    shown = f"{claimed:g}" if isinstance(claimed, (int, float)) and not isinstance(claimed, bool) else esc(claimed, 20)
    return f"{structure} sparsity {measured:.2f}% (claimed {shown}%) {icon}".strip()


def compliance_text(record: Record) -> str:
    check = record.get("check")
    if not isinstance(check, dict):
        return "check: not recorded"
    compliance = check.get("compliance") or {}
    ok = compliance.get("ok", check.get("ok"))
    return "compliance ✅" if ok else "compliance ❌" if ok is False else "compliance: not recorded"


def metrics_table(report: ReportInput, model_key: str, record: Record) -> str:
    rows = ["| | measured [95% CI] | claimed | Δ |", "|:--|--:|--:|--:|"]
    for label, metric in METRIC_ROWS:
        value = (record.get("metrics") or {}).get(metric)
        interval = (record.get("intervals") or {}).get(metric)
        measured = number(value) + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
        claimed = claim_of(report, model_key, metric)
        delta = "" if claimed is None or value is None else f"{value - claimed:+.2f}"
        if delta and claim_outside(record, metric, claimed):
            delta += " ⚠️"
        rows.append(f"| {label} | {measured} | {number(claimed) if claimed is not None else '—'} | {delta} |")
    return "\n".join(rows)


def model_section(report: ReportInput, model_key: str, missing: dict | None) -> str:
    status = model_status(report, model_key)
    reason = headline_reason(report, model_key, missing)
    head = f"#### {ICONS[status]} {code(model_key)}" + (f" — {esc(reason, 300)}" if reason else "")
    record = report.records.get(model_key)
    if record is None:
        if report.validation is not None and not report.validation.get("ok"):
            return f"{head}\nNot evaluated: the submission does not validate; fix the problems above first."
        why = esc(missing["reason"], 2000) if missing else "the evaluation produced no record (see the run's log)"
        text = f"{head}\nNo record: {why}"
        if missing and missing.get("log"):
            text += f"\n<details><summary>last lines of the log</summary>\n\n{fenced(missing['log'])}\n\n</details>"
        return text
    wall = ((record.get("provenance") or {}).get("wall_time_s") or {}).get("total")
    facts = " · ".join([compliance_text(record), sparsity_text(record), f"{record.get('n_samples'):,} samples",
                        duration(wall if isinstance(wall, (int, float)) else None)])
    lines = [head, facts, "", metrics_table(report, model_key, record)]
    notes = [f"- ⚠️ {code(flag['code'])}: {esc(flag['message'])}" for flag in record.get("flags") or []]
    claims_off = [label for label, metric in METRIC_ROWS
                  if claim_outside(record, metric, claim_of(report, model_key, metric))]
    if claims_off:
        notes.append(f"- ⚠️ claimed {' and '.join(claims_off)} accuracy outside the measured 95% interval")
    notes += [f"- ⚠️ {esc(warning)}" for warning in check_warnings(record)]
    from evaluator.ci.cell import cell_line

    measured_aa = (record.get("metrics") or {}).get("aa_robust_accuracy")
    cell = cell_line(model_key, record.get("protocol"), measured_aa if isinstance(measured_aa, (int, float)) else None,
                     report.published)
    if cell:
        notes.append(f"- 📊 {esc(cell)}")
    return "\n".join(lines + ([""] + notes if notes else []))


def ownership_section(report: ReportInput) -> list[str]:
    """Which already submitted APs this PR changes although its author is not among their ``authors``."""
    notes = (report.plan or {}).get("ownership") or []
    if not notes:
        return []
    author = (report.plan or {}).get("pr_author")
    by = f"by {code(author)} " if author else ""
    lines = [f"#### 👥 Changes to APs submitted by others\nThis PR {by}changes the data of APs that are already "
             "on the benchmark; check with their authors before approving:"]
    for note in notes[:MAX_PROBLEMS_SHOWN]:
        authors = ", ".join(code(a) for a in note["authors"]) or "none listed (the taxonomy entry has no `authors`)"
        files = ", ".join(code(f) for f in note["files"][:5])
        lines.append(f"- {code(note['ap_key'])}: {files}; authors: {authors}")
    return ["\n".join(lines)]


def skipped_section(report: ReportInput) -> list[str]:
    skipped = (report.plan or {}).get("skipped", [])
    if not skipped:
        return []
    return ["#### ⏭️ Not evaluated"] + [f"- {code(item['model_key'])}: {esc(item['reason'])}" for item in skipped]


def changes_section(report: ReportInput) -> list[str]:
    entries = (report.plan or {}).get("entries")
    if not entries or not any(entries.values()):
        return []
    lines = ["<details><summary>Manifest entries in this PR</summary>", ""]
    for name in ("added", "changed", "removed", "untouched"):
        if entries.get(name):
            lines.append(f"- {name}: " + ", ".join(code(key) for key in entries[name][:100])
                         + (f" and {len(entries[name]) - 100} more" if len(entries[name]) > 100 else ""))
    lines += ["", "</details>"]
    return ["\n".join(lines)]


def refused_section(report: ReportInput) -> list[str]:
    if not report.problems:
        return []
    return ["#### ⚠️ Artifact files not used"] + [f"- {code(p.file, 120)}: {esc(p.message)}"
                                                 for p in report.problems[:MAX_PROBLEMS_SHOWN]]


# ------------------------------------------------------------------------------------------------ assembly


def render_report(report: ReportInput, *, limit: int = MAX_REPORT_CHARS) -> str:
    """The comment body; always under *limit* characters."""
    conclusion, title = conclusion_and_title(report)
    what = "validation" if report.kind == "validation" else "evaluation"
    run = f" · [workflow run]({report.run_url})" if report.run_url else ""
    protocol = f" under protocol {code((report.plan or {}).get('protocol'))}" if report.plan else ""
    header = "\n".join([REPORT_MARKER, meta_line(report, conclusion, title), "",
                        f"### APB {what} of {code(report.head_sha[:12])}{protocol}",
                        f"**{headline_icon(report, conclusion)} {esc(title)}**{run}"])
    blocks = validation_section(report)
    if report.kind == "validation":
        blocks.append(f"Evaluation on the GPU runner starts when a maintainer adds the label `{EVALUATE_LABEL}` "
                      "(again after every push); its results replace this comment.")
    else:
        blocks.append(f"Evaluated commit: {code(report.head_sha)}, the commit the label `{EVALUATE_LABEL}` "
                      "approved. A push removes the label: a new commit is evaluated only when a maintainer adds "
                      "it again.")
        missing = {item["model_key"]: item for item in (report.collected or {}).get("missing", [])}
        blocks = blocks[:-1] + summary_section(report, missing) + blocks[-1:]
        blocks += ownership_section(report) + plan_section(report)
        blocks += [model_section(report, key, missing.get(key)) for key in planned_models(report)]
        blocks += skipped_section(report) + changes_section(report)
    blocks += refused_section(report)
    footer = (f"<sub>One comment per PR, edited in place on every run; these results are for commit "
              f"{code(report.head_sha)}.</sub>")
    return assemble(header, blocks, footer, limit)


def headline_icon(report: ReportInput, conclusion: str) -> str:
    """❌ for a failed run, ⚠️ when it passed but a model is flagged or outside its claims, ✅ otherwise."""
    if conclusion not in ("success", "neutral"):
        return ICONS["failed"]
    if report.kind == "evaluation" and any(model_status(report, key) == "flagged" for key in planned_models(report)):
        return ICONS["flagged"]
    return ICONS["ok"]


def summary_section(report: ReportInput, missing: dict[str, dict]) -> list[str]:
    """One row per model: status, its numbers, and why it is flagged or failed."""
    keys = planned_models(report)
    if not keys:
        return []
    columns = metrics_in("bot_summary")  # metrics.yaml's views.bot_summary
    rows = ["| | model | " + "".join(f"{metric_label(metric, 'short')} | " for metric in columns) + "sparsity | note |",
            "|:--|:--|" + "--:|" * len(columns) + "--:|:--|"]
    for key in keys:
        record = report.records.get(key)
        metrics: dict[str, float | None] = record["metrics"] if record else {}
        measured = (((record["check"] if record else None) or {}).get("sparsity") or {}).get("measured")
        sparsity = f"{measured:.2f}" if isinstance(measured, (int, float)) else "—"
        numbers = "".join(f"{number(metrics.get(metric))} | " for metric in columns)
        rows.append(f"| {ICONS[model_status(report, key)]} | {code(key)} | {numbers}"
                    f"{sparsity} | {esc(headline_reason(report, key, missing.get(key)), 160)} |")
    return ["\n".join(rows)]


def assemble(header: str, blocks: list[str], footer: str, limit: int) -> str:
    """Header, as many blocks as fit under *limit*, a note on what was left out, footer."""
    parts, used = [header], len(header) + len(footer) + 4
    reserve = 200
    for index, block in enumerate(blocks):
        if used + len(block) + 2 > limit - reserve:
            left = len(blocks) - index
            parts.append(f"_… {left} more section(s) not shown: a comment is limited to 65,536 characters. "
                         "The full results are in the workflow run's artifacts._")
            break
        parts.append(block)
        used += len(block) + 2
    parts.append(footer)
    return "\n\n".join(parts) + "\n"

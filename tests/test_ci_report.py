"""``apb ci collect`` / ``ingest`` / ``report``: untrusted leg artifacts -> checked records -> the PR comment."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from evaluator.ci.artifacts import CI_SCHEMAS, schema_problems
from evaluator.ci.collect import collect, ingest
from evaluator.ci.report import MAX_REPORT_CHARS, REPORT_MARKER, conclusion_and_title, read_meta, render_report
from evaluator.ci.report_input import ReportInput, load_report_input, parse_run_title
from evaluator.cli import main
from evaluator.errors import APBError
from evaluator.protocol import load_protocol
from tests.support.ci_records import (PROTOCOL, evaluated_record, manifest_text, model, per_sample, sha,
                                      write_evaluated, write_shard_outputs)

AP = "HYDRA_Sehwag2020Hydra"
HEAD = "d" * 40
R18_90, R18_95, V16_90 = (f"{AP}_R18_CIFAR10_US_90", f"{AP}_R18_CIFAR10_US_95", f"{AP}_V16_CIFAR10_US_90")


def leg(model_key: str, checkpoint: str, shard: str | None = None, protocol: str = PROTOCOL) -> dict:
    name = model_key if shard is None else f"{model_key}-shard-{shard.replace('/', '-of-')}"
    return {"model_key": model_key, "ap_key": AP, "sha256": sha(checkpoint), "protocol": protocol, "shard": shard,
            "cache_key": f"apb-{protocol}-{name}", "leg": name}


def plan_dict(legs: list[dict], *, protocol: str = PROTOCOL, skipped: list | None = None, blocked: list | None = None,
              claims: dict | None = None) -> dict:
    keys = list(dict.fromkeys(item["model_key"] for item in legs))
    return {"format": "apb-ci-plan/1", "protocol": protocol, "base": "b" * 40, "head": HEAD, "merge_base": "b" * 40,
            "evaluate": bool(legs), "reason": "planned", "changed_files": [f"submissions/{AP}/manifest.yaml"],
            "blocked_files": blocked or [],
            "entries": {"added": keys, "changed": [], "removed": [], "untouched": []},
            "models": {k: {"ap_key": AP, "sha256": next(i["sha256"] for i in legs if i["model_key"] == k),
                           "url": "https://example.org/x.pt", "sparsity": 90, "claimed": (claims or {}).get(k)}
                       for k in keys},
            "include": legs, "skipped": skipped or [], "problems": []}


def leg_dir(legs_dir: Path, item: dict) -> Path:
    """Where download-artifact (without merge-multiple) puts a leg's output: ``apb-leg-<leg>/`` inside the folder
    of the artifact ``apb-leg-<leg>``."""
    folder = legs_dir / f"apb-leg-{item['leg']}" / f"apb-leg-{item['leg']}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------------------------------------ collect


def test_collect_accepts_a_leg_record_byte_for_byte(tmp_path):
    item = leg(R18_90, "1")
    source = write_evaluated(leg_dir(tmp_path / "legs", item), R18_90, sha("1"))
    result = collect(plan_dict([item]), tmp_path / "legs", tmp_path / "out")
    assert result.records == [source.name] and result.missing == []
    assert (tmp_path / "out" / "records" / source.name).read_bytes() == source.read_bytes()
    npz = source.with_suffix(".npz")
    assert (tmp_path / "out" / "records" / npz.name).read_bytes() == npz.read_bytes()
    written = json.loads((tmp_path / "out" / "collect.json").read_text())
    assert schema_problems(written, CI_SCHEMAS / "collect.schema.json", "collect.json") == []


def test_a_legs_artifact_cannot_supply_another_legs_result(tmp_path):
    """Issue 19: one result per leg. The artifact of leg A holds a valid record of model B in a folder named
    after B's leg; B's own artifact is missing. B is missing, A is accepted."""
    a, b = leg(R18_90, "1"), leg(R18_95, "2")
    write_evaluated(leg_dir(tmp_path / "legs", a), R18_90, sha("1"))
    smuggled = tmp_path / "legs" / f"apb-leg-{a['leg']}" / f"apb-leg-{b['leg']}"
    smuggled.mkdir()
    write_evaluated(smuggled, R18_95, sha("2"))
    (tmp_path / "legs" / f"apb-leg-{b['leg']}").mkdir()  # the artifact folder of B, without B's output
    write_evaluated(tmp_path / "legs" / f"apb-leg-{b['leg']}", R18_95, sha("2"))  # ... or at its top level
    result = collect(plan_dict([a, b]), tmp_path / "legs", tmp_path / "out")
    assert result.records == [f"{R18_90}__{PROTOCOL}.json"]
    assert [item["model_key"] for item in result.missing] == [R18_95]


def test_collect_merges_the_shards_of_a_big_model(tmp_path):
    legs = [leg(V16_90, "3", f"{i}/3", protocol="smoke-v1") for i in (1, 2, 3)]
    for item, folder in zip(legs, write_shard_outputs(tmp_path / "shards", V16_90, sha("3"), 3)):
        shutil.copytree(folder, leg_dir(tmp_path / "legs", item) / folder.name)
    result = collect(plan_dict(legs, protocol="smoke-v1"), tmp_path / "legs", tmp_path / "out")
    assert result.missing == [] and result.records == [f"{V16_90}__smoke-v1.json"]
    record = json.loads((tmp_path / "out" / "records" / result.records[0]).read_text())
    assert record["n_samples"] == load_protocol("smoke-v1").n_samples and record["checkpoint_sha256"] == sha("3")


def test_collect_reports_a_missing_shard_and_a_failed_leg_with_its_log(tmp_path):
    legs = [leg(V16_90, "3", f"{i}/2", protocol="smoke-v1") for i in (1, 2)] + [leg(R18_90, "1", protocol="smoke-v1")]
    first, _ = write_shard_outputs(tmp_path / "shards", V16_90, sha("3"), 2)
    shutil.copytree(first, leg_dir(tmp_path / "legs", legs[0]) / first.name)
    log = "fetch ok\n 10%|#   \r100%|####|\ncompliance  FAILED: the state dict does not load\x1b[0m\n"
    (leg_dir(tmp_path / "legs", legs[2]) / "evaluate.log").write_text(log)
    result = collect(plan_dict(legs, protocol="smoke-v1"), tmp_path / "legs", tmp_path / "out")
    assert result.records == []
    by_key = {item["model_key"]: item for item in result.missing}
    assert "no output from shard 2/2" in by_key[V16_90]["reason"]
    assert by_key[R18_90]["reason"] == "no output from its leg: the evaluation failed or was cancelled"
    assert by_key[R18_90]["log"] == "fetch ok\n100%|####|\ncompliance  FAILED: the state dict does not load[0m"


@pytest.mark.parametrize("tamper, reason", [
    ("symlink", "symbolic link"),
    ("other checkpoint", "the plan asked for"),
    ("sidecar", "sha256 differs"),
    ("schema", "is greater than the maximum of 100"),
    ("huge", "larger than"),
    ("odd name", "not a plain name"),
    ("200 samples", "but protocol linf-8-255-v1 evaluates 10000"),
    ("edited numbers", "the sidecar's per-sample results give"),
    ("robust above clean", "robust accuracy cannot exceed clean accuracy"),
])
def test_collect_refuses_tampered_leg_outputs(tmp_path, tamper, reason):
    """Every record is held to `apb validate`'s acceptance rule (issue 10, point 3), not only to the schema."""
    item = leg(R18_90, "1")
    folder = leg_dir(tmp_path / "legs", item)
    source = write_evaluated(folder, R18_90, sha("2" if tamper == "other checkpoint" else "1"),
                             n=200 if tamper == "200 samples" else None)
    if tamper == "symlink":
        (folder / "extra.json").symlink_to("/etc/passwd")
    elif tamper == "sidecar":
        source.with_suffix(".npz").write_bytes(b"not the sidecar")
    elif tamper == "schema":
        record = json.loads(source.read_text())
        record["metrics"]["clean_accuracy"] = 180.0
        source.write_text(json.dumps(record))
    elif tamper == "huge":
        source.write_text(" " * 1_100_000 + "{}")
    elif tamper == "odd name":
        (folder / ".hidden").write_text("x")
    elif tamper in ("edited numbers", "robust above clean"):  # counts, metrics and intervals agree; the sidecar not
        record = json.loads(source.read_text())
        n, counts = record["n_samples"], record["counts"]
        if tamper == "edited numbers":
            counts["aa_robust"] += 500
        else:
            record["metrics"]["hofmn_robust_accuracy"] = record["metrics"]["clean_accuracy"] + 1
        for metric, name in (("aa_robust_accuracy", "aa_robust"), ("worst_case_robust_accuracy", "worst_case_robust")):
            record["metrics"][metric] = round(100.0 * counts[name] / n, 4)
            record["intervals"][metric] = [record["metrics"][metric] - 1, record["metrics"][metric] + 1]
        source.write_text(json.dumps(record))
    result = collect(plan_dict([item]), tmp_path / "legs", tmp_path / "out")
    assert result.records == [] and reason in result.missing[0]["reason"]
    assert not (tmp_path / "out" / "records").exists()


def test_ingest_copies_checked_records_into_submissions(tmp_path):
    root = tmp_path / "repo"
    (root / "submissions" / AP).mkdir(parents=True)
    (root / "submissions" / AP / "manifest.yaml").write_text(manifest_text(AP, [model("resnet18", 90, "1"),
                                                                              model("resnet18", 95, "7")]))
    legs = [leg(R18_90, "1"), leg(R18_95, "2")]  # the second entry's checkpoint changed since
    for item, checkpoint in zip(legs, "12"):
        write_evaluated(leg_dir(tmp_path / "legs", item), item["model_key"], sha(checkpoint))
    collect(plan_dict(legs), tmp_path / "legs", tmp_path / "collected")
    written = ingest(plan_dict(legs), tmp_path / "collected", root)
    records = root / "submissions" / AP / "records"
    assert written == [records / f"{R18_90}__{PROTOCOL}.json"]
    assert sorted(p.name for p in records.iterdir()) == [f"{R18_90}__{PROTOCOL}.json", f"{R18_90}__{PROTOCOL}.npz"]


# ------------------------------------------------------------------------------------------------ report


@pytest.fixture
def evaluation_artifacts(tmp_path) -> Path:
    """The artifacts of an evaluate run: plan (three models, one skipped), validation, collected records."""
    legs = [leg(R18_90, "1"), leg(R18_95, "2"), leg(V16_90, "3")]
    skipped = [{"model_key": f"{AP}_V16_CIFAR10_US_95", "sha256": None,
                "reason": "no sha256: it cannot be evaluated; run `apb lock` to pin one"}]
    claims = {R18_90: {"clean_accuracy": 80.0, "aa_robust_accuracy": 47.0}, R18_95: {"aa_robust_accuracy": 60.0}}
    plan = plan_dict(legs, skipped=skipped, claims=claims)
    artifacts = tmp_path / "artifacts"
    (artifacts / "apb-plan").mkdir(parents=True)
    (artifacts / "apb-plan" / "plan.json").write_text(json.dumps(plan))
    (artifacts / "apb-plan" / "validation.json").write_text(json.dumps({"ok": True, "problems": [], "summary": {}}))
    write_evaluated(leg_dir(tmp_path / "legs", legs[0]), R18_90, sha("1"))
    write_evaluated(leg_dir(tmp_path / "legs", legs[1]), R18_95, sha("2"), seed=1,
                    flags=[{"code": "hofmn-weaker-than-aa", "message": "AutoAttack broke 3.00% more <b>@team</b>"}])
    (leg_dir(tmp_path / "legs", legs[2]) / "evaluate.log").write_text("compliance  FAILED: ```oops```\n")
    collect(plan, tmp_path / "legs", artifacts / "apb-records")
    return artifacts


def test_the_evaluation_report_shows_each_model(evaluation_artifacts):
    report = load_report_input("evaluation", HEAD, evaluation_artifacts,
                               run_url="https://github.com/apb-org/benchmark/actions/runs/42")
    assert report.problems == [] and sorted(report.records) == [R18_90, R18_95]
    body = render_report(report)
    assert body.splitlines()[0] == REPORT_MARKER
    assert read_meta(body) == {"kind": "evaluation", "head_sha": HEAD, "conclusion": "failure",
                               "title": "3 model(s): 1 ok, 1 flagged, 1 failed"}
    record = report.records[R18_90]
    clean, (lo, hi) = record["metrics"]["clean_accuracy"], record["intervals"]["clean_accuracy"]
    assert f"| clean | {clean:.2f} [{lo:.2f}, {hi:.2f}] | 80.00 | {clean - 80.0:+.2f} |" in body
    assert f"#### ✅ `{R18_90}`" in body and f"#### ⚠️ `{R18_95}`" in body and f"#### ❌ `{V16_90}`" in body
    assert "compliance ✅ · weights sparsity 90.02% (claimed 90%) ✅ · 10,000 samples · 1 h 02 min" in body
    assert "claimed AA accuracy outside the measured 95% interval" in body  # 60.0 claimed for R18_95
    assert "&lt;b&gt;@\u200bteam&lt;/b&gt;" in body and "<b>" not in body
    assert "No record:" in body and "````text\ncompliance  FAILED: ```oops```\n````" in body
    assert "no sha256: it cannot be evaluated; run \\`apb lock\\` to pin one" in body
    assert "[workflow run](https://github.com/apb-org/benchmark/actions/runs/42)" in body
    assert "✅ Validation" in body


def test_a_tampered_record_in_the_artifact_is_dropped_and_named(evaluation_artifacts):
    path = evaluation_artifacts / "apb-records" / "records" / f"{R18_90}__{PROTOCOL}.json"
    record = json.loads(path.read_text())
    record["metrics"]["aa_robust_accuracy"] = 99.0
    record["checkpoint_sha256"] = sha("f")
    path.write_text(json.dumps(record))
    report = load_report_input("evaluation", HEAD, evaluation_artifacts)
    assert R18_90 not in report.records
    body = render_report(report)
    assert "Artifact files not used" in body and "do not edit their numbers" in body
    assert f"#### ❌ `{R18_90}`" in body


def test_a_record_without_check_summary_still_reports(tmp_path):
    samples = per_sample()
    record = evaluated_record(R18_90, sha("1"), samples, check=None)
    report = ReportInput("evaluation", HEAD, validation={"ok": True, "problems": []},
                         plan=plan_dict([leg(R18_90, "1")]), records={R18_90: record})
    body = render_report(report)
    assert "check: not recorded · sparsity: not measured (claimed 90%)" in body
    assert conclusion_and_title(report) == ("success", "1 model(s): 1 ok, 0 flagged, 0 failed")


def test_the_validation_report_lists_problems_inertly(tmp_path):
    problems = [{"file": "submissions/X_Y2020Z/manifest.yaml", "line": 12, "field": "models[0].url",
                 "message": "bad URL [click](javascript:alert(1)) <img src=x onerror=alert(1)> @maintainers #1"}]
    folder = tmp_path / "apb-validation"
    folder.mkdir()
    (folder / "validation.json").write_text(json.dumps({"ok": False, "problems": problems}))
    body = render_report(load_report_input("validation", HEAD, tmp_path))
    assert read_meta(body)["conclusion"] == "failure"
    line = next(line for line in body.splitlines() if "manifest.yaml:12" in line)
    assert line.startswith("- `submissions/X_Y2020Z/manifest.yaml:12` `models[0].url`: bad URL")
    assert "\\[click\\]\\(javascript:alert\\(1\\)\\)" in line and "&lt;img" in line and "<img" not in line
    assert "@\u200bmaintainers \\#1" in line
    assert "apb:evaluate" in body


def test_validation_output_missing_or_malformed_fails_clearly(tmp_path):
    assert conclusion_and_title(load_report_input("validation", HEAD, tmp_path)) == (
        "failure", "validation output missing")
    (tmp_path / "apb-validation").mkdir()
    (tmp_path / "apb-validation" / "validation.json").write_text('{"ok": "yes", "problems": []}')
    report = load_report_input("validation", HEAD, tmp_path)
    assert report.validation is None and "validation output not used" in report.problems[0].message
    assert "Artifact files not used" in render_report(report)


def test_models_of_a_submission_that_does_not_validate_are_not_evaluated():
    problem = {"file": f"submissions/{AP}/taxonomy.json", "line": 1, "field": "method", "message": "missing"}
    report = ReportInput("evaluation", HEAD, validation={"ok": False, "problems": [problem]},
                         plan=plan_dict([leg(R18_90, "1")]), collected={"missing": []})
    body = render_report(report)
    assert conclusion_and_title(report)[0] == "failure"
    assert (f"#### ❌ `{R18_90}` — not evaluated: the submission does not validate\nNot evaluated: the submission "
            "does not validate") in body


def test_a_change_with_code_is_reported_as_no_evaluation():
    plan = plan_dict([], blocked=["evaluator/run/evaluate.py", ".github/workflows/evaluate.yml"])
    report = ReportInput("evaluation", HEAD, validation={"ok": True, "problems": []}, plan=plan)
    body = render_report(report)
    assert conclusion_and_title(report) == ("neutral", "no evaluation")
    assert "⏸️ No evaluation" in body and "`evaluator/run/evaluate.py`, `.github/workflows/evaluate.yml`" in body


def test_the_report_stays_under_githubs_limit():
    legs = [leg(f"{AP}_R18_CIFAR10_US_{i:02d}", "1") for i in range(99)] * 3
    long_flag = [{"code": "hofmn-weaker-than-aa", "message": "x" * 1000}] * 50
    records = {item["model_key"]: evaluated_record(item["model_key"], sha("1"), per_sample(), flags=long_flag)
               for item in legs}
    problems = [{"file": f"f{i}", "line": i, "field": "x", "message": "m" * 4000} for i in range(500)]
    report = ReportInput("evaluation", HEAD, validation={"ok": False, "problems": problems},
                         plan=plan_dict(legs), records=records)
    body = render_report(report)
    assert len(body) <= MAX_REPORT_CHARS < 65_536
    assert re.search(r"_… \d+ more section\(s\) not shown", body)
    assert body.rstrip().endswith(f"`{HEAD}`.</sub>") and "and 450 more" in body


def test_run_titles():
    assert parse_run_title(f"APB PR #12 @ {HEAD}") == (12, HEAD)
    for bad in (f"APB PR #12 @ {HEAD} ", "APB PR #x @ abc", f"Evil PR #12 @ {HEAD}", ""):
        with pytest.raises(APBError, match="is not of the form"):
            parse_run_title(bad)


def test_report_command_writes_the_comment(evaluation_artifacts, tmp_path, capsys):
    out = tmp_path / "report.md"
    assert main(["ci", "report", "--kind", "evaluation", "--run-title", f"APB PR #3 @ {HEAD}",
                 "--artifacts", str(evaluation_artifacts), "--out", str(out)]) == 0
    assert read_meta(out.read_text())["head_sha"] == HEAD
    assert "failure: 3 model(s)" in capsys.readouterr().err


def test_report_command_refuses_a_run_url_that_is_not_plain_https(evaluation_artifacts, tmp_path, capsys):
    assert main(["ci", "report", "--kind", "evaluation", "--head-sha", HEAD, "--artifacts", str(evaluation_artifacts),
                 "--run-url", "javascript:alert(1)", "--out", str(tmp_path / "r.md")]) == 1
    assert "not a plain https URL" in capsys.readouterr().err


def test_the_sample_comment_in_contributing_is_what_the_report_code_makes():
    from tests.support.sample_report import quoted, sample_report

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    shown = re.search(r"<!-- sample-report:start[^\n]*-->\n(.*?)<!-- sample-report:end -->", text, re.S)
    assert shown, "CONTRIBUTING.md lost its sample-report markers"
    assert shown[1] == quoted(sample_report()), "regenerate it: python -m tests.support.sample_report"


def test_a_pr_from_plan_to_comment_through_the_commands(tmp_path, monkeypatch, capsys):
    """The workflow's steps chained as the YAML chains them: plan -> (legs) -> collect -> report -> publish."""
    from tests.support.fake_github import FakeGitHub
    from tests.test_ci_plan import branch, commit, git

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.org")
    git(repo, "config", "user.name", "test")
    commit(repo, {f"submissions/{AP}/taxonomy.json": "{}\n", "evaluator/__init__.py": ""}, "base")
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest_text(AP, [
        model("resnet18", 90, "1", claimed={"clean_accuracy": 80.0}), model("vgg16", 90, "3")])})
    plan_path, artifacts = tmp_path / "apb-plan" / "plan.json", tmp_path / "artifacts"
    assert main(["ci", "plan", "--base", "main", "--head", head, "--root", str(repo), "--protocol", PROTOCOL,
                 "--shards", "vgg16=2", "--out", str(plan_path)]) == 0
    plan = json.loads(plan_path.read_text())
    legs = tmp_path / "legs"
    for item in plan["include"]:  # what the GPU legs upload; the VGG16 shard 2/2 failed
        folder = leg_dir(legs, item)
        if item["shard"] is None:
            write_evaluated(folder, item["model_key"], item["sha256"])
    shutil.copytree(tmp_path / "apb-plan", artifacts / "apb-plan")
    (artifacts / "apb-plan" / "validation.json").write_text('{"ok": true, "problems": []}')
    assert main(["ci", "collect", "--plan", str(plan_path), "--legs", str(legs),
                 "--out", str(artifacts / "apb-records")]) == 0
    title = f"APB PR #5 @ {head}"
    report = tmp_path / "report.md"
    assert main(["ci", "report", "--kind", "evaluation", "--run-title", title, "--artifacts", str(artifacts),
                 "--out", str(report)]) == 0
    body = report.read_text()
    assert f"#### ✅ `{R18_90}`" in body and f"#### ❌ `{V16_90}`" in body and "no output from shard 1/2" in body
    with FakeGitHub() as fake:
        fake.add_pull(5, head)
        monkeypatch.setenv("GITHUB_TOKEN", "t")
        monkeypatch.setenv("GITHUB_API_URL", fake.base_url)
        assert main(["ci", "publish", "--body", str(report), "--run-title", title, "--repo", fake.full_name]) == 0
        (comment,) = fake.comments_on(5)
        assert comment["body"] == body
        (run,) = fake.state.check_runs.values()
        assert (run["name"], run["conclusion"], run["head_sha"]) == ("APB evaluation", "failure", head)


def test_the_summary_table_s_columns_are_metrics_yaml_s_bot_summary_view(monkeypatch):
    """The summary's metric columns come from metrics.yaml (views.bot_summary), in display order, with their short
    labels: a metric shown there gains its column with no edit to the report code."""
    from evaluator.ci import report as report_module
    from evaluator.ci.report_input import ReportInput
    from evaluator.record import records

    plan = {"include": [{"model_key": "X_Doe2020Xx_R18_CIFAR10_US_90", "protocol": "linf-8-255-v1"}]}
    header = report_module.summary_section(ReportInput("evaluation", "0" * 40, plan=plan), {})[0].splitlines()[0]
    assert header == "| | model | clean | AA | worst case | sparsity | note |"
    table = dict(records.METRIC_TABLE)
    row = table["hofmn_robust_accuracy"]
    table["hofmn_robust_accuracy"] = records.Metric(row.name, row.count, row.rule, row.array, row.worst_case,
                                                    row.labels, {**row.views, "bot_summary": True})
    monkeypatch.setattr(records, "METRIC_TABLE", table)
    header = report_module.summary_section(ReportInput("evaluation", "0" * 40, plan=plan), {})[0].splitlines()[0]
    assert header == "| | model | clean | AA | HO-FMN | worst case | sparsity | note |"

"""The PyGithub client of the report workflow, over real HTTP against a local fake GitHub."""
from __future__ import annotations

import pytest

from evaluator.ci.github import connect, get_repo, publish_report, upsert_check_run, upsert_comment
from evaluator.ci.report import REPORT_MARKER, read_meta, render_report
from evaluator.ci.report_input import ReportInput
from evaluator.cli import main
from evaluator.errors import APBError
from tests.support.fake_github import BOT_LOGIN, FakeGitHub

SHA = "a" * 40
OTHER_SHA = "c" * 40
PR = 7


@pytest.fixture
def fake():
    with FakeGitHub() as server:
        server.add_pull(PR, SHA, head_repo="alice/benchmark", head_ref="add-ap")
        yield server


@pytest.fixture
def repo(fake):
    return get_repo(connect("test-token", base_url=fake.base_url, throttle=False), fake.full_name)


def body(text: str = "first") -> str:
    return f"{REPORT_MARKER}\n{text}\n"


def report_body(kind: str, ok: bool = True, sha: str = SHA) -> str:
    validation = {"ok": ok, "problems": [] if ok else [{"file": "submissions/X/manifest.yaml", "line": 3,
                                                         "field": "models[0].url", "message": "bad"}]}
    plan = None if kind == "validation" else {
        "format": "apb-ci-plan/1", "protocol": "linf-8-255-v1", "evaluate": False, "reason": "nothing to evaluate",
        "changed_files": [], "blocked_files": [],
        "entries": {k: [] for k in ("added", "changed", "removed", "untouched")},
        "models": {}, "include": [], "skipped": [], "problems": []}
    return render_report(ReportInput(kind, sha, validation=validation, plan=plan))


def test_first_run_creates_the_comment_and_the_second_edits_it(fake, repo):
    first_id, created = upsert_comment(repo, PR, body("first"), marker=REPORT_MARKER)
    assert created
    second_id, created_again = upsert_comment(repo, PR, body("second"), marker=REPORT_MARKER)
    assert (second_id, created_again) == (first_id, False)
    comments = fake.comments_on(PR)
    assert [c["body"] for c in comments] == [body("second")]
    assert comments[0]["login"] == BOT_LOGIN
    assert [(r.method, r.path.rsplit("/", 2)[-2:]) for r in fake.writes()] == [
        ("POST", ["7", "comments"]), ("PATCH", ["comments", str(first_id)])]
    assert all(r.authorization == "token test-token" for r in fake.requests)


def test_an_identical_body_is_not_written_again(fake, repo):
    upsert_comment(repo, PR, body(), marker=REPORT_MARKER)
    upsert_comment(repo, PR, body(), marker=REPORT_MARKER)
    assert len(fake.writes()) == 1


def test_a_comment_by_someone_else_with_the_marker_is_left_alone(fake, repo):
    imitation = fake.add_comment(PR, body("I am not the bot"), login="mallory")
    quoted = fake.add_comment(PR, "> " + body("quoting the bot"), login="reviewer")
    other_bot = fake.add_comment(PR, "a different bot comment without the marker", login=BOT_LOGIN, user_type="Bot")
    comment_id, created = upsert_comment(repo, PR, body("results"), marker=REPORT_MARKER)
    assert created and comment_id not in (imitation, quoted, other_bot)
    by_id = {c["id"]: c["body"] for c in fake.comments_on(PR)}
    assert by_id[imitation] == body("I am not the bot")
    assert by_id[quoted] == "> " + body("quoting the bot")
    assert by_id[other_bot] == "a different bot comment without the marker"
    assert [r.method for r in fake.writes()] == ["POST"]


def test_the_bot_comment_is_found_on_a_later_page(fake, repo):
    for index in range(45):
        fake.add_comment(PR, f"discussion {index}", login="someone")
    bot_comment = fake.add_comment(PR, body("old"), login=BOT_LOGIN, user_type="Bot")  # 46th: on page 2 of 30
    assert upsert_comment(repo, PR, body("new"), marker=REPORT_MARKER) == (bot_comment, False)
    pages = [r.query.get("page", ["1"])[0] for r in fake.requests if r.path.endswith(f"/issues/{PR}/comments")]
    assert pages == ["1", "2"]
    assert len(fake.comments_on(PR)) == 46


def test_check_run_is_created_then_updated_and_another_apps_run_is_left_alone(fake, repo):
    foreign = fake.add_check_run(SHA, "APB evaluation", app_slug="some-other-app", conclusion="failure")
    run_id, created = upsert_check_run(repo, SHA, "APB evaluation", "neutral", "summary one")
    assert created and run_id != foreign
    again, created_again = upsert_check_run(repo, SHA, "APB evaluation", "success", "summary two",
                                            title="3 models ok")
    assert (again, created_again) == (run_id, False)
    ours = fake.state.check_runs[run_id]
    assert ours["conclusion"] == "success" and ours["status"] == "completed"
    assert ours["output"] == {"title": "3 models ok", "summary": "summary two"}
    assert fake.state.check_runs[foreign]["conclusion"] == "failure"


def test_a_long_check_summary_is_cut_to_githubs_limit(fake, repo):
    run_id, _ = upsert_check_run(repo, SHA, "APB validation", "failure", "x" * 70_000)
    summary = fake.state.check_runs[run_id]["output"]["summary"]
    assert len(summary) <= 65_535 and summary.endswith("_(cut to fit GitHub's size limit)_\n")


@pytest.mark.parametrize("kind, expected", [
    ("403", ["403", "pull-requests: write", "checks: write"]),
    ("404", ["404", "PR number"]),
    ("rate-limit", ["rate limit exceeded", "resets", "UTC"]),
    ("secondary-rate-limit", ["rate limit exceeded", "re-run the job"]),
])
def test_refusals_give_clear_errors(fake, repo, kind, expected):
    fake.fail("POST", r"/issues/\d+/comments$", kind)
    with pytest.raises(APBError) as caught:
        upsert_comment(repo, PR, body(), marker=REPORT_MARKER)
    message = str(caught.value)
    assert "commenting on pull request #7" in message
    for text in expected:
        assert text in message
    assert fake.comments_on(PR) == []


def test_an_unknown_repository_is_a_clear_error(fake):
    gh = connect("test-token", base_url=fake.base_url, throttle=False)
    with pytest.raises(APBError, match=r"404\) while reading repository apb-org/nope"):
        get_repo(gh, "apb-org/nope")


def test_publish_posts_comment_and_check_run_of_the_reports_kind(fake, repo):
    outcome = publish_report(repo, PR, SHA, report_body("validation", ok=False))
    assert "created comment" in outcome and "(failure)" in outcome
    (run,) = fake.state.check_runs.values()
    assert (run["name"], run["conclusion"], run["head_sha"]) == ("APB validation", "failure", SHA)
    assert read_meta(fake.comments_on(PR)[0]["body"])["kind"] == "validation"


def test_publish_writes_nothing_when_the_pr_moved_or_is_another_one(fake, repo):
    assert publish_report(repo, PR, OTHER_SHA, report_body("validation", sha=OTHER_SHA)).startswith("not posted")
    assert publish_report(repo, PR, SHA, report_body("validation"), head_repo="mallory/benchmark").startswith(
        "not posted")
    assert publish_report(repo, PR, SHA, report_body("validation"), head_ref="other").startswith("not posted")
    assert fake.writes() == []


def test_a_validation_report_does_not_replace_the_evaluation_of_the_same_commit(fake, repo):
    publish_report(repo, PR, SHA, report_body("evaluation"))
    outcome = publish_report(repo, PR, SHA, report_body("validation"))
    assert "kept the evaluation report" in outcome
    (comment,) = fake.comments_on(PR)
    assert read_meta(comment["body"])["kind"] == "evaluation"
    assert sorted(r["name"] for r in fake.state.check_runs.values()) == ["APB evaluation", "APB validation"]


def test_publish_refuses_a_body_that_is_not_a_report_for_this_commit(fake, repo):
    with pytest.raises(APBError, match="not an `apb ci report` body"):
        publish_report(repo, PR, SHA, report_body("validation", sha=OTHER_SHA))
    assert fake.writes() == []


def _publish_cli(fake, tmp_path, monkeypatch, body_text: str, *extra: str) -> int:
    monkeypatch.setenv("GITHUB_TOKEN", "cli-token")
    monkeypatch.setenv("GITHUB_API_URL", fake.base_url)
    path = tmp_path / "report.md"
    path.write_text(body_text, encoding="utf-8")
    return main(["ci", "publish", "--body", str(path), "--repo", fake.full_name, *extra])


def test_publish_command_edits_the_existing_comment(fake, tmp_path, monkeypatch, capsys):
    old = fake.add_comment(PR, report_body("validation", ok=False), login=BOT_LOGIN, user_type="Bot")
    title = f"APB PR #{PR} @ {SHA}"
    assert _publish_cli(fake, tmp_path, monkeypatch, report_body("evaluation"), "--run-title", title) == 0
    assert f"updated comment {old}" in capsys.readouterr().out
    (comment,) = fake.comments_on(PR)
    assert read_meta(comment["body"])["kind"] == "evaluation"
    assert [r["name"] for r in fake.state.check_runs.values()] == ["APB evaluation"]


@pytest.mark.parametrize("kind, text", [("403", "refused (403)"), ("404", "found nothing (404)"),
                                        ("rate-limit", "rate limit exceeded")])
def test_publish_command_fails_with_a_clear_message(fake, tmp_path, monkeypatch, capsys, kind, text):
    fake.fail("GET", r"/pulls/\d+$", kind)
    code = _publish_cli(fake, tmp_path, monkeypatch, report_body("validation"), "--pr", str(PR), "--head-sha", SHA)
    assert code == 1
    assert text in capsys.readouterr().err
    assert fake.writes() == []


def test_publish_command_refuses_a_title_for_another_commit(fake, tmp_path, monkeypatch, capsys):
    code = _publish_cli(fake, tmp_path, monkeypatch, report_body("validation"),
                        "--run-title", f"APB PR #{PR} @ {OTHER_SHA}", "--head-sha", SHA)
    assert code == 1 and "names commit" in capsys.readouterr().err
    assert fake.requests == []


def test_publish_command_needs_a_token(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GH_TOKEN", raising=False)
    path = tmp_path / "report.md"
    path.write_text(report_body("validation"), encoding="utf-8")
    monkeypatch.setenv("GITHUB_TOKEN", "")
    assert main(["ci", "publish", "--body", str(path), "--repo", fake.full_name, "--pr", "7",
                 "--head-sha", SHA]) == 1
    assert "GITHUB_TOKEN" in capsys.readouterr().err

"""``apb ci plan|handoff|collect|ingest|report|publish``: the steps of the GitHub workflows, testable offline.

    apb ci plan --base SHA --head SHA [--extract STAGE] --out plan.json   # what a PR asks to evaluate
    apb ci plan --missing --out plan.json                                 # entries lacking a record
    apb ci handoff --plan missing.json --out plan.json --handoff DIR     # PR results, the rest batched for main
    apb ci collect --plan plan.json --legs LEGS --out RECORDS             # check and merge the legs' outputs
    apb ci ingest --plan plan.json --records RECORDS                      # copy them into submissions/
    apb ci report --kind evaluation --run-title T --artifacts DIR --out report.md
    apb ci publish --body report.md --run-title T                         # sticky comment + check run
    apb ci preview <ap_key|model_key>... --records out [--out preview.md]  # the comment, locally
    apb ci check-diff [--against REV]                                     # the bot pushes only records
    apb ci doctor --repo owner/name                                       # the deployment's settings

See docs/automation.md for the workflows that run them."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from evaluator.errors import APBError, Problem


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "see docs/automation.md for how the workflows use these steps"
    steps = parser.add_subparsers(dest="step", required=True, metavar="step")

    plan = steps.add_parser("plan", help="changed manifest entries between two commits -> matrix JSON")
    mode = plan.add_mutually_exclusive_group(required=True)
    mode.add_argument("--base", help="base commit (a PR's base sha, a push's 'before')")
    mode.add_argument("--missing", action="store_true",
                      help="plan every entry with a sha256 but no record for the protocol (leaderboard workflow)")
    plan.add_argument("--head", help="head commit (with --base; read with git as data, never checked out)")
    plan.add_argument("--protocol", action="append", default=None,
                      help="protocol id, repeatable (default: every evaluable leaderboard protocol)")
    plan.add_argument("--shards", default=os.environ.get("APB_SHARDS") or "1",
                      help="shards per model: N, or per architecture 'vgg16=4,resnet18=2' (default: $APB_SHARDS or 1)")
    plan.add_argument("--root", type=Path, default=None, help="the git checkout (default: around the cwd)")
    plan.add_argument("--extract", type=Path, default=None, metavar="STAGE",
                      help="write the head's version of each changed manifest.yaml / taxonomy.json into STAGE "
                           "(a scratch copy of the base checkout)")
    plan.add_argument("--pr-author", default=None, metavar="LOGIN",
                      help="the PR author's GitHub login: changes to APs whose taxonomy `authors` do not list it are "
                           "pointed out to the reviewer")
    plan.add_argument("--out", type=Path, default=None, help="write plan.json here (default: stdout)")
    plan.add_argument("--github-output", type=Path, default=None, metavar="FILE",
                      help="append 'evaluate=' and 'matrix=' lines for a workflow step (pass $GITHUB_OUTPUT)")

    handoff = steps.add_parser("handoff", help="take what main lacks from the PRs' approved evaluate runs (artifacts, "
                                              "actions: read); batch the rest for main's GPU legs")
    handoff.add_argument("--plan", type=Path, required=True, help="the plan of `apb ci plan --missing`")
    handoff.add_argument("--out", type=Path, required=True,
                         help="write this run's plan.json here (handed-off legs + the GPU batch)")
    handoff.add_argument("--handoff", type=Path, required=True, metavar="DIR",
                         help="empty folder for the handed-off legs (one apb-leg-<leg>/ per leg)")
    handoff.add_argument("--batch", type=int, default=None,
                         help="GPU legs per run (default and maximum: GitHub's 256 matrix jobs)")
    handoff.add_argument("--root", type=Path, default=None, help="main's checkout (default: around the cwd)")
    handoff.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY"),
                         help="owner/name (default: $GITHUB_REPOSITORY)")
    handoff.add_argument("--github-output", type=Path, default=None, metavar="FILE",
                         help="append 'evaluate=', 'matrix=', 'collect=' and 'remaining=' lines (pass $GITHUB_OUTPUT)")
    handoff.add_argument("--summary", type=Path, default=None, metavar="FILE",
                         help="append the Markdown summary (pass $GITHUB_STEP_SUMMARY)")

    collect = steps.add_parser("collect", help="check (and merge) the matrix legs' outputs into records")
    collect.add_argument("--plan", type=Path, required=True, help="the plan.json the legs ran")
    collect.add_argument("--legs", type=Path, required=True,
                         help="folder holding one artifact folder apb-leg-<leg>/ per leg (each holding apb-leg-<leg>/)")
    collect.add_argument("--handoff", type=Path, default=None, metavar="DIR",
                         help="the folder `apb ci handoff` staged the PR results in (the plan's handed-off models)")
    collect.add_argument("--out", type=Path, required=True, help="folder for records/ and collect.json")

    ingest = steps.add_parser("ingest", help="copy collected records into submissions/<ap>/records/")
    ingest.add_argument("--plan", type=Path, required=True, help="the plan.json the records were made for")
    ingest.add_argument("--records", type=Path, required=True, help="a folder written by `apb ci collect`")
    ingest.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")

    report = steps.add_parser("report", help="workflow artifacts -> the Markdown of the sticky PR comment")
    report.add_argument("--kind", choices=("validation", "evaluation"), required=True,
                        help="validation (a validate run's artifacts) or evaluation (an evaluate run's)")
    _add_target(report)
    report.add_argument("--artifacts", type=Path, required=True,
                        help="folder the run's artifacts were downloaded into (one folder per artifact)")
    report.add_argument("--run-url", default=None, help="link to the workflow run shown in the comment")
    report.add_argument("--run-conclusion", default=None,
                        help="the run's conclusion as GitHub reports it (success, failure, ...): a failed run is "
                             "reported as failed even where its artifacts look fine")
    report.add_argument("--root", type=Path, default=None,
                        help="repository whose published records give each cell's published numbers (default: "
                             "around the cwd)")
    report.add_argument("--out", type=Path, required=True, help="write the Markdown here")

    preview = steps.add_parser("preview", help="render the bot's evaluation comment locally from `apb evaluate "
                                               "--out DIR` records and the manifest's claims")
    preview.add_argument("keys", nargs="+", metavar="ap_key|model_key", help="an AP (every entry) or model keys")
    preview.add_argument("--records", type=Path, default=Path("out"),
                         help="the folder `apb evaluate --out` wrote the records into (default: ./out)")
    preview.add_argument("--protocol", default=None, help="protocol of the records (default: the one they have)")
    preview.add_argument("--root", type=Path, default=None, help="benchmark repository (default: around the cwd)")
    preview.add_argument("--allow-file-urls", action="store_true",
                         help="validate with file:// URLs accepted (before publishing)")
    preview.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: stdout)")

    publish = steps.add_parser("publish", help="post the report: one sticky PR comment and one check run")
    publish.add_argument("--body", type=Path, required=True, help="the Markdown written by `apb ci report`")
    _add_target(publish)
    publish.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY"),
                         help="owner/name (default: $GITHUB_REPOSITORY)")
    publish.add_argument("--head-repo", default=None, help="only post if the PR's head is in this repository")
    publish.add_argument("--head-ref", default=None, help="only post if the PR's head is this branch")
    publish.add_argument("--bot-login", default=None,
                         help="the login the token writes as (default: github-actions[bot])")


    check_diff = steps.add_parser("check-diff", help="refuse a staged diff that touches anything but records and "
                                                      "generated files (the leaderboard bot's commit)")
    check_diff.add_argument("--against", default=None, metavar="REV",
                            help="check the changes from REV to HEAD instead of the staged ones")
    check_diff.add_argument("--root", type=Path, default=None, help="the git checkout (default: around the cwd)")

    doctor = steps.add_parser("doctor", help="check the repository's and organization's settings that the threat "
                                             "model relies on (a read token in GITHUB_TOKEN)")
    doctor.add_argument("--repo", default=None,
                        help="owner/name (default: $GITHUB_REPOSITORY, else evaluator/registry/home.yaml's repository)")
    doctor.add_argument("--deployment", type=Path, default=None,
                        help="the expected settings (default: evaluator/ci/deployment.yaml)")


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-title", default=None,
                        help="the run's name, 'APB PR #<n> @ <sha>' (gives the PR and the commit)")
    parser.add_argument("--pr", type=int, default=None, help="PR number (instead of --run-title)")
    parser.add_argument("--head-sha", default=None,
                        help="the commit; with --run-title it must equal the title's commit")


def target(args: argparse.Namespace) -> tuple[int | None, str]:
    """(PR number, head sha) from --run-title and/or --pr / --head-sha."""
    from evaluator.ci.report_input import parse_run_title

    if args.run_title:
        pr, sha = parse_run_title(args.run_title)
        if args.head_sha and args.head_sha != sha:
            raise APBError(Problem("--run-title", f"names commit {sha}, but the run is for {args.head_sha}; "
                                                  "not reporting on a commit the run did not check"))
        if args.pr is not None and args.pr != pr:
            raise APBError(Problem("--run-title", f"names PR #{pr}, not #{args.pr}"))
        return pr, sha
    if not args.head_sha:
        raise APBError(Problem("apb ci", "give --run-title, or --head-sha (and --pr to publish)"))
    return args.pr, args.head_sha


def leaderboard_protocols() -> list[str]:
    """The protocols that are both evaluable and rendered on the leaderboard, by id."""
    from evaluator.protocol import list_protocols

    found = [p.id for p in list_protocols() if p.leaderboard and p.evaluable]
    if not found:
        raise APBError(Problem("evaluator/protocols", "no evaluable leaderboard protocol; pass --protocol"))
    return found


def write_text(path: Path | None, text: str) -> None:
    if path is None:
        sys.stdout.write(text)
    else:
        from evaluator.untrusted.safeio import atomic_write_bytes

        atomic_write_bytes(path, text.encode("utf-8"))


def run_plan(args: argparse.Namespace) -> int:
    from evaluator.ci.plan import extract_data, parse_shards, plan_change, plan_missing
    from evaluator.paths import repo_root

    root = (args.root or repo_root()).resolve()
    protocols = args.protocol or leaderboard_protocols()
    shards = parse_shards(args.shards)
    if args.missing:
        if args.extract:
            raise APBError(Problem("--extract", "only with --base/--head: --missing plans the checkout itself"))
        plan = plan_missing(root, protocols=protocols, shards=shards)
    else:
        if not args.head:
            raise APBError(Problem("--head", "give the head commit together with --base"))
        plan = plan_change(root, args.base, args.head, protocols=protocols, shards=shards,
                           pr_author=args.pr_author or None)
        if args.extract and not plan.blocked_files and not plan.problems:
            try:
                for path in extract_data(root, plan, args.extract):
                    print(f"extracted {path} at {str(plan.head)[:12]}", file=sys.stderr)
            except APBError as error:  # the plan still says why: the report shows it
                plan.problems.extend(error.problems)
                plan.include.clear()
    write_text(args.out, json.dumps(plan.to_dict(), indent=2) + "\n")
    if args.github_output:
        with open(args.github_output, "a", encoding="utf-8") as handle:
            handle.write(f"evaluate={'true' if plan.evaluate else 'false'}\n")
            handle.write(f"matrix={json.dumps(plan.matrix(), separators=(',', ':'))}\n")
            handle.write(f"data_only={'true' if not plan.blocked_files else 'false'}\n")
    for problem in plan.problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(plan.reason, file=sys.stderr)
    return 0


def _read_plan(path: Path) -> dict:
    from evaluator.ci.artifacts import load_checked_json

    return load_checked_json(path, "plan.schema.json")


def run_handoff(args: argparse.Namespace) -> int:
    from evaluator.ci.github import DEFAULT_API_URL, connect, get_repo
    from evaluator.ci.handoff import GPU_BATCH, Actions, hand_off
    from evaluator.paths import repo_root

    if not args.repo:
        raise APBError(Problem("apb ci handoff", "give --repo owner/name (or set GITHUB_REPOSITORY)"))
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or ""
    repo = get_repo(connect(token, base_url=os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL), args.repo)
    result = hand_off((args.root or repo_root()).resolve(), _read_plan(args.plan), Actions(repo, token),
                      args.handoff, batch=args.batch or GPU_BATCH)
    write_text(args.out, json.dumps(result.plan, indent=2) + "\n")
    write_text(args.handoff / "handoff.json", json.dumps(result.to_dict(), indent=2) + "\n")
    if args.github_output:
        with open(args.github_output, "a", encoding="utf-8") as handle:
            handle.write(f"evaluate={'true' if result.evaluate else 'false'}\n")
            handle.write(f"matrix={json.dumps(result.matrix(), separators=(',', ':'))}\n")
            handle.write(f"collect={'true' if result.plan['include'] else 'false'}\n")
            handle.write(f"remaining={len(result.remaining)}\n")
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as handle:
            handle.write(result.summary())
    print(result.plan["reason"], file=sys.stderr)
    return 0


def run_collect(args: argparse.Namespace) -> int:
    from evaluator.ci.collect import collect

    result = collect(_read_plan(args.plan), args.legs, args.out, args.handoff)
    for name in result.records:
        print(f"accepted {name}", file=sys.stderr)
    for item in result.missing:
        print(f"missing {item['model_key']}: {item['reason']}", file=sys.stderr)
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from evaluator.ci.collect import ingest
    from evaluator.paths import repo_root

    for path in ingest(_read_plan(args.plan), args.records, (args.root or repo_root()).resolve()):
        print(f"wrote {path}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from evaluator.ci.report import conclusion_and_title, render_report
    from evaluator.ci.report_input import load_report_input

    _, head_sha = target(args)
    from evaluator.paths import repo_root

    report = load_report_input(args.kind, head_sha, args.artifacts, run_url=args.run_url,
                               run_conclusion=args.run_conclusion, root=args.root or repo_root())
    write_text(args.out, render_report(report))
    conclusion, title = conclusion_and_title(report)
    print(f"{conclusion}: {title}", file=sys.stderr)
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from evaluator.ci.github import DEFAULT_API_URL, connect, get_repo, publish_report

    pr, head_sha = target(args)
    if pr is None:
        raise APBError(Problem("apb ci publish", "give --run-title or --pr: which pull request to comment on"))
    if not args.repo:
        raise APBError(Problem("apb ci publish", "give --repo owner/name (or set GITHUB_REPOSITORY)"))
    body = args.body.read_text(encoding="utf-8")
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or ""
    gh = connect(token, base_url=os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL)
    repo = get_repo(gh, args.repo)
    print(publish_report(repo, pr, head_sha, body, head_repo=args.head_repo, head_ref=args.head_ref,
                         bot_login=args.bot_login))
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from evaluator.ci.preview import preview_input
    from evaluator.ci.report import conclusion_and_title, render_report
    from evaluator.commands.check import entries_for
    from evaluator.paths import repo_root

    root = (args.root or repo_root()).resolve()
    entries = [entry for key in args.keys for entry in entries_for(key, root)]
    report = preview_input(root, entries, args.records, protocol=args.protocol, allow_file_urls=args.allow_file_urls)
    write_text(args.out, render_report(report))
    conclusion, title = conclusion_and_title(report)
    print(f"{conclusion}: {title}", file=sys.stderr)
    return 0


def run_check_diff(args: argparse.Namespace) -> int:
    from evaluator.ci.push_scope import check_push_scope, read_diff
    from evaluator.paths import repo_root

    changes = read_diff((args.root or repo_root()).resolve(), args.against)
    refused = check_push_scope(changes)
    if refused:
        raise APBError([Problem(p.file, f"refused: {p.message}") for p in refused])
    print(f"{len(changes)} changed paths, all records or generated files")
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    from evaluator.ci.doctor import DEPLOYMENT_FILE, PROBLEM, UNKNOWN, load_deployment, run_doctor as check
    from evaluator.ci.github import DEFAULT_API_URL, connect
    from evaluator.registry.home import home

    args.repo = args.repo or os.environ.get("GITHUB_REPOSITORY") or home().repository
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or ""
    gh = connect(token, base_url=os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL)
    findings = check(gh, args.repo, load_deployment(args.deployment or DEPLOYMENT_FILE))
    for finding in findings:
        print(finding)
    problems = sum(f.status == PROBLEM for f in findings)
    unknown = sum(f.status == UNKNOWN for f in findings)
    print(f"{args.repo}: {len(findings) - problems - unknown} ok, {problems} problems, {unknown} could not be checked")
    return 1 if problems else 0


STEPS = {"preview": run_preview, "plan": run_plan, "handoff": run_handoff, "collect": run_collect, "ingest": run_ingest, "report": run_report, "publish": run_publish,
         "check-diff": run_check_diff, "doctor": run_doctor}


def run(args: argparse.Namespace) -> int:
    return STEPS[args.step](args)

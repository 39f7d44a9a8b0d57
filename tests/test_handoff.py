"""Issue 19, point 1: records reach main under GitHub's real rules (the read-only cache for untrusted triggers,
artifacts that expire, GitHub's 256-job matrix limit). The scenarios run the real workflow files end to end
through ``tests/support/actions_sim.py`` against the fake GitHub; the unit tests pin the hand-off's binding
rules. ``APB_SIM_WORKFLOWS=/path/to/.github/workflows`` runs the scenarios against other workflow files (how
they were checked to fail with main's)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.support.ci_records import manifest_text, model, sha, write_evaluated
from tests.support.fake_github import FakeGitHub

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = Path(os.environ.get("APB_SIM_WORKFLOWS") or ROOT / ".github" / "workflows")
PROTOCOL = "linf-8-255-v1"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


class World:
    """A bare origin holding a copy of this repository (less the folders *leave_out*), a maintainer's clone of
    it, the fake GitHub and the simulator."""

    def __init__(self, tmp_path: Path, fake: FakeGitHub, *, leave_out: tuple[str, ...] = ()) -> None:
        from tests.support.actions_sim import Simulator
        from tests.test_workflows import copy_of_this_repository

        self.fake = fake
        seed = copy_of_this_repository(tmp_path)
        if leave_out:
            git(seed, "rm", "-rq", *leave_out)
            git(seed, "commit", "-q", "-m", f"leave out {', '.join(leave_out)}")
        self.origin = tmp_path / "origin.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(self.origin)], check=True)
        git(self.origin, "config", "uploadpack.allowAnySHA1InWant", "true")
        self.clone = tmp_path / "maintainer"
        subprocess.run(["git", "clone", "-q", str(self.origin), str(self.clone)], check=True)
        git(self.clone, "config", "user.email", "m@example.org")
        git(self.clone, "config", "user.name", "maintainer")
        self.sim = Simulator(fake, self.origin, tmp_path / "sim", workflows=WORKFLOWS)

    def main(self) -> str:
        return git(self.origin, "rev-parse", "refs/heads/main")

    def open_pr(self, number: int, files: dict[str, str]) -> tuple[str, str]:
        """A PR branch with *files*, pushed as ``refs/pull/<n>/head``; returns (base sha, head sha)."""
        base = self.main()
        git(self.clone, "checkout", "-q", "-B", f"pr-{number}", base)
        for name, text in files.items():
            (self.clone / name).parent.mkdir(parents=True, exist_ok=True)
            (self.clone / name).write_text(text)
        git(self.clone, "add", "-A")
        git(self.clone, "commit", "-q", "-m", f"PR {number}")
        head = git(self.clone, "rev-parse", "HEAD")
        git(self.clone, "push", "-q", "origin", f"HEAD:refs/pull/{number}/head")
        self.fake.add_pull(number, head, labels=("apb:evaluate",))
        return base, head

    def evaluate(self, number: int, base: str, head: str):
        event = {"action": "labeled", "label": {"name": "apb:evaluate"},
                 "pull_request": {"number": number, "head": {"sha": head}, "base": {"sha": base, "ref": "main"},
                                  "user": {"login": "newcomer"}}}
        return self.sim.run("evaluate.yml", "pull_request_target", event, sha=self.main())  # head_sha: the base's

    def merge(self, number: int) -> str:
        git(self.clone, "checkout", "-q", "main")
        git(self.clone, "pull", "-q", "--ff-only", "origin", "main")
        git(self.clone, "merge", "-q", "--no-ff", "-m", f"Merge pull request #{number}", f"pr-{number}")
        git(self.clone, "push", "-q", "origin", "main")
        merge = git(self.clone, "rev-parse", "HEAD")
        self.fake.merge_pull(number, merge)
        return merge

    def push(self, files: dict[str, str], message: str) -> str:
        """A maintainer's direct push to main (no PR)."""
        git(self.clone, "checkout", "-q", "main")
        git(self.clone, "pull", "-q", "--ff-only", "origin", "main")
        for name, text in files.items():
            (self.clone / name).parent.mkdir(parents=True, exist_ok=True)
            (self.clone / name).write_text(text)
        git(self.clone, "add", "-A")
        git(self.clone, "commit", "-q", "-m", message)
        git(self.clone, "push", "-q", "origin", "main")
        return git(self.clone, "rev-parse", "HEAD")

    def leaderboard(self, event_name: str = "push", **kwargs):
        main = self.main()
        return self.sim.run("leaderboard.yml", event_name, {"after": main} if event_name == "push" else {},
                            sha=main, **kwargs)

    def records_on_main(self, ap_key: str) -> list[str]:
        listed = git(self.origin, "ls-tree", "--name-only", "main", f"submissions/{ap_key}/records/")
        return sorted(Path(name).name for name in listed.splitlines() if name.endswith(".json"))


@pytest.fixture
def world(tmp_path):
    with FakeGitHub() as fake:
        yield World(tmp_path, fake)


def new_ap(ap_key: str, *, every_model: bool = False) -> dict[str, str]:
    """A new AP's taxonomy.json and manifest.yaml: ResNet18 on CIFAR10 at 90, 95 and 99% (or all 12 unstructured
    models: 2 architectures x 2 datasets x 3 sparsities), each with its own checkpoint sha256."""
    from tests.test_workflows import new_ap_files

    files = new_ap_files()
    taxonomy = json.loads(next(v for k, v in files.items() if k.endswith("taxonomy.json")))
    taxonomy.update(ap_key=ap_key, name=ap_key.split("_")[0])
    kinds = [(a, d) for a in ("resnet18", "vgg16") for d in ("CIFAR10", "SVHN")] if every_model else [
        ("resnet18", "CIFAR10")]
    manifest = manifest_text(ap_key, [
        model(arch, s, "1", dataset=data, sha256=hashlib.sha256(f"{ap_key}-{arch}-{data}-{s}".encode()).hexdigest())
        for arch, data in kinds for s in (90, 95, 99)])
    return {f"submissions/{ap_key}/taxonomy.json": json.dumps(taxonomy, indent=2) + "\n",
            f"submissions/{ap_key}/manifest.yaml": manifest}


AP = "NEWAP_Doe2025Example"
KEYS = [f"{AP}_R18_CIFAR10_US_{s}" for s in (90, 95, 99)]


def assert_done(run) -> None:
    assert run.conclusion == "success", run.log()


# ------------------------------------------------------------------------------------------------ scenarios


@pytest.mark.slow
def test_a_pr_evaluated_then_merged_gets_its_records_on_main_from_the_runs_artifacts(world):
    """(a) evaluate.yml on pull_request_target (read-only cache) -> merge -> leaderboard.yml on push: the
    records are handed off from the PR run's artifacts; nothing is evaluated again and nothing uses the cache."""
    base, head = world.open_pr(7, new_ap(AP))
    evaluated = world.evaluate(7, base, head)
    assert_done(evaluated)
    assert evaluated.jobs["evaluate"].legs == 3
    world.merge(7)
    run = world.leaderboard()
    assert_done(run)
    assert world.records_on_main(AP) == [f"{key}__{PROTOCOL}.json" for key in KEYS], run.log()
    assert run.jobs["evaluate"].result == "skipped"  # handed off: no GPU leg on main
    assert "handed off from approved PR evaluations: 3" in run.summary
    assert world.fake.state.actions.caches == [] and world.fake.state.actions.warnings == []
    message = git(world.origin, "log", "-1", "--format=%B", "main")
    assert "[skip ci]" in message and "handed off" in message
    again = world.leaderboard()  # nothing is missing any more: no hand-off, no GPU leg, no commit
    assert_done(again)
    assert again.jobs["evaluate"].result == again.jobs["collect"].result == "skipped"


@pytest.mark.slow
def test_expired_artifacts_are_evaluated_on_main_and_committed(world):
    """(b) the PR's artifacts expired before the merge reached the leaderboard: the entries are evaluated by the
    trusted workflow on main (GPU legs without token) and committed."""
    base, head = world.open_pr(8, new_ap(AP))
    assert_done(world.evaluate(8, base, head))
    world.merge(8)
    world.fake.state.actions.advance(31)  # retention-days: 30
    run = world.leaderboard()
    assert_done(run)
    assert run.jobs["evaluate"].legs == 3
    assert "expired" in run.summary and "remaining, carried over to the next run: 0" in run.summary
    assert world.records_on_main(AP) == [f"{key}__{PROTOCOL}.json" for key in KEYS], run.log()


@pytest.mark.slow
def test_a_cancelled_leaderboard_run_loses_nothing(world):
    """(d) a leaderboard run cancelled in the middle of its GPU legs commits nothing; the next run (the
    schedule, without a maintainer) plans the same entries and brings every record in."""
    base, head = world.open_pr(9, new_ap(AP))
    assert_done(world.evaluate(9, base, head))
    world.merge(9)
    world.fake.state.actions.advance(31)
    cancelled = world.leaderboard(cancel_after=("evaluate", 1))
    assert cancelled.conclusion == "cancelled"
    assert cancelled.jobs["commit"].result == "cancelled" and world.records_on_main(AP) == []
    run = world.leaderboard("schedule")
    assert_done(run)
    assert run.jobs["evaluate"].legs == 3
    assert world.records_on_main(AP) == [f"{key}__{PROTOCOL}.json" for key in KEYS], run.log()


@pytest.fixture
def lean_world(tmp_path):
    """A world whose repository leaves out the package's source, tests and benchmarks: no simulated step runs
    them (the steps' ``apb`` is this checkout's), and 300 legs each unpack the staged tree."""
    with FakeGitHub() as fake:
        yield World(tmp_path, fake, leave_out=("evaluator", "tests", "bench"))


@pytest.mark.slow
def test_300_missing_entries_take_two_runs_of_at_most_256_legs(lean_world):
    """(c) 300 entries pushed to main without a PR (like imported checkpoints once pinned): the first run
    evaluates 256 legs and says 44 remain; the scheduled run evaluates the 44."""
    world = lean_world
    aps = [f"BULK{i}_Doe2025Bulk" for i in range(25)]
    files: dict[str, str] = {}
    for ap_key in aps:
        files.update(new_ap(ap_key, every_model=True))  # 12 entries each
    world.push(files, "import 300 pinned checkpoints")
    first = world.leaderboard()
    assert_done(first)
    assert first.jobs["evaluate"].legs == 256, first.summary + first.log()[-3000:]
    assert "remaining, carried over to the next run: 44" in first.summary
    assert sum(len(world.records_on_main(ap)) for ap in aps) == 256
    second = world.leaderboard("schedule")
    assert_done(second)
    assert second.jobs["evaluate"].legs == 44 and "remaining, carried over to the next run: 0" in second.summary
    assert sum(len(world.records_on_main(ap)) for ap in aps) == 300


# ------------------------------------------------------------------------------------------------ binding rules

UNIT_AP = "HYDRA_Sehwag2020Hydra"
R18_90, R18_95 = f"{UNIT_AP}_R18_CIFAR10_US_90", f"{UNIT_AP}_R18_CIFAR10_US_95"
EVALUATE = ".github/workflows/evaluate.yml"


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def leg_zip(tmp_path: Path, leg: str, model_key: str, checkpoint_sha: str, *, extra: dict | None = None) -> bytes:
    """The artifact ``apb-leg-<leg>`` as an evaluate leg uploads it: ``apb-leg-<leg>/<record>.json`` + sidecar."""
    folder = tmp_path / f"made-{leg}-{len(list(tmp_path.glob('made-*')))}"
    folder.mkdir()
    write_evaluated(folder, model_key, checkpoint_sha)
    files = {f"apb-leg-{leg}/{path.name}": path.read_bytes() for path in sorted(folder.iterdir())}
    return zipped({**files, **(extra or {})})


class Merged:
    """main with one merged PR (#5) pinning R18_90 (checkpoint 1) and R18_95 (checkpoint 2), and an approved
    evaluate run of the PR's head whose artifacts are what its legs uploaded."""

    def __init__(self, tmp_path: Path, fake: FakeGitHub) -> None:
        from evaluator.ci.plan import plan_missing
        from tests.test_ci_plan import branch, commit, git as plan_git
        from tests.test_workflows import init_repo

        self.tmp, self.fake = tmp_path, fake
        self.root = tmp_path / "repo"
        init_repo(self.root)
        self.base = commit(self.root, {f"submissions/{UNIT_AP}/taxonomy.json": "{}\n",
                                       "taxonomy/vocabulary.yaml": "{}\n"}, "base")
        self.head = branch(self.root, {f"submissions/{UNIT_AP}/manifest.yaml": manifest_text(
            UNIT_AP, [model("resnet18", 90, "1"), model("resnet18", 95, "2")])})
        plan_git(self.root, "merge", "-q", "--no-ff", "-m", "Merge pull request #5", self.head)
        self.merge = plan_git(self.root, "rev-parse", "HEAD")
        fake.add_pull(5, self.head)
        fake.merge_pull(5, self.merge)
        self.missing = plan_missing(self.root, protocols=[PROTOCOL], shards={"*": 1}).to_dict()
        self.pr_plan = {**json.loads(json.dumps(self.missing)), "head": self.head, "base": self.base}

    def run(self, *, plan: dict | None = None, legs: dict[str, bytes] | None = None, path: str = EVALUATE,
            event: str = "pull_request_target", title: str | None = None) -> int:
        actions = self.fake.state.actions
        run_id = actions.start_run(path, event, self.base, title=title or f"APB PR #5 @ {self.head}")
        actions.upload(run_id, "apb-plan", zipped({"plan.json": json.dumps(plan or self.pr_plan).encode()}),
                       retention_days=30)
        if legs is None:
            legs = {key: leg_zip(self.tmp, key, key, sha(c)) for key, c in ((R18_90, "1"), (R18_95, "2"))}
        for leg, data in legs.items():
            actions.upload(run_id, f"apb-leg-{leg}", data, retention_days=30)
        actions.finish_run(run_id, "success")
        return run_id

    def hand_off(self, **kwargs):
        from evaluator.ci.github import connect, get_repo
        from evaluator.ci.handoff import Actions, hand_off

        repo = get_repo(connect("t", base_url=self.fake.base_url, throttle=False), self.fake.full_name)
        staged = self.tmp / f"handoff-{os.urandom(3).hex()}"
        return hand_off(self.root, self.missing, Actions(repo, "t"), staged, **kwargs), staged

    def evaluated_on_main(self, result) -> list[str]:
        return sorted({leg["model_key"] for leg in result.evaluate})


@pytest.fixture
def merged(tmp_path):
    with FakeGitHub() as fake:
        yield Merged(tmp_path, fake)


def reasons(result) -> dict[str, str]:
    return {item["model_key"]: item["reason"] for item in result.unusable}


def test_the_results_of_the_approved_run_are_handed_off_and_collect_accepts_them(merged, tmp_path):
    from evaluator.ci.collect import collect

    run_id = merged.run()
    result, staged = merged.hand_off()
    assert [(item["model_key"], item["run_id"], item["pull"], item["head_sha"]) for item in result.handed_off] == [
        (R18_90, run_id, 5, merged.head), (R18_95, run_id, 5, merged.head)]
    assert result.evaluate == [] and result.remaining == []
    collected = collect(result.plan, tmp_path / "no-legs", tmp_path / "out", staged)
    assert collected.records == [f"{R18_90}__{PROTOCOL}.json", f"{R18_95}__{PROTOCOL}.json"]
    assert collect(result.plan, staged, tmp_path / "out2").records == []  # handed-off legs: only from --handoff


def with_leg(plan: dict, model_key: str, **changes) -> dict:
    plan = json.loads(json.dumps(plan))
    for leg in plan["include"]:
        if leg["model_key"] == model_key:
            leg.update(changes)
    return plan


def test_a_run_that_evaluated_another_checkpoint_is_not_used(merged):
    """The PR's run evaluated checkpoint 9 for R18_95 (the author pushed a new pin later, never re-labelled)."""
    from evaluator.ci.plan import evaluator_version

    key = f"apb-{PROTOCOL}-{evaluator_version()}-{R18_95}-{sha('9')}-000000000000"
    plan = with_leg(merged.pr_plan, R18_95, sha256=sha("9"), cache_key=key)
    merged.run(plan=plan, legs={R18_90: leg_zip(merged.tmp, R18_90, R18_90, sha("1")),
                                R18_95: leg_zip(merged.tmp, R18_95, R18_95, sha("9"))})
    result, _ = merged.hand_off()
    assert [item["model_key"] for item in result.handed_off] == [R18_90]
    assert merged.evaluated_on_main(result) == [R18_95] and "another checkpoint" in reasons(result)[R18_95]


def test_a_forged_plan_does_not_make_a_record_of_another_checkpoint_acceptable(merged):
    """The plan's key matches main's, but the leg's record is of checkpoint 9: the acceptance rule refuses it."""
    merged.run(legs={R18_90: leg_zip(merged.tmp, R18_90, R18_90, sha("1")),
                     R18_95: leg_zip(merged.tmp, R18_95, R18_95, sha("9"))})
    result, _ = merged.hand_off()
    assert merged.evaluated_on_main(result) == [R18_95]
    assert "refused" in reasons(result)[R18_95] and f"is '{sha('9')}', the plan asked for '{sha('2')}'" in \
        reasons(result)[R18_95]


def test_a_run_under_another_protocol_or_evaluator_version_is_not_used(merged):
    from evaluator.ci.plan import evaluator_version

    other_protocol = with_leg(merged.pr_plan, R18_90, cache_key=merged.pr_plan["include"][0]["cache_key"].replace(
        PROTOCOL, "linf-8-255-v2"), protocol="linf-8-255-v2")
    older = with_leg(other_protocol, R18_95, cache_key=merged.pr_plan["include"][1]["cache_key"].replace(
        f"-{evaluator_version()}-", "-0.0.9-"))
    merged.run(plan=older)
    result, _ = merged.hand_off()
    assert result.handed_off == [] and merged.evaluated_on_main(result) == [R18_90, R18_95]
    stated = {**merged.pr_plan, "evaluator_version": "0.0.9"}  # the version the run states for itself
    merged.run(plan=stated)
    result, _ = merged.hand_off()
    assert merged.evaluated_on_main(result) == [R18_90, R18_95]
    assert "evaluator 0.0.9" in reasons(result)[R18_90]


def test_a_legs_artifact_cannot_supply_another_legs_result(merged):
    """The artifact of R18_90's leg also holds a valid ``apb-leg-<R18_95>/``; R18_95's own artifact is missing."""
    smuggled = leg_zip(merged.tmp, R18_95, R18_95, sha("2"))
    with zipfile.ZipFile(io.BytesIO(smuggled)) as archive:
        extra = {name: archive.read(name) for name in archive.namelist()}
    merged.run(legs={R18_90: leg_zip(merged.tmp, R18_90, R18_90, sha("1"), extra=extra)})
    result, _ = merged.hand_off()
    assert [item["model_key"] for item in result.handed_off] == [R18_90]
    assert merged.evaluated_on_main(result) == [R18_95] and "no artifact" in reasons(result)[R18_95]


def test_expired_artifacts_and_unreadable_zips_send_the_entry_to_main(merged):
    merged.run()
    merged.fake.state.actions.advance(31)
    result, _ = merged.hand_off()
    assert merged.evaluated_on_main(result) == [R18_90, R18_95]
    assert all("expired" in reason for reason in reasons(result).values())
    link = zipfile.ZipInfo(f"apb-leg-{R18_90}/{R18_90}__{PROTOCOL}.json")
    link.external_attr = (0o120777 << 16)  # a symbolic link
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(link, "/etc/passwd")
    merged.run(legs={R18_90: buffer.getvalue(), R18_95: zipped({f"apb-leg-{R18_95}/../../x": b"x"})})
    result, _ = merged.hand_off()
    assert "not a regular file" in reasons(result)[R18_90] and "plain relative name" in reasons(result)[R18_95]


def test_only_this_repositorys_evaluate_workflow_under_pull_request_target_counts(merged):
    merged.run(path=".github/workflows/evil.yml")
    merged.run(event="pull_request")  # a fork's own workflow under the same name and title
    merged.run(title=f"APB PR #6 @ {merged.head}")  # another PR's run
    result, _ = merged.hand_off()
    assert result.handed_off == [] and "no completed evaluate run" in reasons(result)[R18_90]


def test_an_entry_pushed_without_a_pull_request_is_evaluated_on_main_in_batches(merged):
    merged.fake.state.actions.commit_pulls.clear()
    result, _ = merged.hand_off(batch=1)
    assert merged.evaluated_on_main(result) == [R18_90] and result.remaining == [R18_95]
    assert "not merged from a pull request" in reasons(result)[R18_90]
    assert "remaining, carried over to the next run: 1" in result.summary()
    assert result.plan["include"] == result.evaluate and result.plan["handoff"] == []


def test_302_entries_without_a_result_are_256_gpu_legs_now_and_46_later(merged):
    """The batch arithmetic of (c) without the simulator: GitHub's 256 matrix jobs, all of them GPU legs."""
    from evaluator.ci.handoff import GPU_BATCH, HANDOFF_MATRIX_JOBS
    from tests.test_ci_plan import commit

    assert GPU_BATCH == 256 - HANDOFF_MATRIX_JOBS == 256
    aps = [f"BULK{i}_Doe2025Bulk" for i in range(25)]
    files = {}
    for ap_key in aps:
        files.update({name: text for name, text in new_ap(ap_key, every_model=True).items()
                      if name.endswith("manifest.yaml")})
        files[f"submissions/{ap_key}/taxonomy.json"] = "{}\n"
    commit(merged.root, files, "import 300 pinned checkpoints")
    from evaluator.ci.plan import plan_missing

    merged.missing = plan_missing(merged.root, protocols=[PROTOCOL], shards={"*": 1}).to_dict()
    result, _ = merged.hand_off()
    assert len(merged.missing["include"]) == 302 and result.handed_off == []  # + the PR's 2, never evaluated
    assert len(result.evaluate) == 256 and len(result.remaining) == 46
    assert result.matrix()["include"] == result.evaluate


def test_the_simulator_refuses_a_matrix_over_256_jobs_like_github(tmp_path):
    from tests.support.actions_sim import Simulator

    workflows = tmp_path / "workflows"
    workflows.mkdir()
    legs = json.dumps({"include": [{"leg": str(i)} for i in range(257)]})
    (workflows / "big.yml").write_text(json.dumps({
        "name": "big", "on": "push", "permissions": {},
        "jobs": {"plan": {"runs-on": "ubuntu-24.04", "permissions": {}, "outputs": {"matrix": "${{ steps.m.outputs.m }}"},
                          "steps": [{"id": "m", "run": f"echo 'm={legs}' >> \"$GITHUB_OUTPUT\""}]},
                 "legs": {"needs": "plan", "runs-on": "ubuntu-24.04", "permissions": {},
                          "strategy": {"matrix": "${{ fromJSON(needs.plan.outputs.matrix) }}"},
                          "steps": [{"run": "true"}]}}}))
    with FakeGitHub() as fake:
        run = Simulator(fake, tmp_path, tmp_path / "sim", workflows=workflows).run("big.yml", "push", {}, sha="0" * 40)
    assert run.jobs["legs"].result == "failure" and run.jobs["legs"].legs == 0
    assert "GitHub allows 256" in run.log()

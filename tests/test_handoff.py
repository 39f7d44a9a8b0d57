"""Issue 19, point 1: records reach main under GitHub's real rules (the read-only cache for untrusted triggers,
artifacts that expire, GitHub's 256-job matrix limit). The scenarios run the real workflow files end to end
through ``tests/support/actions_sim.py`` against the fake GitHub; the unit tests pin the hand-off's binding
rules. ``APB_SIM_WORKFLOWS=/path/to/.github/workflows`` runs the scenarios against other workflow files (how
they were checked to fail with main's)."""
from __future__ import annotations

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
    """A bare origin holding a copy of this repository, a maintainer's clone of it, the fake GitHub and the
    simulator."""

    def __init__(self, tmp_path: Path, fake: FakeGitHub) -> None:
        from tests.support.actions_sim import Simulator
        from tests.test_workflows import copy_of_this_repository

        self.fake = fake
        seed = copy_of_this_repository(tmp_path)
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


def new_ap(ap_key: str, sparsities=(90, 95, 99)) -> dict[str, str]:
    from tests.test_workflows import new_ap_files

    files = new_ap_files()
    taxonomy = json.loads(next(v for k, v in files.items() if k.endswith("taxonomy.json")))
    taxonomy.update(ap_key=ap_key, name=ap_key.split("_")[0])
    manifest = manifest_text(ap_key, [model("resnet18", s, str(i + 1)) for i, s in enumerate(sparsities)])
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


@pytest.mark.slow
def test_300_missing_entries_take_two_runs_of_at_most_256_legs(world):
    """(c) 300 entries pushed to main without a PR (like imported checkpoints once pinned): the first run
    evaluates 256 legs and says 44 remain; the scheduled run evaluates the 44."""
    aps = [f"BULK{i}_Doe2025Bulk" for i in range(6)]
    files: dict[str, str] = {}
    for ap_key in aps:
        files.update(new_ap(ap_key, sparsities=range(40, 90)))  # 50 entries each
    world.push(files, "import 300 pinned checkpoints")
    first = world.leaderboard()
    assert_done(first)
    assert first.jobs["evaluate"].legs == 256
    assert "remaining, carried over to the next run: 44" in first.summary
    assert sum(len(world.records_on_main(ap)) for ap in aps) == 256
    second = world.leaderboard("schedule")
    assert_done(second)
    assert second.jobs["evaluate"].legs == 44 and "remaining, carried over to the next run: 0" in second.summary
    assert sum(len(world.records_on_main(ap)) for ap in aps) == 300

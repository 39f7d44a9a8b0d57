"""``apb ci plan`` on temporary git repositories: what a change asks to evaluate, as a matrix."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from evaluator.ci.artifacts import CI_SCHEMAS, schema_problems
from evaluator.ci.plan import (EMPTY_TREE, parse_shards, plan_change, plan_missing, extract_data)
from evaluator.cli import main
from evaluator.errors import APBError
from tests.support.ci_records import PROTOCOL, manifest_text, model, sha, write_evaluated

AP = "HYDRA_Sehwag2020Hydra"
OTHER_AP = "LWM_Han2015Learning"
NO_SHARDS = {"*": 1}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    """Write (or, for None, delete) files and commit them; returns the commit sha."""
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def key(architecture: str = "resnet18", sparsity: int = 90, ap: str = AP) -> str:
    return f"{ap}_{'R18' if architecture == 'resnet18' else 'V16'}_CIFAR10_US_{sparsity}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A benchmark repository whose main branch has two APs and some code."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "test")
    commit(root, {
        f"submissions/{AP}/manifest.yaml": manifest_text(AP, [model("resnet18", 90, "1"), model("resnet18", 95, "2"),
                                                                 model("vgg16", 90, "3")]),
        f"submissions/{AP}/taxonomy.json": "{}\n",
        f"submissions/{OTHER_AP}/manifest.yaml": manifest_text(OTHER_AP, [model("resnet18", 99, "9")]),
        "taxonomy/vocabulary.yaml": "{}\n",
        "evaluator/__init__.py": "",
    }, "base")
    return root


def branch(repo: Path, files: dict[str, str | None], name: str = "pr") -> str:
    git(repo, "checkout", "-q", "-b", name)
    head = commit(repo, files, "pr change")
    git(repo, "checkout", "-q", "main")
    return head


def test_added_changed_removed_and_untouched_entries(repo):
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest_text(AP, [
        model("resnet18", 90, "1"),                    # untouched
        model("resnet18", 95, "4"),                    # changed: new checkpoint
        model("vgg16", 95, "5", claimed={"clean_accuracy": 80.0, "aa_robust_accuracy": 45.5}),  # added
    ])})  # vgg16 90 removed
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.entries == {"added": [key("vgg16", 95)], "changed": [key("resnet18", 95)],
                            "removed": [key("vgg16", 90)], "untouched": [key("resnet18", 90)]}
    assert plan.evaluate and plan.blocked_files == [] and plan.problems == []
    matrix = plan.matrix()["include"]
    assert [leg["model_key"] for leg in matrix] == [key("resnet18", 95), key("vgg16", 95)]
    assert [leg["sha256"] for leg in matrix] == [sha("4"), sha("5")]
    assert all(leg["shard"] is None and leg["leg"] == leg["model_key"] and leg["protocol"] == PROTOCOL
               for leg in matrix)
    from evaluator import __version__  # a fixed evaluator never restores an older one's result
    assert matrix[0]["cache_key"].startswith(f"apb-{PROTOCOL}-{__version__}-{key('resnet18', 95)}-{sha('4')}-")
    assert plan.models[key("vgg16", 95)]["claimed"] == {"clean_accuracy": 80.0, "aa_robust_accuracy": 45.5}
    assert plan.reason == "2 model(s) to evaluate in 2 leg(s)"
    assert schema_problems(plan.to_dict(), CI_SCHEMAS / "plan.schema.json", "plan") == []


def test_claims_and_comments_alone_change_nothing(repo):
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": "# a comment\n" + manifest_text(AP, [
        model("resnet18", 90, "1", claimed={"clean_accuracy": 81.0}), model("resnet18", 95, "2"),
        model("vgg16", 90, "3")])})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.entries["untouched"] == sorted([key("resnet18", 90), key("resnet18", 95), key("vgg16", 90)])
    assert not plan.evaluate and plan.reason.startswith("nothing to evaluate")


def test_an_existing_record_of_the_same_checkpoint_is_not_evaluated_again(repo):
    records = repo / "submissions" / AP / "records"
    records.mkdir()
    write_evaluated(records, key("resnet18", 95), sha("2"))
    write_evaluated(records, key("resnet18", 90), sha("1"))
    commit(repo, {}, "records on main")
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest_text(AP, [
        model("resnet18", 90, "1", normalization={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}),
        model("resnet18", 95, "2", url="https://mirror.example.org/r18-95.pt"),
        model("vgg16", 90, "3")])})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.entries["changed"] == [key("resnet18", 90), key("resnet18", 95)]
    # a new URL of the same file: the record stands; a new normalization: a new result
    assert [leg.model_key for leg in plan.include] == [key("resnet18", 90)]
    assert plan.skipped == [{"model_key": key("resnet18", 95), "sha256": sha("2"),
                             "reason": f"a record for this checkpoint and protocol {PROTOCOL} exists"}]


def test_an_entry_without_sha256_cannot_be_evaluated(repo):
    head = branch(repo, {f"submissions/{OTHER_AP}/manifest.yaml": manifest_text(OTHER_AP, [
        model("resnet18", 99, "9"), model("vgg16", 99, None)])})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.entries["added"] == [key("vgg16", 99, OTHER_AP)]
    assert not plan.evaluate
    assert plan.skipped[0]["sha256"] is None and "apb lock" in plan.skipped[0]["reason"]


def test_a_change_outside_submission_data_is_planned_as_no_evaluation(repo, tmp_path):
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest_text(AP, [model("vgg16", 99, "7")]),
                         "evaluator/__init__.py": "import os\n"})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.blocked_files == ["evaluator/__init__.py"]
    assert not plan.evaluate and plan.include == [] and plan.entries["added"] == []
    assert plan.reason.startswith("no evaluation: the change touches 1 file(s)")
    assert "evaluator/__init__.py" in plan.reason
    with pytest.raises(APBError, match="refusing to extract"):
        extract_data(repo, plan, tmp_path / "stage")
    assert not (tmp_path / "stage").exists()


@pytest.mark.parametrize("path", [f"submissions/{AP}/records/{key()}__{PROTOCOL}.json", f"submissions/{AP}/README.md",
                                  ".github/workflows/evaluate.yml", "submissions/not-an-ap-key/manifest.yaml"])
def test_records_workflows_and_stray_files_block_evaluation(repo, path):
    head = branch(repo, {path: "{}\n", f"submissions/{AP}/taxonomy.json": '{"changed": true}\n'})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.blocked_files == [path] and not plan.evaluate


def test_the_diff_is_taken_from_the_merge_base(repo):
    head = branch(repo, {f"submissions/{OTHER_AP}/manifest.yaml": manifest_text(OTHER_AP, [
        model("resnet18", 99, "9"), model("resnet18", 95, "8")])})
    commit(repo, {"evaluator/__init__.py": "# main moved on\n"}, "main advances")  # not part of the PR
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.changed_files == [f"submissions/{OTHER_AP}/manifest.yaml"]
    assert [leg.model_key for leg in plan.include] == [key("resnet18", 95, OTHER_AP)]
    assert plan.merge_base == git(repo, "rev-parse", "main~1")


def test_a_manifest_that_does_not_load_is_a_problem_not_a_crash(repo):
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": "schema_version: 1\nap_key: [oops\n"})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert not plan.evaluate and plan.problems
    assert plan.problems[0].file == f"submissions/{AP}/manifest.yaml"


def test_a_symlinked_manifest_is_refused(repo):
    git(repo, "checkout", "-q", "-b", "pr")
    target = repo / f"submissions/{AP}/manifest.yaml"
    target.unlink()
    target.symlink_to("/etc/passwd")
    head = commit(repo, {}, "symlink")
    git(repo, "checkout", "-q", "main")
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert not plan.evaluate and "not a regular file" in plan.problems[0].message


def test_a_big_model_is_split_into_shard_legs(repo):
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest_text(AP, [
        model("resnet18", 90, "1"), model("resnet18", 95, "2"), model("vgg16", 90, "3"),
        model("vgg16", 99, "6"), model("resnet18", 99, "7")])})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=parse_shards("vgg16=3"))
    legs = [(leg.model_key, leg.shard, leg.leg) for leg in plan.include]
    assert legs == [(key("resnet18", 99), None, key("resnet18", 99)),
                    (key("vgg16", 99), "1/3", f"{key('vgg16', 99)}-shard-1-of-3"),
                    (key("vgg16", 99), "2/3", f"{key('vgg16', 99)}-shard-2-of-3"),
                    (key("vgg16", 99), "3/3", f"{key('vgg16', 99)}-shard-3-of-3")]
    cache_keys = [leg.cache_key for leg in plan.include]
    assert len(set(cache_keys)) == 4 and cache_keys[1].endswith("-shard-1-of-3")
    assert plan.reason == "2 model(s) to evaluate in 4 leg(s)"


@pytest.mark.parametrize("spec, expected", [("1", {"*": 1}), (" 4 ", {"*": 4}), ("", {"*": 1}),
                                            ("vgg16=4,resnet18=2", {"vgg16": 4, "resnet18": 2, "*": 1}),
                                            ("vgg16=4,*=2", {"vgg16": 4, "*": 2})])
def test_shard_specs(spec, expected):
    assert parse_shards(spec) == expected


@pytest.mark.parametrize("spec", ["0", "vgg16=x", "65", "vgg16=-1"])
def test_bad_shard_specs_are_clear_errors(spec):
    with pytest.raises(APBError, match="number of shards must be 1 to 64"):
        parse_shards(spec)


def test_a_first_push_diffs_against_the_empty_tree(repo):
    plan = plan_change(repo, "0" * 40, "main", protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.merge_base == EMPTY_TREE and plan.blocked_files  # everything is new, code included
    assert not plan.evaluate


def test_missing_records_of_the_checkout(repo):
    records = repo / "submissions" / AP / "records"
    records.mkdir()
    write_evaluated(records, key("resnet18", 90), sha("1"))
    write_evaluated(records, key("resnet18", 95), sha("0"))  # a record of an older checkpoint
    plan = plan_missing(repo, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert [leg.model_key for leg in plan.include] == [key("resnet18", 95), key("vgg16", 90),
                                                       key("resnet18", 99, OTHER_AP)]


def test_missing_records_are_planned_from_the_state_of_main_not_a_window_of_pushes(repo):
    """Three quick merges; GitHub cancels the pending leaderboard run of the middle one. The run of the last
    push still plans the middle merge's entries: the plan looks at every manifest, not at what one push changed."""
    for index, checkpoint in enumerate("678"):
        entries = [model("resnet18", 99, "9")] + [model("vgg16", s, c) for s, c in zip((90, 95, 99), "678"[:index + 1])]
        commit(repo, {f"submissions/{OTHER_AP}/manifest.yaml": manifest_text(OTHER_AP, entries)}, f"merge {index}")
    plan = plan_missing(repo, protocols=[PROTOCOL], shards=NO_SHARDS)
    planned = {leg.model_key for leg in plan.include}
    assert {key("vgg16", 90, OTHER_AP), key("vgg16", 95, OTHER_AP), key("vgg16", 99, OTHER_AP)} <= planned


def test_one_broken_manifest_on_main_does_not_hold_back_the_others(repo):
    commit(repo, {f"submissions/{AP}/manifest.yaml": "schema_version: 1\nap_key: [oops\n"}, "a broken merge")
    plan = plan_missing(repo, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert [leg.model_key for leg in plan.include] == [key("resnet18", 99, OTHER_AP)]
    assert [p.file for p in plan.problems] == [f"submissions/{AP}/manifest.yaml"]
    assert plan.evaluate and "problem(s), their files left out" in plan.reason


def test_every_evaluable_leaderboard_protocol_is_planned_each_for_its_missing_records(repo, tmp_path, monkeypatch):
    """With a second leaderboard protocol (another threat model), `apb ci plan --missing` plans each model under
    each protocol that lacks its record; the plan lists the protocols and every leg names its own."""
    import shutil

    from evaluator.protocol import PROTOCOLS_DIR, PROTOCOLS_DIR_VARIABLE

    protocols = tmp_path / "protocols"
    shutil.copytree(PROTOCOLS_DIR, protocols)
    text = (PROTOCOLS_DIR / "smoke-v1.yaml").read_text().replace("id: smoke-v1", "id: l2-smoke")
    (protocols / "l2-smoke.yaml").write_text(text.replace("leaderboard: false", "leaderboard: true")
                                             .replace("norm: Linf", "norm: L2").replace('eps: "8/255"', 'eps: "1/2"'))
    monkeypatch.setenv(PROTOCOLS_DIR_VARIABLE, str(protocols))
    records = repo / "submissions" / AP / "records"
    records.mkdir()
    write_evaluated(records, key("resnet18", 90), sha("1"))  # its PROTOCOL record: only l2-smoke is missing
    out = tmp_path / "plan.json"
    assert main(["ci", "plan", "--missing", "--root", str(repo), "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert schema_problems(plan, CI_SCHEMAS / "plan.schema.json", "plan") == []
    assert plan["protocol"] == "l2-smoke" and plan["protocols"] == ["l2-smoke", PROTOCOL]
    legs = [(leg["model_key"], leg["protocol"]) for leg in plan["include"]]
    assert (key("resnet18", 90), "l2-smoke") in legs and (key("resnet18", 90), PROTOCOL) not in legs
    assert (key("vgg16", 90), "l2-smoke") in legs and (key("vgg16", 90), PROTOCOL) in legs


@pytest.mark.parametrize("refused", ["symlink", "too big"])
def test_a_refused_taxonomy_blob_is_a_problem_in_the_written_plan(repo, tmp_path, refused, capsys):
    git(repo, "checkout", "-q", "-b", "pr")
    target = repo / f"submissions/{AP}/taxonomy.json"
    target.unlink()
    if refused == "symlink":
        target.symlink_to("/etc/passwd")
    else:
        target.write_text("{}" + " " * 1_100_000)
    (repo / f"submissions/{AP}/manifest.yaml").write_text(manifest_text(AP, [model("vgg16", 95, "5")]))
    head = commit(repo, {}, "refused blob")
    git(repo, "checkout", "-q", "main")
    out, stage = tmp_path / "plan.json", tmp_path / "stage"
    assert main(["ci", "plan", "--base", "main", "--head", head, "--root", str(repo), "--protocol", PROTOCOL,
                 "--extract", str(stage), "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert not plan["evaluate"] and plan["include"] == []
    assert plan["problems"][0]["file"] == f"submissions/{AP}/taxonomy.json"
    assert ("not a regular file" if refused == "symlink" else "over the 1,000,000-byte limit") in \
        plan["problems"][0]["message"]
    assert not stage.exists()  # nothing extracted
    assert "problem: submissions/" in capsys.readouterr().err


def test_generated_files_in_a_data_pr_neither_block_nor_get_extracted(repo, tmp_path):
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest_text(AP, [model("vgg16", 95, "5")]),
                         "taxonomy/README.md": "regenerated by the author\n",
                         "leaderboard/README.md": "regenerated by the author\n"})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS)
    assert plan.blocked_files == [] and plan.evaluate
    stage = tmp_path / "stage"
    assert extract_data(repo, plan, stage) == [f"submissions/{AP}/manifest.yaml"]
    assert not (stage / "taxonomy").exists() and not (stage / "leaderboard").exists()


def test_plan_command_writes_plan_outputs_and_extracts_the_data(repo, tmp_path, capsys):
    new_manifest = manifest_text(AP, [model("resnet18", 90, "1"), model("resnet18", 95, "2"),
                                      model("vgg16", 90, "3"), model("vgg16", 95, "5")])
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": new_manifest,
                         f"submissions/{AP}/taxonomy.json": None})
    stage = tmp_path / "stage"
    (stage / "submissions" / AP).mkdir(parents=True)
    (stage / "submissions" / AP / "taxonomy.json").write_text("{}\n")  # the base's copy, deleted by the PR
    out, github_output = tmp_path / "plan.json", tmp_path / "github_output"
    assert main(["ci", "plan", "--base", "main", "--head", head, "--root", str(repo), "--protocol", PROTOCOL,
                 "--shards", "1", "--extract", str(stage), "--out", str(out),
                 "--github-output", str(github_output)]) == 0
    plan = json.loads(out.read_text())
    assert schema_problems(plan, CI_SCHEMAS / "plan.schema.json", "plan") == []
    assert plan["head"] == head and plan["evaluate"] is True
    assert [leg["model_key"] for leg in plan["include"]] == [key("vgg16", 95)]
    lines = github_output.read_text().splitlines()
    assert lines[0] == "evaluate=true"
    assert json.loads(lines[1].removeprefix("matrix=")) == {"include": plan["include"]}
    assert (stage / "submissions" / AP / "manifest.yaml").read_text() == new_manifest
    assert not (stage / "submissions" / AP / "taxonomy.json").exists()
    assert "1 model(s) to evaluate in 1 leg(s)" in capsys.readouterr().err


def test_plan_command_refuses_a_revision_that_looks_like_an_option(repo, capsys):
    assert main(["ci", "plan", "--base=--output=/tmp/x", "--head", "main", "--root", str(repo),
                 "--protocol", PROTOCOL]) == 1
    assert "is not a git revision" in capsys.readouterr().err


def test_a_change_to_another_authors_ap_is_pointed_out_to_the_reviewer(repo):
    commit(repo, {f"submissions/{AP}/taxonomy.json": json.dumps({"authors": ["alice", "bob"]}) + "\n"}, "authors")
    # the PR also lists its author among the authors: only the merge base's list counts
    head = branch(repo, {f"submissions/{AP}/manifest.yaml": manifest_text(AP, [model("vgg16", 95, "5")]),
                         f"submissions/{AP}/taxonomy.json": json.dumps({"authors": ["mallory"]}) + "\n",
                         f"submissions/{OTHER_AP}/manifest.yaml": manifest_text(OTHER_AP, [model("vgg16", 99, "8")]),
                         "submissions/NEW_Doe2024New/taxonomy.json": "{}\n"})
    plan = plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS, pr_author="mallory")
    assert plan.ownership == [
        {"ap_key": AP, "files": [f"submissions/{AP}/manifest.yaml", f"submissions/{AP}/taxonomy.json"],
         "authors": ["alice", "bob"]},
        {"ap_key": OTHER_AP, "files": [f"submissions/{OTHER_AP}/manifest.yaml"], "authors": []}]
    assert plan_change(repo, "main", head, protocols=[PROTOCOL], shards=NO_SHARDS, pr_author="Alice").ownership[0][
        "ap_key"] == OTHER_AP  # an author of the AP changes it: no note for that AP
    assert schema_problems(plan.to_dict(), CI_SCHEMAS / "plan.schema.json", "plan") == []

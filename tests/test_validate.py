"""``apb validate`` on bad input: each class is refused with its file, line, field and what to do, exit 1, and
nothing on disk changes. Each test copies two real APs (HYDRA: unstructured; TwinRep: structured and
unstructured) and the taxonomy files into a temporary repository and breaks one thing."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from evaluator import cli
from evaluator.record.records import PerSample, record_stem, summarize, write_record
from evaluator.registry.norms import threat_model
from evaluator.repository.manifest import url_problem
from evaluator.repository.validate import select_problems, validate_paths

ROOT = Path(__file__).resolve().parents[1]
HYDRA = "HYDRA_Sehwag2020Hydra"
TWINREP = "TwinRep_Li2023Learning"
HYDRA_KEY = f"{HYDRA}_R18_CIFAR10_US_90"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "taxonomy", tmp_path / "taxonomy")
    for ap in (HYDRA, TWINREP):
        shutil.copytree(ROOT / "submissions" / ap, tmp_path / "submissions" / ap)
    for path in (tmp_path / "submissions" / TWINREP / "records").glob("*_SVHN_*"):
        path.unlink()  # fewer files, faster runs; HYDRA keeps its SVHN records (cells without checkpoints)
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple]:
    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        state[path.relative_to(root).as_posix()] = (stat.st_mtime_ns, content)
    return state


def validate(repo: Path, *args: str, ok: bool = False) -> list[dict]:
    """Run ``apb validate --root repo --format json``; check the exit code and that nothing was written."""
    before = snapshot(repo)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["validate", "--root", str(repo), "--format", "json", *args])
    result = json.loads(out.getvalue())
    assert code == (0 if ok else 1), result["problems"]
    assert result["ok"] is ok
    assert snapshot(repo) == before, "apb validate changed files"
    return result["problems"]


def expect(problems: list[dict], file: str, field: str | None, *words: str) -> dict:
    """The problem of *file* and *field* whose message holds all *words*; fails listing what was found."""
    for problem in problems:
        if problem["file"] == file and problem["field"] == field and all(w in problem["message"] for w in words):
            assert problem["line"] is None or problem["line"] >= 1
            return problem
    raise AssertionError(f"no problem {file} {field} {words}; got:\n" + "\n".join(map(str, problems)))


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def manifest(repo: Path, ap: str = HYDRA) -> Path:
    return repo / "submissions" / ap / "manifest.yaml"


def taxonomy(repo: Path, ap: str = HYDRA) -> Path:
    return repo / "submissions" / ap / "taxonomy.json"


def record(repo: Path, key: str = HYDRA_KEY, protocol: str = "published-2024") -> Path:
    return repo / "submissions" / key.split("_R18")[0].split("_V16")[0] / "records" / f"{key}__{protocol}.json"


def rel(path: Path, repo: Path) -> str:
    return path.relative_to(repo).as_posix()


def add_evaluated_record(repo: Path, key: str = HYDRA_KEY, protocol: str = "linf-8-255-v1",
                         n: int = 10000, ap: str = HYDRA) -> Path:
    """A consistent evaluated record with its per-sample sidecar, as apb evaluate writes them."""
    rng = np.random.default_rng(0)
    clean = rng.random(n) < 0.8
    per_sample = PerSample(np.arange(n), clean_correct=clean, aa_robust=clean & (rng.random(n) < 0.5),
                           hofmn_distance=np.where(clean, rng.random(n).astype(np.float32) * 0.1, 0))
    directory = repo / "submissions" / ap / "records"
    stem = record_stem(key, protocol)
    sha = per_sample.save(directory / f"{stem}.npz")
    summary = summarize(per_sample, threat_model("Linf", Fraction(8, 255)))
    parts = key.split("_")
    data = {"schema_version": 1, "model_key": key, "ap_key": ap,
            "architecture": {"R18": "resnet18", "V16": "vgg16"}[parts[-4]], "dataset": parts[-3],
            "structure_kind": parts[-2], "sparsity": int(parts[-1]), "source": "evaluated", "protocol": protocol,
            **summary, "checkpoint_sha256": "ab" * 32, "provenance": {"evaluator_version": "0.1.0"}, "flags": [],
            "check": None, "per_sample": {"file": f"{stem}.npz", "sha256": sha}}
    return write_record(data, directory)


# ------------------------------------------------------------------------------------------- the baseline


def test_the_small_repository_is_valid_and_so_is_an_evaluated_record(repo):
    assert validate(repo, ok=True) == []
    add_evaluated_record(repo)
    assert validate(repo, ok=True) == []


def test_real_repository_problems_print_as_file_line_field_message(repo):
    edit(manifest(repo), "sparsity: 95", "sparsity: 75")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["validate", "--root", str(repo)]) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"submissions/{HYDRA}/manifest.yaml:")
    assert ": models[1].sparsity: 75 is not allowed; use 90, 95, 99" in lines[0]
    assert lines[-1].endswith("1 problem(s)")


def test_validate_runs_as_a_subprocess_and_reports_every_problem_in_one_run(repo):
    edit(manifest(repo), "sparsity: 95", "sparsity: 75")
    edit_json(taxonomy(repo, TWINREP), lambda d: d.update(criterion="SPALWM"))
    edit_json(record(repo), lambda d: d.update(n_samples=0))
    result = subprocess.run([sys.executable, "-m", "evaluator.cli", "validate", "--root", str(repo)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == sorted(line.split(":")[0] for line in lines[:-1])
    assert len(lines) == 4 and lines[-1].endswith("3 problem(s)")


# -------------------------------------------------------------------------------------------- file format


@pytest.mark.parametrize("target, old, new, line, words", [
    ("manifest", "models:\n", "models: [\n", 19, "invalid YAML"),
    ("manifest", "  format: torch\n", "  format: torch\n  format: safetensors\n", 10, "duplicate key 'format'"),
    ("manifest", "  format: torch\n", "  format: &fmt torch\n", 9, "anchor &fmt"),
    ("manifest", "    dataset: CIFAR10\n", "    dataset: *ds\n", 20, "alias *ds"),
    ("manifest", "    dataset: CIFAR10\n", "    dataset: !!str CIFAR10\n", 20, "tag"),
    ("manifest", "defaults:\n", "<<: {x: 1}\ndefaults:\n", 8, "merge keys"),
    ("manifest", "schema_version: 1\n", "schema_version: 1\n---\n", 7, "more than one YAML document"),
    ("taxonomy", '"name": "HYDRA",', '"name": "HYDRA",,', 4, "invalid JSON"),
    ("taxonomy", '"name": "HYDRA",', '"name": "HYDRA",\n  "name": "HYDRA2",', 5, "duplicate key 'name'"),
    ("record", '"clean_accuracy": 76.74', '"clean_accuracy": NaN', 13, "non-finite"),
])
def test_malformed_files_are_refused(repo, target, old, new, line, words):
    path = {"manifest": manifest(repo), "taxonomy": taxonomy(repo), "record": record(repo)}[target]
    edit(path, old, new)
    problems = validate(repo)
    problem = next(p for p in problems if p["file"] == rel(path, repo))
    assert words in problem["message"] and problem["line"] == line


@pytest.mark.parametrize("target", ["manifest", "taxonomy", "record"])
def test_non_utf8_bytes_are_refused(repo, target):
    path = {"manifest": manifest(repo), "taxonomy": taxonomy(repo), "record": record(repo)}[target]
    path.write_bytes(path.read_bytes().replace(b"HYDRA", b"HYDR\xc3", 1))
    problem = expect(validate(repo), rel(path, repo), None, "is not UTF-8")
    assert problem["line"] >= 1


def test_a_file_over_one_megabyte_is_refused(repo):
    path = manifest(repo)
    path.write_text(path.read_text() + "# padding\n" * 120_000)
    expect(validate(repo), rel(path, repo), None, "larger than the 1,000,000-byte limit")


def test_a_manifest_that_is_not_a_mapping_is_refused(repo):
    manifest(repo).write_text("- just\n- a list\n")
    expect(validate(repo), rel(manifest(repo), repo), "(root)", "expected object")


# -------------------------------------------------------------------------------------------- schema rules


def test_unknown_fields_are_refused_everywhere(repo):
    edit(manifest(repo), "    sha256: null\n", "    sha256: null\n    checksum: abc\n")
    edit(manifest(repo), "  format: torch\n", "  format: torch\n  url: gdrive://abcdefghijkl\n")
    edit_json(taxonomy(repo), lambda d: d.update({"A: Pretraining ": "AT"}))
    edit_json(record(repo), lambda d: d["metrics"].update(pgd_accuracy=40.0))
    problems = validate(repo)
    expect(problems, rel(manifest(repo), repo), "models[0].checksum", "unknown field 'checksum'", "allowed here")
    expect(problems, rel(manifest(repo), repo), "defaults.url", "unknown field 'url'")
    expect(problems, rel(taxonomy(repo), repo), "A: Pretraining ", "unknown field")
    expect(problems, rel(record(repo), repo), "metrics.pgd_accuracy", "unknown field")


@pytest.mark.parametrize("old, new, field, words", [
    ("sparsity: 90", 'sparsity: "90"', "models[0].sparsity", "expected integer, got string '90'"),
    ("sparsity: 90", "sparsity: 90.0", "models[0].sparsity", "expected integer, got number 90.0"),
    ("sparsity: 90", "sparsity: true", "models[0].sparsity", "expected integer, got boolean"),
    ("schema_version: 1", "schema_version: 2", "schema_version", "must be 1"),
    ("  normalization: none", "  normalization: {mean: [0.5, 0.5], std: [0.5, 0.5, 0.5]}",
     "defaults.normalization.mean", "too short"),
    ("  normalization: none", "  normalization: {mean: [0.5, 0.5, 0.5], std: [0.5, 0, 0.5]}",
     "defaults.normalization.std[1]", "less than or equal to the minimum"),
    ("  normalization: none", "  normalization: imagenet", "defaults.normalization", "none, or {mean: [r, g, b]"),
    ("  state_dict_key: state_dict", "  state_dict_key: ../../etc", "defaults.state_dict_key", "wrong form"),
    ("  format: torch", "  format: pickle", "defaults.format", "'pickle' is not allowed; use torch, safetensors"),
])
def test_wrong_types_and_values_in_a_manifest(repo, old, new, field, words):
    edit(manifest(repo), old, new)
    expect(validate(repo), rel(manifest(repo), repo), field, words)


def test_wrong_types_in_taxonomy_and_record(repo):
    edit_json(taxonomy(repo), lambda d: d.update(year="2020", structure="US"))
    edit_json(record(repo), lambda d: d.update(sparsity="90", n_samples=-1))
    problems = validate(repo)
    expect(problems, rel(taxonomy(repo), repo), "year", "expected integer, got string '2020'")
    expect(problems, rel(taxonomy(repo), repo), "structure", "expected array")
    expect(problems, rel(record(repo), repo), "sparsity", "is not allowed")
    expect(problems, rel(record(repo), repo), "n_samples", "less than the minimum of 1")


def test_unknown_vocabulary_values_are_refused(repo):
    def change(d: dict) -> None:
        d.update(criterion="SPALWM", locality=["L", "X"])
        d["pipeline"]["pretraining"] = {"methods": ["AT", "MADRY"], "adversarial_training": "CW"}
    edit_json(taxonomy(repo), change)
    problems = validate(repo)
    file = rel(taxonomy(repo), repo)
    expect(problems, file, "criterion", "'SPALWM' is not allowed", "RELWM")
    expect(problems, file, "locality[1]", "'X' is not allowed")
    expect(problems, file, "pipeline.pretraining.methods[1]", "'MADRY' is not allowed")
    expect(problems, file, "pipeline.pretraining.adversarial_training", "'CW' is not allowed", "PGD, TRADES")


@pytest.mark.parametrize("change, field, words", [
    (lambda d: d["pipeline"].update(pruning_step={"methods": ["AT"]}), "pipeline.pruning_step", ("not allowed here",)),
    (lambda d: d["pipeline"].pop("finetuning"), "pipeline.finetuning",
     ("missing required field", "pretraining, finetuning and schedule")),
    (lambda d: d["pipeline"].update(schedule=["n.s.", "1S"]), "pipeline.schedule", ("stands alone",)),
    (lambda d: d["pipeline"]["finetuning"].update(methods=["None", "AT"]), "pipeline.finetuning.methods",
     ("\"None\" stands alone",)),
    (lambda d: d["pipeline"].update(finetuning={"methods": ["KD"], "adversarial_training": "PGD"}),
     "pipeline.finetuning.methods", ("names the attack of an AT step",)),
    (lambda d: d.update(granularity="filters"), "structure", ("only for structured (S) pruning",)),
    (lambda d: d.update(structure=["US", "US"]), "structure", ("non-unique",)),
    (lambda d: d.update(name="HYDRA | <script>"), "name", ("wrong form",)),
    (lambda d: d.update(title="HYDRA\u202e evil"), "title", ("bidirectional",)),
    (lambda d: d.update(title="two\nlines"), "title", ("one line",)),
    (lambda d: d.update(paper_url="http://arxiv.org/pdf/2002.10509.pdf"), "paper_url", ("use an https:// URL",)),
    (lambda d: d.update(code_url="javascript:alert(1)"), "code_url", ("https://",)),
    (lambda d: d.update(paper_url="https://user:pw@example.org/x"), "paper_url", ("no user:password@",)),
])
def test_taxonomy_rules(repo, change, field, words):
    edit_json(taxonomy(repo), change)
    expect(validate(repo), rel(taxonomy(repo), repo), field, *words)


@pytest.mark.parametrize("old, new, field", [
    ("sparsity: 95", "sparsity: 75", "models[1].sparsity"),
    ("sparsity: 95", "sparsity: 80", "models[1].sparsity"),
])
def test_sparsity_must_suit_the_structure(repo, old, new, field):
    edit(manifest(repo), old, new)
    expect(validate(repo), rel(manifest(repo), repo), field, "use 90, 95, 99", "weights (unstructured)")


def test_structured_sparsity_must_be_50_75_or_90(repo):
    edit(manifest(repo, TWINREP), "    structure: filters\n    sparsity: 50", "    structure: filters\n    sparsity: 95")
    problems = validate(repo)
    problem = expect(problems, rel(manifest(repo, TWINREP), repo), "models[3].sparsity", "use 50, 75, 90")
    assert problem["line"] == 42


@pytest.mark.parametrize("url, words", [
    ("http://example.org/model.pt", "http:// is not allowed; use https://"),
    ("ftp://example.org/model.pt", "unsupported URL scheme ftp://"),
    ("file:///tmp/model.pt", "file:// URLs are for local use"),
    ("https://user:secret@example.org/model.pt", "credentials"),
    ("https://example.org/my model.pt", "spaces"),
    ("https:///model.pt", "no valid host"),
    ("gdrive://../../etc/passwd", "gdrive://<file id>"),
    ("hf://owner/repo/../../secret@main", "hf://<owner>/<repo>/<path in repo>"),
    ("javascript:alert(1)", "use https://"),
])
def test_checkpoint_urls_must_be_https_gdrive_or_hf(repo, url, words):
    edit(manifest(repo), "url: gdrive://1uHEhTIZdE4bzRY8HWw4SoQX5RhyCZgtP", f"url: {url}")
    expect(validate(repo), rel(manifest(repo), repo), "models[0].url", words)


def test_file_urls_pass_only_with_the_flag(repo):
    edit(manifest(repo), "url: gdrive://1uHEhTIZdE4bzRY8HWw4SoQX5RhyCZgtP", "url: file:///tmp/model.pt")
    validate(repo)
    assert validate(repo, "--allow-file-urls", ok=True) == []


def test_url_problem_accepts_the_documented_forms():
    for url in ("https://huggingface.co/x/y/resolve/" + "0" * 40 + "/m.safetensors", "gdrive://1uHEhTIZdE4bzRY8HWw4SoQX5",
                "hf://owner/repo/sub/model.safetensors@" + "0" * 40):
        assert url_problem(url, allow_file_urls=False) is None, url


@pytest.mark.parametrize("sha, words", [
    ("A" * 64, "wrong form"),
    ("abc123", "wrong form"),
    ("g" * 64, "wrong form"),
])
def test_malformed_sha256_is_refused(repo, sha, words):
    edit(manifest(repo), "    sha256: null\n", f"    sha256: {sha}\n")
    expect(validate(repo), rel(manifest(repo), repo), "models[0].sha256", words, "64 lowercase hex")


def test_a_new_entry_needs_a_sha256(repo):
    edit(manifest(repo), "    sha256: null\n    imported: original-benchmark\n", "")
    problems = validate(repo)
    expect(problems, rel(manifest(repo), repo), "models[0].sha256", "missing required field", "apb lock")
    edit(manifest(repo), "    url: gdrive://1uHEhTIZdE4bzRY8HWw4SoQX5RhyCZgtP",
         "    url: gdrive://1uHEhTIZdE4bzRY8HWw4SoQX5RhyCZgtP\n    sha256: null")
    expect(validate(repo), rel(manifest(repo), repo), "models[0].sha256", "expected string, got null", "apb lock")


def test_imported_marker_is_only_the_original_benchmark(repo):
    edit(manifest(repo), "imported: original-benchmark", "imported: my-lab")
    expect(validate(repo), rel(manifest(repo), repo), "models[0].imported", "must be 'original-benchmark'")


@pytest.mark.parametrize("ap_key", ["../x", "a/b", "BCSP_\u00d6zdenizc2021Training", "HYDRA", "x_y2020;rm"])
def test_bad_ap_keys_are_refused(repo, ap_key):
    edit(manifest(repo), f"ap_key: {HYDRA}", f"ap_key: \"{ap_key}\"")
    edit_json(taxonomy(repo), lambda d: d.update(ap_key=ap_key))
    problems = validate(repo)
    for path in (manifest(repo), taxonomy(repo)):
        expect(problems, rel(path, repo), "ap_key", "wrong form", "ASCII <Name>_<FirstAuthor><Year>")
        expect(problems, rel(path, repo), "ap_key", "differs from the directory name")


def test_non_ascii_directory_names_are_refused(repo):
    bad = repo / "submissions" / "BCSP_\u00d6zdenizc2021Training"
    (repo / "submissions" / HYDRA).rename(bad)
    problems = validate(repo)
    expect(problems, rel(bad, repo), None, "not a valid ap_key")


def test_directory_name_must_equal_ap_key(repo):
    moved = repo / "submissions" / "HYDRA_Sehwag2020Other"
    (repo / "submissions" / HYDRA).rename(moved)
    problems = validate(repo)
    expect(problems, f"submissions/HYDRA_Sehwag2020Other/manifest.yaml", "ap_key", "differs from the directory name")
    expect(problems, f"submissions/HYDRA_Sehwag2020Other/taxonomy.json", "ap_key", "differs from the directory name")
    expect(problems, f"submissions/HYDRA_Sehwag2020Other/records/{HYDRA_KEY}__published-2024.json", "ap_key",
           "the record belongs in submissions/HYDRA_Sehwag2020Hydra/records/")


def test_a_manifest_needs_a_taxonomy(repo):
    taxonomy(repo).unlink()
    problems = validate(repo)
    expect(problems, rel(manifest(repo), repo), None, "no taxonomy.json beside it")
    expect(problems, rel(taxonomy(repo), repo), None, "missing")


def test_model_keys_are_unique_across_aps(repo):
    copy = repo / "submissions" / "Copy_Sehwag2020Hydra"
    shutil.copytree(repo / "submissions" / HYDRA, copy)
    shutil.rmtree(copy / "records")
    edit_json(copy / "taxonomy.json", lambda d: d.update(ap_key="Copy_Sehwag2020Hydra"))
    problems = validate(repo)
    expect(problems, rel(manifest(repo), repo), "models[0]", f"model key {HYDRA_KEY} is also declared in "
                                                              "submissions/Copy_Sehwag2020Hydra/manifest.yaml")
    expect(problems, "submissions/Copy_Sehwag2020Hydra/manifest.yaml", "models[0]", "must be unique")
    expect(problems, rel(taxonomy(repo), repo), "name", "'HYDRA' is already the name of Copy_Sehwag2020Hydra",
           "display names must be unique")


def test_two_entries_cannot_map_to_one_key(repo):
    path = manifest(repo, TWINREP)
    text = path.read_text()
    start = text.index("  - architecture: resnet18\n    dataset: CIFAR10\n    structure: filters\n    sparsity: 50")
    entry = text[start:text.index("  - architecture", start + 10)]
    path.write_text(text + entry.replace("structure: filters", "structure: channels"))
    problems = validate(repo)
    expect(problems, rel(path, repo), "models[12]", "same model key TwinRep_Li2023Learning_R18_CIFAR10_S_50 as "
                                                    "models[3]", "filters and channels")


def test_a_manifest_needs_a_complete_triple(repo):
    edit(manifest(repo), "sparsity: 95", "sparsity: 99", count=2)  # R18 and V16 lose 95, R18 holds 99 twice
    problems = validate(repo)
    expect(problems, rel(manifest(repo), repo), "models[2]", "same model key")
    path = manifest(repo)
    text = path.read_text()
    start = text.index("  - architecture: resnet18\n    dataset: CIFAR10\n    structure: weights\n    sparsity: 99")
    path.write_text(text[:start] + text[text.index("  - architecture", start + 10):])
    expect(validate(repo), rel(path, repo), "models", "no complete (architecture, dataset, structure) triple",
           "resnet18 CIFAR10 weights: 90, 99")


def test_entries_must_suit_the_taxonomy_structure(repo):
    edit_json(taxonomy(repo, TWINREP), lambda d: d.update(structure=["US"], granularity=None) or d.pop("granularity"))
    problems = validate(repo)
    expect(problems, rel(manifest(repo, TWINREP), repo), "models[3].structure", "is S but the taxonomy entry")
    edit_json(taxonomy(repo, TWINREP), lambda d: d.update(structure=["S", "US"], granularity="channels"))
    expect(validate(repo), rel(manifest(repo, TWINREP), repo), "models[3].structure",
           "differs from the taxonomy's granularity 'channels'")


# ------------------------------------------------------------------------------------------------- records


def test_an_evaluated_record_must_match_a_manifest_entry(repo):
    add_evaluated_record(repo, key=f"{HYDRA}_V16_CIFAR10_US_99")  # the original benchmark has no such checkpoint
    expect(validate(repo), rel(record(repo, f"{HYDRA}_V16_CIFAR10_US_99", "linf-8-255-v1"), repo), "model_key",
           "matches no entry of submissions/HYDRA_Sehwag2020Hydra/manifest.yaml")


def test_a_published_record_must_be_a_published_cell(repo):
    source = record(repo)
    target = record(repo, f"{HYDRA}_R18_CIFAR10_S_50")
    shutil.copy(source, target)
    edit_json(target, lambda d: d.update(model_key=f"{HYDRA}_R18_CIFAR10_S_50", structure_kind="S", sparsity=50))
    expect(validate(repo), rel(target, repo), "model_key", "not allowed", "154 cells")


@pytest.mark.parametrize("protocol, words", [
    ("smoke-v1", "not a leaderboard protocol"),
    ("linf-9-255-v7", "unknown protocol 'linf-9-255-v7'"),
])
def test_records_need_a_leaderboard_protocol(repo, protocol, words):
    path = add_evaluated_record(repo, protocol=protocol, n=16 if protocol == "smoke-v1" else 10000)
    expect(validate(repo), rel(path, repo), "protocol", words)


def test_path_like_protocols_are_refused_without_reading_them(repo):
    edit_json(record(repo), lambda d: d.update(protocol="../../../etc/passwd"))
    expect(validate(repo), rel(record(repo), repo), "protocol", "wrong form")


def test_record_file_name_fields_and_directory_must_agree(repo):
    renamed = record(repo).with_name(f"{HYDRA}_R18_CIFAR10_US_95__published-2024.json")
    record(repo, f"{HYDRA}_R18_CIFAR10_US_95").unlink()
    record(repo).rename(renamed)
    edit_json(record(repo, f"{HYDRA}_R18_CIFAR10_US_99"), lambda d: d.update(architecture="vgg16"))
    problems = validate(repo)
    expect(problems, rel(renamed, repo), None, f"name it {HYDRA_KEY}__published-2024.json")
    expect(problems, rel(record(repo, f"{HYDRA}_R18_CIFAR10_US_99"), repo), "architecture",
           "the model key HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_99 says 'resnet18'")


def test_records_in_another_aps_directory_are_refused(repo):
    moved = repo / "submissions" / TWINREP / "records" / record(repo).name
    record(repo).rename(moved)
    expect(validate(repo), rel(moved, repo), "ap_key", "the record belongs in submissions/HYDRA_Sehwag2020Hydra")


def test_published_numbers_must_be_plausible(repo):
    edit_json(record(repo), lambda d: d["metrics"].update(aa_robust_accuracy=99.0))
    edit_json(record(repo, f"{HYDRA}_R18_CIFAR10_US_95"), lambda d: d["metrics"].update(clean_accuracy=101))
    edit_json(record(repo, f"{HYDRA}_R18_CIFAR10_US_99"), lambda d: d.update(counts={"clean_correct": 1}))
    problems = validate(repo)
    expect(problems, rel(record(repo), repo), "metrics.aa_robust_accuracy", "cannot exceed clean accuracy")
    expect(problems, rel(record(repo, f"{HYDRA}_R18_CIFAR10_US_95"), repo), "metrics.clean_accuracy",
           "greater than the maximum of 100")
    expect(problems, rel(record(repo, f"{HYDRA}_R18_CIFAR10_US_99"), repo), "counts", "expected null",
           "only the published numbers")


def test_evaluated_numbers_must_agree_with_their_counts(repo):
    path = add_evaluated_record(repo)

    def change(d: dict) -> None:
        d["metrics"]["aa_robust_accuracy"] += 1.0
        d["counts"]["worst_case_robust"] = d["counts"]["clean_correct"] + 1
        d["intervals"]["clean_accuracy"] = [0.0, 1.0]
    edit_json(path, change)
    problems = validate(repo)
    expect(problems, rel(path, repo), "metrics.aa_robust_accuracy", "counts.aa_robust/n_samples gives")
    expect(problems, rel(path, repo), "counts.worst_case_robust", "cannot exceed clean_correct")
    expect(problems, rel(path, repo), "counts.worst_case_robust", "cannot exceed aa_robust or hofmn_robust")
    expect(problems, rel(path, repo), "intervals.clean_accuracy", "does not contain the metric")


def test_evaluated_records_need_their_sidecar(repo):
    path = add_evaluated_record(repo)
    sidecar = path.with_suffix(".npz")
    sidecar.write_bytes(sidecar.read_bytes() + b"x")
    expect(validate(repo), rel(path, repo), "per_sample.sha256", "the sidecar was changed")
    sidecar.unlink()
    expect(validate(repo), rel(path, repo), "per_sample.file", "is missing")


def test_evaluated_sidecars_must_hold_the_protocols_samples(repo):
    """A sidecar of other samples (here the first 10,000 shifted by one: counts, sums and sha256 all consistent)
    is refused: a record's numbers are on the protocol's first n_samples test samples, in order."""
    path = add_evaluated_record(repo)
    sidecar = path.with_suffix(".npz")
    stored = PerSample.load(sidecar)
    samples = PerSample(**{**stored.arrays, "sample_index": stored.sample_index + 1})
    digest = samples.save(sidecar)
    edit_json(path, lambda d: d["per_sample"].update(sha256=digest))
    expect(validate(repo), rel(path, repo), "per_sample.file", "its sample_index must be 0, 1, ..., 9999 in order")


def test_orphan_sidecars_are_refused(repo):
    path = add_evaluated_record(repo)
    path.unlink()
    expect(validate(repo), rel(path.with_suffix(".npz"), repo), None, "no record refers to this sidecar")


def test_evaluated_records_must_use_the_pinned_checkpoint_and_the_protocol_size(repo):
    edit(manifest(repo), "    sha256: null\n", f"    sha256: {'cd' * 32}\n")
    path = add_evaluated_record(repo)
    problems = validate(repo)
    expect(problems, rel(path, repo), "checkpoint_sha256", "made from another file")
    other = add_evaluated_record(repo, key=f"{HYDRA}_R18_CIFAR10_US_95", n=100)
    expect(validate(repo), rel(other, repo), "n_samples", "protocol linf-8-255-v1 evaluates 10000")


# ---------------------------------------------------------------------------------------- directory layout


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this system")
@pytest.mark.parametrize("where", ["ap_dir_file", "records_file", "ap_dir"])
def test_symbolic_links_are_refused(repo, tmp_path_factory, where):
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("secret")
    link = {"ap_dir_file": repo / "submissions" / HYDRA / "manifest.yaml",
            "records_file": record(repo, f"{HYDRA}_R18_SVHN_US_90"),
            "ap_dir": repo / "submissions" / "Linked_Sehwag2020Hydra"}[where]
    if link.exists():
        link.unlink()
    link.symlink_to(outside if where != "ap_dir" else repo / "submissions" / HYDRA)
    expect(validate(repo), rel(link, repo), None, "symbolic links are not allowed")


@pytest.mark.parametrize("name, kind", [("model.pt", "file"), (".DS_Store", "file"), ("extra", "dir"),
                                        ("records/notes.txt", "file"), ("records/sub", "dir"),
                                        ("README.md", "file")])
def test_unexpected_entries_in_an_ap_directory_are_refused(repo, name, kind):
    path = repo / "submissions" / HYDRA / name
    path.mkdir() if kind == "dir" else path.write_bytes(b"x")
    expect(validate(repo), rel(path, repo), None, "unexpected entry")


def test_unexpected_files_beside_the_ap_directories_are_refused(repo):
    (repo / "submissions" / "evil.sh").write_text("rm -rf /\n")
    (repo / "submissions" / "README.md").write_text("# Submissions\n")
    problems = validate(repo)
    assert [p["file"] for p in problems] == ["submissions/evil.sh"]
    expect(problems, "submissions/evil.sh", None, "submissions/ holds one directory per AP")


def test_directories_that_differ_only_in_case_are_refused(repo):
    shutil.copytree(repo / "submissions" / HYDRA, repo / "submissions" / "hydra_Sehwag2020Hydra")
    expect(validate(repo), "submissions/hydra_Sehwag2020Hydra", None, "only in letter case")


def test_a_broken_vocabulary_is_reported(repo):
    edit(repo / "taxonomy" / "vocabulary.yaml", '  "LIS": Least', '  "AT": Least')
    problems = validate(repo)
    expect(problems, "taxonomy/vocabulary.yaml", "fields.criterion.values.AT", "already a value of 'training'")


# ------------------------------------------------------------------------------------------------- paths


def test_paths_select_the_problems_of_those_files(repo):
    edit(manifest(repo), "sparsity: 95", "sparsity: 75")
    edit_json(taxonomy(repo, TWINREP), lambda d: d.update(criterion="SPALWM"))
    only_twinrep = validate(repo, str(repo / "submissions" / TWINREP))
    assert {p["file"] for p in only_twinrep} == {rel(taxonomy(repo, TWINREP), repo)}
    assert len(validate(repo)) == 2
    assert validate(repo, str(record(repo)), ok=True) == []


def test_paths_that_do_not_exist_or_lie_outside_are_problems(repo, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    problems = validate_paths(repo, [repo / "submissions" / "Nope_Nobody2020None", outside])
    assert [p.message.split(";")[0] for p in problems] == ["no such file or directory",
                                                           f"outside the repository {repo.resolve()}"]
    assert select_problems(repo, [], [repo]) == []


# ------------------------------------------------------------------------------------- the reading API


def test_load_manifest_merges_defaults_and_reads_git_show_text(repo):
    from evaluator.repository.manifest import Normalization, load_manifest

    path = manifest(repo)
    text = path.read_text().replace("    sparsity: 95\n", "    sparsity: 95\n    strip_prefix: \"module.\"\n"
                                    "    normalization: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n", 1)
    entries = load_manifest(path, text.encode())
    assert [entry.model_key for entry in entries][:2] == [HYDRA_KEY, f"{HYDRA}_R18_CIFAR10_US_95"]
    first, second = entries[0], entries[1]
    assert (first.state_dict_key, first.strip_prefix, first.normalization, first.format) == \
        ("state_dict", None, None, "torch")
    assert (second.state_dict_key, second.strip_prefix) == ("state_dict", "module.")
    assert second.normalization == Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert (first.line, first.index, second.index, first.structure_kind) == (19, 0, 1, "US")
    assert first.manifest_path == path and first.sha256 is None and first.imported == "original-benchmark"


def test_load_manifest_lists_every_problem_and_accepts_file_urls(repo):
    from evaluator.errors import APBError
    from evaluator.repository.manifest import load_manifest

    path = manifest(repo)
    text = path.read_text().replace("sparsity: 95", "sparsity: 75", 1).replace("torch", "pickle", 1)
    text = text.replace("gdrive://1uHEhTIZdE4bzRY8HWw4SoQX5RhyCZgtP", "file:///tmp/x.pt")
    with pytest.raises(APBError) as error:
        load_manifest(path, text)
    assert sorted(p.field for p in error.value.problems) == ["defaults.format", "models[1].sparsity"]
    assert load_manifest(path, path.read_text().replace("gdrive://1uHEhTIZdE4bzRY8HWw4SoQX5RhyCZgtP",
                                                        "file:///tmp/x.pt"))[0].url == "file:///tmp/x.pt"

"""The repository's own data: it validates, and it holds exactly the seed's APs, checkpoints and published cells."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from evaluator.registry.model_keys import model_key_maker
from evaluator.record.records import iter_record_paths, read_record
from evaluator.untrusted.safeio import dump_json
from evaluator.repository.submissions import iter_entries, iter_taxonomies, load_ap_taxonomy
from evaluator.repository.validate import validate_paths, validate_repository

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "seed"  # the reference facts every checkout and CI run has at ../shared


def seed_file(name: str) -> Path:
    path = SEED / name
    assert path.is_file(), f"{path} is missing: the seed facts live at ../shared/seed beside the repository"
    return path


def test_the_repository_validates():
    assert validate_paths(ROOT) == []


def test_counts():
    report = validate_repository(ROOT)
    assert report.summary() == {"aps": 26, "manifests": 10, "checkpoints": 83, "records": 154}
    stages = Counter(entry["pipeline"]["stage"] for entry in iter_taxonomies(ROOT))
    assert stages == {"after-training": 15, "before-training": 6, "during-training": 5}


def test_ap_keys_are_ascii_and_fixed_where_the_seed_was_wrong():
    keys = {entry["ap_key"] for entry in iter_taxonomies(ROOT)}
    assert all(key.isascii() for key in keys)
    assert {"RFP_Lim2021Robustness", "BCSP_Ozdenizci2021Training", "Deadwooding_Kaur2022Deadwooding"} <= keys
    assert not {"RSR_Lim2021Robustness", "DeadWooding_Kaur2022Deadwooding"} & keys
    assert load_ap_taxonomy("RFP_Lim2021Robustness")["name"] == "RFP"


def test_checkpoints_are_the_original_benchmarks():
    links = json.loads(seed_file("original-checkpoint-links.json").read_text())
    expected = {key: f"gdrive://{value['checkpoint']['gdrive_id']}"
                for key, value in links.items() if key != "_about" and value.get("checkpoint")}
    entries = list(iter_entries(ROOT))
    assert {entry.model_key: entry.url for entry in entries} == expected
    assert len(entries) == 83
    assert all(entry.sha256 is None and entry.imported == "original-benchmark" and entry.format == "torch"
               for entry in entries)
    structured = {(entry.ap_key, entry.structure) for entry in entries if entry.structure_kind == "S"}
    assert structured == {("RADMM_Ye2019Adversarial", "filters"), ("HARP_Zhao2023Holistic", "channels"),
                          ("TwinRep_Li2023Learning", "filters"), ("PwoA_Jian2022Pruning", "filters")}


def test_published_records_equal_the_published_csv():
    short_names = {entry["name"]: entry["ap_key"] for entry in iter_taxonomies(ROOT)}
    architectures = {"ResNet18": "resnet18", "VGG16": "vgg16"}
    expected = {}
    with open(seed_file("published-results.csv"), newline="") as handle:
        for row in csv.DictReader(handle):
            key = model_key_maker(short_names[row["ap"]], architectures[row["architecture"]], row["dataset"],
                                  "weights" if row["structure"] == "US" else "filters", row["sparsity"])
            expected[key] = (float(row["clean_accuracy"]), float(row["aa_robust_accuracy"]))
    assert len(expected) == 154
    found = {}
    for path in iter_record_paths(ROOT):
        record = read_record(path)
        assert path.name == f"{record['model_key']}__published-2024.json"
        assert record["source"] == "published" and record["n_samples"] == 10000
        assert record["provenance"]["reference"] == "arXiv:2409.01249"
        assert record["metrics"]["hofmn_robust_accuracy"] is None
        assert record["metrics"]["worst_case_robust_accuracy"] is None
        assert path.read_bytes() == dump_json(record), f"{path} is not in the canonical safeio.dump_json form"
        found[record["model_key"]] = (record["metrics"]["clean_accuracy"], record["metrics"]["aa_robust_accuracy"])
    assert found == expected


def test_the_record_schema_lists_exactly_the_published_cells():
    schema = json.loads((ROOT / "evaluator" / "schemas" / "record.schema.json").read_text())
    cells = schema["$defs"]["published_cell"]["enum"]
    assert sorted(cells) == sorted(read_record(path)["model_key"] for path in iter_record_paths(ROOT))


def test_apb_validate_runs_fast_as_a_command():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "evaluator.cli", "validate", "--root", str(ROOT)],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "26 APs, 10 manifests, 83 checkpoints, 154 records: OK"
    print(f"apb validate on the repository: {elapsed:.2f} s")
    assert elapsed < 10


def test_json_format_summary(capsys):
    from evaluator import cli

    assert cli.main(["validate", "--root", str(ROOT), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": True, "problems": [],
                   "summary": {"aps": 26, "manifests": 10, "checkpoints": 83, "records": 154}}


def test_find_entry_and_its_suggestions():
    from evaluator.errors import APBError
    from evaluator.repository.submissions import find_entry

    entry = find_entry("HARP_Zhao2023Holistic_V16_CIFAR10_S_75", ROOT)
    assert (entry.structure, entry.state_dict_key, entry.url) == \
        ("channels", "state_dict", "gdrive://1ngFEZWBFu68rCDfACVc239OMtAZxjdnw")
    with pytest.raises(APBError, match="did you mean .*HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90"):
        find_entry("HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_9O", ROOT)
    with pytest.raises(APBError, match="published results, but its manifest lists no checkpoint"):
        find_entry("HYDRA_Sehwag2020Hydra_V16_SVHN_US_90", ROOT)


def test_load_ap_taxonomy_takes_ap_keys_and_model_keys():
    from evaluator.errors import APBError

    assert load_ap_taxonomy("TwinRep_Li2023Learning_V16_CIFAR10_S_50", ROOT)["granularity"] == "filters"
    with pytest.raises(APBError, match="did you mean HYDRA_Sehwag2020Hydra"):
        load_ap_taxonomy("HYDRA_Sehwag2020Hidra", ROOT)
    with pytest.raises(APBError, match="no AP has ap_key"):
        load_ap_taxonomy("../../etc/passwd", ROOT)

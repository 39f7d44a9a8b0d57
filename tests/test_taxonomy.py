"""The taxonomy vocabulary, the schema filled from it, the table cells and the legend."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from evaluator.errors import APBError
from evaluator.untrusted.safeio import LineMap
from evaluator.repository.submissions import iter_taxonomies
from evaluator.repository.taxonomy import (allowed_values, fill_vocabulary, legend, load_vocabulary, table_columns,
                                taxonomy_schema, vocabulary_problems)
from evaluator.repository.validate import taxonomy_problems

ROOT = Path(__file__).resolve().parents[1]

# The seed README's taxonomy tables, row by row (Name first). One correction: PwoA is "S, US" (the seed's
# table says "US", but its checkpoints and leaderboard rows are structured too).
EXPECTED_ROWS = {
    "after-training": [
        "RADMM | AT | AT | 1S | S, US | L | SOLWM", "HYDRA | AT | AT | 1S | US | L | LIS",
        "Heracles | AT | AT | 1S | S, US | G | LIS", "HARP | AT | AT | 1S | S, US | G | LIS",
        "PwoA | AT | KD | 1S | S, US | L | SOLWM", "MAD | AT | AT | 1S | US | G | LIS",
        "Sehwag19 | AT | AT | IT | S, US | L | LWM", "RSR | AT + CNI | n.s. | 1S | US | G | RELWM",
        "BNAP | AT | AT | 1S, IT | S, US | G | LIS", "RFP | AT | AT | 1S | S | L | HGM",
        "Deadwooding | n.s. | KD + AT | 1S | US | G | SOLWM", "FRE | AT | AT | IT | S | G | LIS",
        "Luo23 | AT | AT | 1S | S | L | LIS", "SR-GKP | NT | NT | 1S | S | L | LIS",
        "FSRP | AT | AT | 1S | S | L | LIS",
    ],
    "before-training": [
        "Cosentino19 | AT | AT | IT | US | G | LWM", "Li20 | AT | AT | 1S | US | G | LWM",
        "Wang20 | AT | AT | IT | US | G | LWM", "RST | AT | None | 1S | US | L | LIS",
        "RobustBird | AT | AT | IT | US | G | LWM", "AWT | AT | AT | n.s. | US | n.s. | LWM",
    ],
    "during-training": [
        "TwinRep | AT | S, US | G | RELWM", "BCS-P | AT | US | L, G | BCS", "DNR | AT | S, US | G | SOLWM",
        "InTrain | AT | S, US | G | LIS", "FlyingBird | AT | US | G | LWM",
    ],
}
EXPECTED_HEADERS = {
    "after-training": ["Name", "Pretraining", "Finetuning", "1S/IT", "S/US", "L/G", "Criterion"],
    "before-training": ["Name", "Pruning Step", "Training Step", "1S/IT", "S/US", "L/G", "Criterion"],
    "during-training": ["Name", "Training Step", "S/US", "L/G", "Criterion"],
}
EXPECTED_LEGEND = [
    ("AT", "Adversarial Training"), ("NT", "Natural Training"), ("KD", "Knowledge Distillation"),
    ("CNI", "Channel Noise Injection"), ("1S/IT", "One-shot/Iterative Pruning"),
    ("S/US", "Structured/Unstructured Pruning"), ("L/G", "Local/Global Pruning"), ("n.s.", "Not Specified"),
    ("LWM", "Lowest Weight Magnitude"), ("SOLWM", "SOLver-based LWM"),
    ("RELWM", "REgularization-based Lowest Weight Magnitude"), ("LIS", "Least Importance Score"),
    ("HGM", "Highest Gradient Magnitude"), ("BCS", "Bayesian Connectivity Sampling"),
]


@pytest.fixture(scope="module")
def vocabulary() -> dict:
    return load_vocabulary(ROOT)


def test_table_cells_equal_the_seed_tables_in_order(vocabulary):
    rows: dict[str, list[str]] = {stage: [] for stage in EXPECTED_ROWS}
    for entry in iter_taxonomies(ROOT):
        cells = table_columns(entry, vocabulary)
        assert list(cells) == EXPECTED_HEADERS[entry["pipeline"]["stage"]]
        rows[entry["pipeline"]["stage"]].append(" | ".join(cells.values()))
    assert rows == EXPECTED_ROWS


def test_legend_equals_the_seed_legend(vocabulary):
    assert legend(vocabulary) == EXPECTED_LEGEND


def _enum_lists(node) -> list:
    found = []
    if isinstance(node, dict):
        if "enum" in node:
            found.append(node["enum"])
        for value in node.values():
            found += _enum_lists(value)
    elif isinstance(node, list):
        for value in node:
            found += _enum_lists(value)
    return found


def test_the_schema_file_repeats_no_vocabulary_and_gets_it_filled(vocabulary):
    raw = json.loads((ROOT / "taxonomy" / "taxonomy.schema.json").read_text())
    assert _enum_lists(raw) == []
    filled = taxonomy_schema(ROOT, vocabulary)
    assert filled["properties"]["criterion"]["enum"] == allowed_values(vocabulary, "criterion")
    assert "n.s." in filled["properties"]["criterion"]["enum"]
    assert "n.s." not in filled["properties"]["structure"]["items"]["enum"]
    stages = [branch["if"]["properties"]["stage"]["const"] for branch in raw["$defs"]["pipeline"]["allOf"]]
    assert stages == list(vocabulary["fields"]["pipeline"]["values"]) == list(vocabulary["pipelines"])


def test_a_vocabulary_value_added_to_the_vocabulary_becomes_valid(vocabulary):
    entry = json.loads((ROOT / "submissions" / "HYDRA_Sehwag2020Hydra" / "taxonomy.json").read_text())
    entry["criterion"] = "XYZ"
    schema = fill_vocabulary(json.loads((ROOT / "taxonomy" / "taxonomy.schema.json").read_text()), vocabulary)
    problems = taxonomy_problems(entry, LineMap({}), "t.json", schema)
    assert [(p.field, "'XYZ' is not allowed" in p.message) for p in problems] == [("criterion", True)]
    extended = copy.deepcopy(vocabulary)
    extended["fields"]["criterion"]["values"]["XYZ"] = "A new criterion"
    schema = fill_vocabulary(json.loads((ROOT / "taxonomy" / "taxonomy.schema.json").read_text()), extended)
    assert taxonomy_problems(entry, LineMap({}), "t.json", schema) == []


def test_fill_refuses_an_unknown_vocabulary_field(vocabulary):
    with pytest.raises(APBError, match="x-vocabulary names 'colour'"):
        fill_vocabulary({"properties": {"c": {"x-vocabulary": "colour"}}}, vocabulary)


@pytest.mark.parametrize("change, words", [
    (lambda v: v["fields"]["locality"]["values"].update({"AT": "clash"}), "already a value of 'training'"),
    (lambda v: v["legend"].append("XX"), "'XX' is neither a value"),
    (lambda v: v.update({"colours": 1}), "unknown field"),
    (lambda v: v["fields"]["criterion"].update({"values": {}}), "non-empty mapping"),
    (lambda v: v["pipelines"].pop("during-training"), "pipelines must describe the stages"),
    (lambda v: v["pipelines"]["after-training"]["rows"].append("RADMM_Ye2019Adversarial"), "distinct"),
])
def test_malformed_vocabularies_are_refused(vocabulary, change, words):
    broken = copy.deepcopy(vocabulary)
    change(broken)
    problems = vocabulary_problems(broken, LineMap({}), "taxonomy/vocabulary.yaml")
    assert any(words in p.message for p in problems), problems


def test_load_vocabulary_raises_with_file_and_field(tmp_path):
    shutil.copytree(ROOT / "taxonomy", tmp_path / "taxonomy")
    path = tmp_path / "taxonomy" / "vocabulary.yaml"
    path.write_text(path.read_text().replace('  "LIS": Least Importance Score', '  "LIS": ""'))
    with pytest.raises(APBError) as error:
        load_vocabulary(tmp_path)
    problem = error.value.problems[0]
    assert problem.file == str(path) and problem.field == "fields.criterion.values.LIS" and problem.line > 1


def test_table_order_puts_unlisted_aps_after_the_listed_rows(tmp_path, vocabulary):
    shutil.copytree(ROOT / "taxonomy", tmp_path / "taxonomy")
    for ap in ("HYDRA_Sehwag2020Hydra", "RADMM_Ye2019Adversarial", "FlyingBird_Chen2021Sparsity"):
        shutil.copytree(ROOT / "submissions" / ap, tmp_path / "submissions" / ap)
    new = json.loads((ROOT / "submissions" / "HYDRA_Sehwag2020Hydra" / "taxonomy.json").read_text())
    new.update(ap_key="Alpha_Zed2025New", name="Alpha", year=2025)
    (tmp_path / "submissions" / "Alpha_Zed2025New").mkdir()
    (tmp_path / "submissions" / "Alpha_Zed2025New" / "taxonomy.json").write_text(json.dumps(new))
    names = [entry["name"] for entry in iter_taxonomies(tmp_path)]
    assert names == ["RADMM", "HYDRA", "Alpha", "FlyingBird"]

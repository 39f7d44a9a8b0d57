"""Protocols are versioned data: the shipped files say what the issue fixes, eps is exact, and a malformed
file is refused with its file, line and field."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import pytest

from evaluator.errors import APBError
from evaluator.protocol import DEFAULT_PROTOCOL, PROTOCOLS_DIR, list_protocols, load_protocol, parse_fraction

LEADERBOARD = PROTOCOLS_DIR / "linf-8-255-v1.yaml"


def test_every_shipped_protocol_loads_and_is_named_by_its_file():
    protocols = list_protocols()
    ids = [p.id for p in protocols]
    assert {"linf-8-255-v1", "smoke-v1"} <= set(ids) and ids == sorted(ids)
    assert all(p.path.stem == p.id for p in protocols)


def test_the_leaderboard_protocol_is_the_one_the_issue_fixes():
    p = load_protocol("linf-8-255-v1")
    threat = p.threat_model
    assert p.leaderboard and p.evaluable and threat.norm.name == "Linf" and threat.norm.autoattack == "Linf"
    assert threat.eps_fraction == Fraction(8, 255) and p.eps == 8 / 255 and str(threat.eps_fraction) == "8/255"
    assert threat.curve == threat.norm.curve and threat.curve.points == 153 and threat.curve.step == Fraction(1, 1020)
    assert (p.n_samples, p.chunk_size, p.seed) == (10000, 500, 0)
    assert (p.autoattack.version, p.autoattack.batch_size) == ("standard", 500)
    h = p.hofmn
    assert (h.loss, h.optimizer, h.scheduler, h.steps) == ("DLR", "SGD", "cosine", 200)
    t = h.tuning
    assert (t.trials, t.steps, t.batch_size, t.samples) == (32, 100, 64, "first-clean-correct")
    assert t.search_space_dict() == {"lr": {"low": 8 / 255, "high": 10.0, "log": True},
                                     "momentum": {"low": 0.0, "high": 0.9, "log": False},
                                     "weight_decay": {"low": 0.01, "high": 1.0, "log": False},
                                     "dampening": {"low": 0.0, "high": 0.2, "log": False}}
    assert (p.sanity.max_aa_only, p.sanity.max_hofmn_only, p.sanity.max_no_adversarial) == (0.02, 0.01, 0.01)


def test_the_default_protocol_is_a_shipped_evaluable_leaderboard_protocol():
    default = load_protocol(DEFAULT_PROTOCOL)
    assert default.path.parent == PROTOCOLS_DIR and default.leaderboard and default.evaluable


def test_the_smoke_protocol_is_tiny_and_off_the_leaderboard():
    p = load_protocol("smoke-v1")
    assert not p.leaderboard and p.evaluable and p.eps == 8 / 255
    assert p.n_samples <= 16 and p.hofmn.tuning.trials <= 4 and p.hofmn.steps <= 20
    assert p.autoattack.version == "standard"


def test_a_protocol_loads_by_id_or_path_and_is_frozen(tmp_path):
    by_path = load_protocol(LEADERBOARD)
    assert by_path == load_protocol("linf-8-255-v1")
    assert len(by_path.sha256) == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_path.n_samples = 5  # type: ignore[misc]


def test_an_unknown_protocol_lists_the_known_ones():
    with pytest.raises(APBError, match="no such protocol; choose one of: .*linf-8-255-v1.*smoke-v1"):
        load_protocol("linf-8-255-v9")


def test_a_protocol_without_an_evaluation_section_describes_imported_results(tmp_path):
    path = tmp_path / "imported-v1.yaml"
    path.write_text("id: imported-v1\nleaderboard: true\ndescription: numbers copied from a paper\n")
    p = load_protocol(path)
    assert not p.evaluable and p.hofmn is None
    with pytest.raises(APBError, match="cannot be evaluated; use one of: .*linf-8-255-v1"):
        p.require_evaluable()


@pytest.mark.parametrize("fraction, expected", [("8/255", Fraction(8, 255)), (10, Fraction(10)),
                                                (0.9, Fraction(9, 10)), ("0.5", Fraction(1, 2))])
def test_numbers_are_parsed_exactly(fraction, expected):
    assert parse_fraction(fraction) == expected


def altered(tmp_path: Path, old: str, new: str, name: str = "linf-8-255-v1") -> Path:
    text = LEADERBOARD.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize("old, new, message", [
    ('eps: "8/255"', 'eps: "8/0"', r'threat_model\.eps: expected a number or a fraction'),
    ('eps: "8/255"', "eps: 2", r"threat_model\.eps: must lie strictly between 0 and 1"),
    ("norm: Linf", "norm: L1", r"threat_model\.norm: must be one of Linf, L2"),
    ('eps: "8/255"', 'eps: "8/255"\n  curve: {points: 1}', r"threat_model\.curve: curve\.points: must be an integer"),
    ('eps: "8/255"', 'eps: "8/255"\n  curve: {ticks: 3}', r"threat_model\.curve: curve: must be a mapping with fields"),
    ("n_samples: 10000", "n_samples: -3", r"n_samples: must be an integer >= 1"),
    ("version: standard", "version: fast", r"autoattack\.version: must be one of standard"),
    ("loss: DLR", "loss: MSE", r"hofmn\.loss: must be one of LL, DLR, CE"),
    ("trials: 32", "trials: many", r"hofmn\.tuning\.trials: must be an integer >= 1"),
    ("samples: first-clean-correct", "samples: random", r"hofmn\.tuning\.samples: must be one of"),
    ("momentum: {low: 0, high: 0.9}", "momentum: {low: 1, high: 0.9}", r"search_space\.momentum: needs low < high"),
    ("max_aa_only: 0.02", "max_aa_only: 2", r"sanity\.max_aa_only: must be a share between 0 and 1"),
    ("seed: 0", "seed: 0\ncolour: blue", r"colour: unknown field"),
    ("leaderboard: true", "leaderboard: yes please", r"leaderboard: must be true or false"),
])
def test_a_malformed_protocol_names_file_line_and_field(tmp_path, old, new, message):
    path = altered(tmp_path, old, new)
    with pytest.raises(APBError, match=message) as error:
        load_protocol(path)
    problem = error.value.problems[0]
    assert problem.file == str(path) and problem.line is not None and problem.line > 1


def test_a_protocol_missing_a_section_or_misnamed_is_refused(tmp_path):
    path = altered(tmp_path, "chunk_size: 500\n", "")
    with pytest.raises(APBError, match="chunk_size: missing: an evaluable protocol needs all of"):
        load_protocol(path)
    misnamed = altered(tmp_path, "id: linf-8-255-v1", "id: linf-8-255-v1", name="other-name")
    with pytest.raises(APBError, match=r"id: must equal the file name without \.yaml \('other-name'\)"):
        load_protocol(misnamed)


def test_smoke_v2_bounds_autoattack_to_apgd_ce_and_custom_needs_its_attack_list(tmp_path):
    p = load_protocol("smoke-v2")
    assert not p.leaderboard and p.n_samples == 2 and p.autoattack.version == "custom"
    assert p.autoattack.attacks == ("apgd-ce",)
    text = (PROTOCOLS_DIR / "smoke-v2.yaml").read_text()
    for old, new, words in (("  attacks: [apgd-ce]\n", "", "version custom needs a list"),
                            ("version: custom", "version: standard", "is for version: custom only"),
                            ("[apgd-ce]", "[apgd-ce, pgd]", "version custom needs a list")):
        path = tmp_path / "smoke-v2.yaml"
        path.write_text(text.replace(old, new))
        with pytest.raises(APBError, match=words):
            load_protocol(path)

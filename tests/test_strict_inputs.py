"""Strict input rules: a pattern matches the whole value (a sha256 or key followed by a newline is refused), and
a file nested 100,000 deep is a named problem, not a RecursionError."""
from __future__ import annotations

import json

import pytest

from evaluator.errors import APBError
from evaluator.checkpoint.fetch import fetch_checkpoint
from evaluator.registry.model_keys import parse_model_key
from evaluator.untrusted.safeio import parse_json_text, parse_yaml_text
from evaluator.repository.schema import schema_problems
from evaluator.untrusted.safeio import LineMap
from tests.test_validate import HYDRA_KEY, edit, edit_json, expect, manifest, record, rel, repo, taxonomy, validate

SHA = "0123456789abcdef" * 4
DEEP = 100_000
__all__ = ["repo"]  # the fixture, imported


def test_a_pinned_sha256_with_a_trailing_newline_is_refused_by_fetch(tmp_path):
    source = tmp_path / "x.pt"
    source.write_bytes(b"data")
    with pytest.raises(APBError, match="64 lowercase hex"):
        fetch_checkpoint(source.as_uri(), SHA + "\n", cache_dir=tmp_path / "cache", progress=False)


def test_a_schema_pattern_matches_the_whole_string():
    schema = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    assert schema_problems(SHA, schema, LineMap({}), "f") == []
    assert schema_problems(SHA + "\n", schema, LineMap({}), "f") != []
    assert schema_problems("a$", {"type": "string", "pattern": "^a[$]$"}, LineMap({}), "f") == []  # a literal $


def test_a_manifest_sha256_with_a_trailing_newline_is_refused(repo):
    path = manifest(repo)
    edit(path, "    sha256: null\n", f'    sha256: "{SHA}\\n"\n')
    expect(validate(repo), rel(path, repo), "models[0].sha256")


def test_record_fields_with_a_trailing_newline_are_refused(repo):
    path = record(repo)

    def change(data: dict) -> None:
        data["checkpoint_sha256"] = SHA + "\n"
        data["ap_key"] = data["ap_key"] + "\n"

    edit_json(path, change)
    problems = validate(repo)
    expect(problems, rel(path, repo), "checkpoint_sha256")
    expect(problems, rel(path, repo), "ap_key")


def test_a_model_key_with_a_trailing_newline_is_not_a_model_key():
    assert parse_model_key(HYDRA_KEY).ap_key == "HYDRA_Sehwag2020Hydra"
    with pytest.raises(ValueError):
        parse_model_key(HYDRA_KEY + "\n")


@pytest.mark.parametrize("text", ["[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP,
                                  "[" * 65 + "]" * 65])
def test_deep_json_is_a_named_problem(text):
    with pytest.raises(APBError, match="plan.json.*nested too deeply"):
        parse_json_text(text, "plan.json")


@pytest.mark.parametrize("text", ["a: " + "[" * DEEP + "]" * DEEP, "".join("  " * i + "a:\n" for i in range(100)) + "  " * 100 + "b: 1\n"])
def test_deep_yaml_is_a_named_problem(text):
    with pytest.raises(APBError, match="manifest.yaml.*nested too deeply"):
        parse_yaml_text(text, "manifest.yaml")


def test_apb_validate_names_a_deep_taxonomy_and_manifest(repo):
    taxonomy(repo).write_text('{"name": ' + "[" * DEEP + "]" * DEEP + "}\n", encoding="utf-8")
    manifest(repo).write_text("schema_version: " + "[" * DEEP + "]" * DEEP + "\n", encoding="utf-8")
    problems = validate(repo)
    expect(problems, rel(taxonomy(repo), repo), None, "nested too deeply")
    expect(problems, rel(manifest(repo), repo), None, "nested too deeply")
    assert json.dumps(problems).count("RecursionError") == 0

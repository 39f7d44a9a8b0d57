"""The compiled acceptor (the fast path of schema_problems) agrees with jsonschema: on the repository's own
documents, and on thousands of seeded mutations of them (deleted, added and retyped fields, numbers moved
across their bounds, 90.0 for an integer, true for 1), it accepts exactly what the strict validator accepts."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from evaluator.ci.artifacts import CI_SCHEMAS
from evaluator.repository.taxonomy import SCHEMA_FILE
from evaluator.untrusted.safeio import load_json, load_yaml
from evaluator.repository.schema import _inline_local_refs, load_schema, schema_problems, schema_validator
from evaluator.repository.schema_accept import compile_acceptor, json_equal
from tests.support.ci_records import evaluated_record, per_sample, sha

REPO = Path(__file__).resolve().parents[1]
REPLACEMENTS: list[Any] = [None, True, False, 0, 1, -1, 2, 90, 90.0, 0.5, 100.5, 1e12, "", "x", "CIFAR10", "resnet18",
                           "a" * 300, "https://example.org/m.pt", sha("a"), [], [1], ["x"], {}, {"x": 1}]


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, path + (index,))
    return found


def _mutated(document: Any, rng: random.Random) -> Any:
    """*document* with one to three random edits."""
    document = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(document))
        if not path:
            continue
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        last, value = path[-1], parent[path[-1]]
        choice = rng.random()
        if choice < 0.2 and isinstance(parent, dict):
            del parent[last]
        elif choice < 0.3 and isinstance(parent, dict):
            parent[rng.choice(["extra", "notes", "x-field"])] = rng.choice(REPLACEMENTS)
        elif choice < 0.5 and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[last] = rng.choice([value + 1, value - 1, -value, float(value), value * 1000, value / 3])
        elif choice < 0.55 and isinstance(value, list):
            parent[last] = value + value[:1] if rng.random() < 0.5 else value[1:]
        elif choice < 0.65 and isinstance(value, str):
            parent[last] = rng.choice([value.upper(), value + " ", value[:-1], value * 2])
        else:
            parent[last] = copy.deepcopy(rng.choice(REPLACEMENTS))
    return document


def _documents() -> list[tuple[str, dict, Any]]:
    """(name, schema, a valid document) from the repository and the test records."""
    found: list[tuple[str, dict, Any]] = []
    record_schema, manifest_schema = load_schema("record"), load_schema("manifest")
    taxonomy_schema = load_json(REPO / SCHEMA_FILE)[0]
    samples = per_sample(100, seed=3)
    evaluated = evaluated_record("HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90", sha("b"), samples)
    evaluated["per_sample"] = {"file": "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90__linf-8-255-v1.npz", "sha256": sha("c")}
    found.append(("evaluated record", record_schema, evaluated))
    found.append(("evaluated record without check", record_schema, {**evaluated, "check": None}))
    for path in sorted(REPO.glob("submissions/*/records/*.json"))[::40]:
        found.append((path.name, record_schema, load_json(path)[0]))
    for path in sorted(REPO.glob("submissions/*/manifest.yaml")):
        found.append((str(path.relative_to(REPO)), manifest_schema, load_yaml(path)[0]))
    for path in sorted(REPO.glob("submissions/*/taxonomy.json"))[::5]:
        found.append((str(path.relative_to(REPO)), taxonomy_schema, load_json(path)[0]))
    return found


DOCUMENTS = _documents()


@pytest.mark.parametrize("name,schema,document", DOCUMENTS, ids=[name for name, _, _ in DOCUMENTS])
def test_acceptor_agrees_with_jsonschema_on_mutations(name: str, schema: dict, document: Any) -> None:
    accepts = compile_acceptor(_inline_local_refs(schema))
    assert accepts is not None
    validator = schema_validator(schema)
    assert accepts(document) and validator.is_valid(document), name
    rng = random.Random(name)
    outcomes = {True: 0, False: 0}
    for _ in range(300):
        mutated = _mutated(document, rng)
        expected = validator.is_valid(mutated)
        assert accepts(mutated) == expected, json.dumps(mutated, default=str)[:2000]
        outcomes[expected] += 1
    assert outcomes[False] >= 100, outcomes  # the mutations reach the rules, not only the annotations


@pytest.mark.parametrize("schema_path", sorted(CI_SCHEMAS.glob("*.json")) + [REPO / SCHEMA_FILE],
                         ids=lambda path: path.name)
def test_every_shipped_schema_compiles(schema_path: Path) -> None:
    """The fast path serves every schema the repository ships (a new keyword would silently cost speed)."""
    assert compile_acceptor(_inline_local_refs(load_json(schema_path)[0])) is not None


@pytest.mark.parametrize("name", ["record", "manifest"])
def test_evaluator_schemas_compile(name: str) -> None:
    assert compile_acceptor(_inline_local_refs(load_schema(name))) is not None


def test_integer_is_strict_and_json_equality() -> None:
    accepts = compile_acceptor({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1},
                                                                  "e": {"enum": [1, "a"]}, "c": {"const": [1, {"a": 2}]}}})
    assert accepts is not None
    assert accepts({"n": 90}) and not accepts({"n": 90.0}) and not accepts({"n": True}) and not accepts({"n": 0})
    assert accepts({"e": 1.0}) and not accepts({"e": True}) and accepts({"c": [1.0, {"a": 2}]})
    assert not accepts({"c": [True, {"a": 2}]})
    assert json_equal([1, {"a": [2.0]}], [1.0, {"a": [2]}]) and not json_equal(0, False) and not json_equal("1", 1)


@pytest.mark.parametrize("schema", [{"$ref": "#/$defs/x", "$defs": {"x": {}}}, {"format": "uri"},
                                    {"dependentRequired": {"a": ["b"]}}, {"type": "whatever"},
                                    {"items": {"unevaluatedProperties": False}}, {"contains": {}, "minContains": 2}])
def test_unsupported_keywords_fall_back_to_jsonschema(schema: dict) -> None:
    assert compile_acceptor(schema) is None


def test_schema_problems_still_names_every_problem() -> None:
    """A refused document goes through jsonschema: the problems and their wording are unchanged."""
    record = copy.deepcopy(DOCUMENTS[0][2])
    record["n_samples"] = 100.0
    del record["metrics"]
    record["extra"] = 1
    from evaluator.untrusted.safeio import LineMap

    problems = schema_problems(record, load_schema("record"), LineMap({}), "r.json")
    messages = {(p.field, p.message.split(";")[0]) for p in problems}
    assert ("n_samples", "expected integer, got number 100.0") in messages
    assert ("metrics", "missing required field") in messages
    assert any(field == "extra" and message.startswith("unknown field 'extra'") for field, message in messages)


class _Text(str):
    pass


class _Mapping(dict):
    pass


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "^a"}, {"type": ["number", "null"], "minimum": 0}, {"type": "integer"},
    {"type": "array", "items": {"type": "integer"}}, {"type": "object", "required": ["a"]}, {"minLength": 2},
    {"not": {"type": "array"}}, {"not": {"minLength": 2}}, {"oneOf": [{"type": "number"}, {"minLength": 1}]},
    {"enum": ["ab", 1, None]}, {"if": {"type": "string"}, "then": {"maxLength": 1}, "else": {"const": 2.0}}])
def test_values_of_other_types_are_judged_as_jsonschema_judges_them(schema: dict) -> None:
    """The acceptor looks a value's kind up by its exact type; a subclass (of str, float, dict) is judged by
    the JSON kind it is an instance of, and a value of no JSON kind (a tuple) only by the keywords that apply
    to every kind, as jsonschema judges them."""
    import numpy as np

    accepts, validator = compile_acceptor(schema), schema_validator(schema)
    assert accepts is not None
    for value in ["ab", _Text("ab"), _Text("b"), 1, 2.0, np.float64(2.0), -1.5, True, None, [1], (1, 2), ("a",),
                  {"a": 1}, _Mapping(a=1), _Mapping(), object()]:
        assert accepts(value) == validator.is_valid(value), (schema, value)

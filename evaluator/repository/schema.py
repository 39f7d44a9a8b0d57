"""The JSON-Schema engine: the repository's schemas (``evaluator/schemas/``), a strict Draft 2020-12 validator
and its errors as problems with file, line and field, in words an author can act on."""
from __future__ import annotations

import copy
import functools
from collections import defaultdict
from typing import Any, Iterable

from evaluator.errors import Problem
from evaluator.paths import SCHEMAS_DIR
from evaluator.untrusted.safeio import LineMap, format_field, load_json
from evaluator.repository.schema_accept import Check, compile_acceptor, pattern_search



def _strict_validator_class() -> Any:
    """Draft 2020-12 where "integer" means a Python int (not 90.0, not true) and a pattern's ``$`` is the end of
    the string (ECMA-262), not also the place before a final newline (Python's ``re``)."""
    from jsonschema import Draft202012Validator, ValidationError, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))

    def pattern(validator: Any, argument: str, instance: Any, _: dict) -> Iterable[Any]:
        if validator.is_type(instance, "string") and pattern_search(argument)(instance) is None:
            yield ValidationError(f"{instance!r} does not match {argument!r}")

    return validators.extend(Draft202012Validator, {"pattern": pattern}, type_checker=checker)


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """``evaluator/schemas/<name>.schema.json``, its vocabularies and metrics filled in (:func:`with_vocabularies`,
    :func:`with_metrics`)."""
    schema = with_metrics(with_vocabularies(load_json(SCHEMAS_DIR / f"{name}.schema.json")[0]))
    if name == "manifest":
        from evaluator.registry.url_schemes import schema_url
        from evaluator.registry.variants import variant_names

        schema["$defs"]["variant"]["enum"] = variant_names()
        schema_url(schema["$defs"]["url"])
    return schema


def vocabularies() -> dict[str, list[str]]:
    """The closed vocabularies a schema names with ``x-vocabulary``, from the registries."""
    from evaluator.registry.datasets import dataset_names
    from evaluator.registry.model_keys import STRUCTURE_KIND_NAMES, STRUCTURE_KINDS
    from evaluator.registry.variants import architecture_names

    return {"architecture": list(architecture_names()), "dataset": list(dataset_names()),
            "structure": list(STRUCTURE_KINDS), "structure_kind": list(STRUCTURE_KIND_NAMES)}


def with_vocabularies(schema: dict) -> dict:
    """*schema* (changed in place) with each ``"x-vocabulary": <name>`` node given its registry's words as its
    ``enum``, or for ``model_key`` the model keys' ``pattern`` and form (``x-hint``); an unknown name is a
    ``KeyError`` naming it."""
    from evaluator.registry.model_keys import model_key_form, model_key_pattern

    words = vocabularies()

    def fill(node: Any) -> None:
        if isinstance(node, list):
            for value in node:
                fill(value)
        elif isinstance(node, dict):
            name = node.get("x-vocabulary")
            if name == "model_key":
                node.update({"pattern": f"^{model_key_pattern(named=False)}$", "x-hint": model_key_form()})
            elif name is not None:
                if name not in words:
                    raise KeyError(f"x-vocabulary: {name!r} is not one of model_key, {', '.join(words)}")
                node["enum"] = list(words[name])
            for value in node.values():
                fill(value)

    fill(schema)
    return schema


def with_metrics(schema: dict) -> dict:
    """*schema* (changed in place) with each ``"x-metrics": {"key", "required", "each"}`` node given, per metric of
    ``metrics.yaml`` in display order, the property ``each`` under the metric's name (``key: metric``) or its
    count field (``key: count``), and, where ``required`` is true, every metric that is not optional
    (``records.metric_optional``) as its ``required`` list; the marker is removed."""
    from evaluator.record import records

    def fill(node: Any) -> None:
        if isinstance(node, list):
            for value in node:
                fill(value)
        elif isinstance(node, dict):
            marker = node.pop("x-metrics", None)
            if marker is not None:
                names = {m: records.COUNT_FIELDS[m] if marker["key"] == "count" else m for m in records.METRICS}
                if marker["required"]:
                    node["required"] = [names[m] for m in records.METRICS if not records.metric_optional(m)]
                node["properties"] = {name: copy.deepcopy(marker["each"]) for name in names.values()}
            for value in node.values():
                fill(value)

    fill(schema)
    return schema


_VALIDATORS: dict[int, tuple[dict, Any, Check | None]] = {}


def _compiled(schema: dict) -> tuple[dict, Any, Check | None]:
    """(*schema*, its strict Draft 2020-12 validator, its compiled acceptor or None), built once per schema object."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        if len(_VALIDATORS) >= 32:
            _VALIDATORS.clear()
        inlined = _inline_local_refs(schema)
        cached = (schema, _strict_validator_class()(inlined), compile_acceptor(inlined))
        _VALIDATORS[id(schema)] = cached
    return cached


def schema_validator(schema: dict) -> Any:
    """A strict Draft 2020-12 validator of *schema*, built once per schema object."""
    return _compiled(schema)[1]


def _inline_local_refs(schema: dict) -> dict:
    """*schema* with each local ``{"$ref": "#/$defs/..."}`` replaced by ``{"allOf": [<its target>]}``: the same
    errors (each from the same subschema, at the same place), without resolving a reference per value. A
    schema with a nested ``$id`` (other base URIs), or a recursive reference, is kept as it is."""
    def has_nested_id(node: Any, top: bool) -> bool:
        if isinstance(node, dict):
            return (not top and "$id" in node) or any(has_nested_id(v, False) for v in node.values())
        return isinstance(node, list) and any(has_nested_id(v, False) for v in node)

    def target(ref: str) -> Any:
        node: Any = schema
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(value, seen) for value in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        out: dict = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(ref, str) and ref.startswith("#/") and "allOf" not in node:
                if ref in seen:
                    raise RecursionError(ref)
                out["allOf"] = [inline(target(ref), seen + (ref,))]
            elif key in ("enum", "const") or (key == "$defs" and node is schema):  # data, or kept for references
                out[key] = value
            else:
                out[key] = inline(value, seen)
        return out

    if has_nested_id(schema, True):
        return schema
    try:
        return inline(schema, ())
    except (RecursionError, KeyError, TypeError):
        return schema


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "value")


def short_repr(value: Any, limit: int = 60) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_problems(error: Any, lines: LineMap, file: str) -> list[Problem]:
    """Problems of one jsonschema error, in words an author can act on."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("x-hint")
    validator, value = error.validator, error.instance

    def problem(where: tuple, message: str) -> Problem:
        if hint and hint not in message:
            message = f"{message}; {hint}"
        return Problem(file, message, lines.line(where), format_field(where))

    if validator in ("anyOf", "oneOf") and error.context:
        inner = _closest_branch_error(error)
        if inner is None:
            return [problem(path, f"{short_repr(value)} matches none of the allowed forms")]
        problems = _error_problems(inner, lines, file)
        if hint:
            problems = [p if hint in p.message else Problem(p.file, f"{p.message}; {hint}", p.line, p.field)
                        for p in problems]
        return problems
    if validator == "additionalProperties":
        allowed = ", ".join(schema.get("properties", {}))
        extra = [key for key in value if key not in schema.get("properties", {})]
        return [problem(path + (key,), f"unknown field {key!r}; allowed here: {allowed}") for key in extra]
    if validator == "required":
        return [problem(path + (name,), "missing required field") for name in error.validator_value
                if isinstance(value, dict) and name not in value]
    if validator == "enum":
        allowed = error.validator_value
        listing = ", ".join(map(str, allowed)) if len(allowed) <= 12 else f"one of {len(allowed)} allowed values"
        return [problem(path, f"{short_repr(value)} is not allowed; use {listing}")]
    if validator == "const":
        return [problem(path, f"must be {error.validator_value!r}, got {short_repr(value)}")]
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = "null" if value is None else f"{_json_type(value)} {short_repr(value)}"
        return [problem(path, f"expected {expected}, got {got}")]
    if validator == "pattern":
        return [problem(path, f"{short_repr(value)} has the wrong form")]
    return [problem(path, error.message)]


def _closest_branch_error(error: Any) -> Any:
    """The most telling error of an anyOf/oneOf: from a branch of the value's own type (a string that breaks
    ``{"type": "string", "pattern": ...}`` says so, rather than "expected null")."""
    from jsonschema.exceptions import best_match

    by_branch: dict[Any, list] = defaultdict(list)
    for inner in error.context:
        by_branch[inner.relative_schema_path[0]].append(inner)
    fitting = [inner for errors in by_branch.values()
               if not any(not inner.relative_path and inner.validator in ("type", "const") for inner in errors)
               for inner in errors]
    return best_match(fitting) if fitting else None


def schema_problems(data: Any, schema: dict, lines: LineMap, file: str) -> list[Problem]:
    """Every way *data* breaks *schema*, as problems with lines. A document the compiled acceptor passes has
    none (:mod:`evaluator.repository.schema_accept`); any other is walked by jsonschema, whose errors name the problems."""
    _, validator, accepts = _compiled(schema)
    if accepts is not None and accepts(data):
        return []
    problems: list[Problem] = []
    for error in validator.iter_errors(data):
        if error.schema is False:  # a field forbidden in this context, e.g. pruning_step after training
            path = tuple(error.absolute_path)
            parent = _at(data, path)
            if isinstance(parent, dict):  # jsonschema leaves the property's name out of the path
                path += tuple(key for key, value in parent.items() if value is error.instance)[:1]
            problems.append(Problem(file, "this field is not allowed here (given the object's other fields); "
                                          "remove it", lines.line(path), format_field(path)))
            continue
        problems.extend(_error_problems(error, lines, file))
    return unique_problems(problems)


def _at(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def unique_problems(problems: Iterable[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))

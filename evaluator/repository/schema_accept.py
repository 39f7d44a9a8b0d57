"""A compiled yes/no check of a JSON Schema (Draft 2020-12, the keywords this repository's schemas use): the
fast path of :func:`evaluator.repository.schema.schema_problems`. A leaderboard of 24,000 records spends most of its
schema time in jsonschema's general walk; a document this check accepts needs no walk at all, and one it
refuses is walked by jsonschema, which names every problem. So the errors are jsonschema's, and a document is
accepted only where both agree (``tests/test_schema_accept.py`` compares them on mutated documents).

:func:`compile_acceptor` returns None for a schema with any keyword it does not implement (the caller then
always uses jsonschema), so a schema that grows a new keyword is never checked more weakly. "integer" is the
repository's strict one: a Python int, not 90.0 and not true."""
from __future__ import annotations

import functools
import re
from typing import Any, Callable

Check = Callable[[Any], bool]

ANNOTATIONS = frozenset({"$comment", "$defs", "$id", "$schema", "title", "description", "default", "examples"})
_TYPES: dict[str, Check] = {
    "null": lambda value: value is None,
    "boolean": lambda value: isinstance(value, bool),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "string": lambda value: isinstance(value, str),
    "array": lambda value: isinstance(value, list),
    "object": lambda value: isinstance(value, dict),
}


class Unsupported(Exception):
    """A keyword (or keyword value) this module does not compile."""


def compile_acceptor(schema: Any) -> Check | None:
    """A function telling whether a JSON document satisfies *schema*, or None if *schema* uses anything beyond
    the supported keywords (``$ref`` included: inline local references first, as ``schema.py`` does)."""
    try:
        return _compile(schema)
    except (Unsupported, re.error, KeyError, TypeError, ValueError):
        return None


def json_equal(one: Any, other: Any) -> bool:
    """JSON equality as JSON Schema defines it: 1 equals 1.0, true does not equal 1, containers compare deeply."""
    if isinstance(one, bool) or isinstance(other, bool):
        return isinstance(one, bool) and isinstance(other, bool) and one == other
    if isinstance(one, dict) and isinstance(other, dict):
        return one.keys() == other.keys() and all(json_equal(one[key], other[key]) for key in one)
    if isinstance(one, list) and isinstance(other, list):
        return len(one) == len(other) and all(json_equal(a, b) for a, b in zip(one, other))
    if isinstance(one, (dict, list)) or isinstance(other, (dict, list)):
        return False
    return bool(one == other)


def _compile(schema: Any) -> Check:
    if schema is True or schema == {}:
        return _always
    if schema is False:
        return lambda value: False
    if not isinstance(schema, dict):
        raise Unsupported(repr(schema))
    checks: list[Check] = []
    for keyword, argument in schema.items():
        if keyword in ANNOTATIONS or keyword.startswith("x-"):
            continue
        if keyword in ("then", "else"):
            continue  # compiled with "if"
        build = _KEYWORDS.get(keyword)
        if build is None:
            raise Unsupported(keyword)
        checks.append(build(argument, schema))
    checks = [check for check in checks if check is not _always]
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]

    def every(value: Any) -> bool:
        for check in checks:
            if not check(value):
                return False
        return True
    return every


def _always(value: Any) -> bool:
    return True


def _type(argument: Any, _: dict) -> Check:
    names = [argument] if isinstance(argument, str) else list(argument)
    tests = [_TYPES[name] for name in names]
    if len(tests) == 1:
        return tests[0]
    return lambda value: any(test(value) for test in tests)


def _properties(argument: dict, schema: dict) -> Check:
    """``properties`` and, beside it, ``additionalProperties``: one pass over the object's fields."""
    compiled = {name: _compile(sub) for name, sub in argument.items()}
    extra = _additional_test(schema)

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name, item in value.items():
            test = compiled.get(name, extra)
            if test is not None and not test(item):
                return False
        return True
    return check


def _additional_properties(argument: Any, schema: dict) -> Check:
    test = _additional_test(schema)
    if "properties" in schema or test is None:
        return _always  # checked by "properties", in the same pass
    return lambda value: not isinstance(value, dict) or all(test(item) for item in value.values())


def _additional_test(schema: dict) -> Check | None:
    if "patternProperties" in schema:
        raise Unsupported("patternProperties")
    return None if "additionalProperties" not in schema else _compile(schema["additionalProperties"])


def _property_names(argument: Any, _: dict) -> Check:
    test = _compile(argument)
    return lambda value: not isinstance(value, dict) or all(test(name) for name in value)


def _required(argument: list, _: dict) -> Check:
    names = tuple(argument)
    return lambda value: not isinstance(value, dict) or all(name in value for name in names)


def _size(is_kind: Check, minimum: bool) -> Callable[[Any, dict], Check]:
    """minProperties/maxProperties, minItems/maxItems, minLength/maxLength: a bound on ``len`` of one kind."""
    def build(argument: int, _: dict) -> Check:
        if minimum:
            return lambda value: not is_kind(value) or len(value) >= argument
        return lambda value: not is_kind(value) or len(value) <= argument
    return build


def _items(argument: Any, schema: dict) -> Check:
    if "prefixItems" in schema:
        raise Unsupported("prefixItems")
    test = _compile(argument)
    return lambda value: not isinstance(value, list) or all(test(item) for item in value)


def _unique_items(argument: bool, _: dict) -> Check:
    if not argument:
        return lambda value: True

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        return not any(json_equal(value[i], value[j]) for i in range(len(value)) for j in range(i + 1, len(value)))
    return check


def _contains(argument: Any, schema: dict) -> Check:
    if "minContains" in schema or "maxContains" in schema:
        raise Unsupported("minContains/maxContains")
    test = _compile(argument)
    return lambda value: not isinstance(value, list) or any(test(item) for item in value)


def _pattern(argument: str, _: dict) -> Check:
    search = pattern_search(argument)
    return lambda value: not isinstance(value, str) or search(value) is not None


def pattern_search(pattern: str) -> Callable[[str], Any]:
    """The ``search`` of a JSON Schema ``pattern`` with ECMA-262's ``$``: the end of the string only. Python's
    ``$`` also matches before a final newline, so ``^[0-9a-f]{64}$`` would accept a sha256 followed by
    ``"\\n"``; every unescaped ``$`` outside a character class is compiled as ``\\Z``."""
    return _compiled_pattern(pattern).search


@functools.lru_cache(maxsize=256)
def _compiled_pattern(pattern: str) -> re.Pattern:
    out: list[str] = []
    escaped, in_class = False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            out.append(r"\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


def _bound(compare: Callable[[Any, Any], bool]) -> Callable[[Any, dict], Check]:
    def build(argument: Any, _: dict) -> Check:
        if isinstance(argument, bool) or not isinstance(argument, (int, float)):
            raise Unsupported("a bound that is not a number")
        is_number = _TYPES["number"]
        return lambda value: not is_number(value) or compare(value, argument)
    return build


def _enum(argument: list, _: dict) -> Check:
    strings = frozenset(option for option in argument if isinstance(option, str))
    others = [option for option in argument if not isinstance(option, str)]

    def check(value: Any) -> bool:
        if isinstance(value, str):  # a string equals only an equal string
            return value in strings
        return any(json_equal(value, option) for option in others)
    return check


def _const(argument: Any, schema: dict) -> Check:
    return _enum([argument], schema)


def _all_of(argument: list, _: dict) -> Check:
    tests = [_compile(sub) for sub in argument]
    return lambda value: all(test(value) for test in tests)


def _any_of(argument: list, _: dict) -> Check:
    tests = [_compile(sub) for sub in argument]
    return lambda value: any(test(value) for test in tests)


def _one_of(argument: list, _: dict) -> Check:
    tests = [_compile(sub) for sub in argument]
    return lambda value: sum(1 for test in tests if test(value)) == 1


def _not(argument: Any, _: dict) -> Check:
    test = _compile(argument)
    return lambda value: not test(value)


def _if(argument: Any, schema: dict) -> Check:
    condition = _compile(argument)
    then, otherwise = _compile(schema.get("then", True)), _compile(schema.get("else", True))
    return lambda value: then(value) if condition(value) else otherwise(value)


_OBJECT, _ARRAY, _STRING = _TYPES["object"], _TYPES["array"], _TYPES["string"]
_KEYWORDS: dict[str, Callable[[Any, dict], Check]] = {
    "type": _type, "properties": _properties, "additionalProperties": _additional_properties,
    "propertyNames": _property_names, "required": _required, "minProperties": _size(_OBJECT, True), "maxProperties": _size(_OBJECT, False),
    "items": _items, "minItems": _size(_ARRAY, True), "maxItems": _size(_ARRAY, False), "uniqueItems": _unique_items,
    "contains": _contains, "minLength": _size(_STRING, True), "maxLength": _size(_STRING, False), "pattern": _pattern,
    "minimum": _bound(lambda value, bound: not value < bound),  # written as jsonschema compares (NaN included)
    "maximum": _bound(lambda value, bound: not value > bound),
    "exclusiveMinimum": _bound(lambda value, bound: not value <= bound),
    "exclusiveMaximum": _bound(lambda value, bound: not value >= bound),
    "enum": _enum, "const": _const, "allOf": _all_of, "anyOf": _any_of, "oneOf": _one_of, "not": _not, "if": _if,
}

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
Kinds = frozenset[type]  # the Python types of JSON values a keyword constrains

ANNOTATIONS = frozenset({"$comment", "$defs", "$id", "$schema", "title", "description", "default", "examples"})
_NULL, _NUMBERS = type(None), frozenset({int, float})
_ALL: Kinds = frozenset({_NULL, bool, int, float, str, list, dict, object})
"""A value's kind: its type, where that is exactly a JSON one (fast), else :func:`_kind`'s."""
_TYPES: dict[str, Kinds] = {"null": frozenset({_NULL}), "boolean": frozenset({bool}), "integer": frozenset({int}),
                            "number": _NUMBERS, "string": frozenset({str}), "array": frozenset({list}),
                            "object": frozenset({dict})}


def _kind(value: Any) -> type:
    """The kind of a value of another type: the first JSON type it is an instance of (a subclass; bool before
    int, as jsonschema's type checks), else Python's ``object`` (no JSON kind: only the keywords that check
    every kind apply, and "type" refuses it)."""
    return next((kind for kind in (bool, int, float, str, list, dict) if isinstance(value, kind)), object)


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
    """One schema node as one function. Each keyword compiles to the kinds it constrains and a check that may
    assume its value is of one of them (no ``isinstance`` guard); the node looks up its value's kind once and
    runs that kind's checks, in the order of the keywords (a value of a kind "type" excludes is refused)."""
    if schema is True or schema == {}:
        return _always
    if schema is False:
        return _never
    if not isinstance(schema, dict):
        raise Unsupported(repr(schema))
    allowed = _ALL
    if "type" in schema:
        names = schema["type"]
        allowed = frozenset().union(*(_TYPES[name] for name in ([names] if isinstance(names, str) else names)))
    checks: dict[type, list[Check]] = {kind: [] for kind in allowed}
    for keyword, argument in schema.items():
        if keyword in ANNOTATIONS or keyword.startswith("x-") or keyword in ("type", "then", "else"):
            continue  # "then" and "else" are compiled with "if"
        build = _KEYWORDS.get(keyword)
        if build is None:
            raise Unsupported(keyword)
        kinds, test = build(argument, schema)
        if test is not _always:
            for kind in kinds & allowed:
                checks[kind].append(test)
    lists = {kind: tuple(checks[kind]) if kind in allowed else (_never,) for kind in _ALL}
    combined = {found: _every(found) for found in set(lists.values())}
    if len(combined) == 1:  # no "type", and every keyword checks values of every kind
        return next(iter(combined.values()))
    table = {kind: combined[found] for kind, found in lists.items()}

    def check(value: Any) -> bool:
        test = table.get(type(value))
        return test(value) if test is not None else table[_kind(value)](value)
    return check


def _every(checks: tuple[Check, ...]) -> Check:
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


def _never(value: Any) -> bool:
    return False


Built = tuple[Kinds, Check]  # what a keyword compiles to: the kinds it constrains, a check of a value of those kinds


def _properties(argument: dict, schema: dict) -> Built:
    """``properties`` and, beside it, ``additionalProperties``: one pass over the object's fields."""
    compiled = {name: _compile(sub) for name, sub in argument.items()}
    extra = _additional_test(schema)

    def check(value: dict) -> bool:
        for name, item in value.items():
            test = compiled.get(name, extra)
            if test is not None and not test(item):
                return False
        return True
    return _TYPES["object"], check


def _additional_properties(argument: Any, schema: dict) -> Built:
    test = _additional_test(schema)
    if "properties" in schema or test is None:
        return _ALL, _always  # checked by "properties", in the same pass
    return _TYPES["object"], lambda value: all(test(item) for item in value.values())


def _additional_test(schema: dict) -> Check | None:
    if "patternProperties" in schema:
        raise Unsupported("patternProperties")
    return None if "additionalProperties" not in schema else _compile(schema["additionalProperties"])


def _property_names(argument: Any, _: dict) -> Built:
    test = _compile(argument)
    return _TYPES["object"], lambda value: all(test(name) for name in value)


def _required(argument: list, _: dict) -> Built:
    names = frozenset(argument)
    return _TYPES["object"], lambda value: value.keys() >= names


def _size(kind: str, minimum: bool) -> Callable[[int, dict], Built]:
    """minProperties/maxProperties, minItems/maxItems, minLength/maxLength: a bound on ``len`` of one kind."""
    def build(argument: int, _: dict) -> Built:
        if minimum:
            return _TYPES[kind], lambda value: len(value) >= argument
        return _TYPES[kind], lambda value: len(value) <= argument
    return build


def _items(argument: Any, schema: dict) -> Built:
    if "prefixItems" in schema:
        raise Unsupported("prefixItems")
    test = _compile(argument)

    def check(value: list) -> bool:
        for item in value:
            if not test(item):
                return False
        return True
    return _TYPES["array"], check


def _unique_items(argument: bool, _: dict) -> Built:
    if not argument:
        return _ALL, _always

    def check(value: list) -> bool:
        return not any(json_equal(value[i], value[j]) for i in range(len(value)) for j in range(i + 1, len(value)))
    return _TYPES["array"], check


def _contains(argument: Any, schema: dict) -> Built:
    if "minContains" in schema or "maxContains" in schema:
        raise Unsupported("minContains/maxContains")
    test = _compile(argument)
    return _TYPES["array"], lambda value: any(test(item) for item in value)


def _pattern(argument: str, _: dict) -> Built:
    search = pattern_search(argument)
    return _TYPES["string"], lambda value: search(value) is not None


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


def _bound(make: Callable[[Any], Check]) -> Callable[[Any, dict], Built]:
    """minimum/maximum/exclusiveMinimum/exclusiveMaximum: *make* turns the bound into the check of a number."""
    def build(argument: Any, _: dict) -> Built:
        if isinstance(argument, bool) or not isinstance(argument, (int, float)):
            raise Unsupported("a bound that is not a number")
        return _NUMBERS, make(argument)
    return build


def _enum(argument: list, _: dict) -> Built:
    """A string or a number is looked up in a set of the options of its kind (:func:`json_equal` is Python's
    equality there: 1 equals 1.0); other values compare by :func:`json_equal`."""
    strings = frozenset(option for option in argument if isinstance(option, str))
    numbers = frozenset(option for option in argument if _is_number(option) and option == option)  # NaN equals none
    others = [option for option in argument if not isinstance(option, str) and not _is_number(option)]

    def check(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if _is_number(value):
            return value in numbers
        return any(json_equal(value, option) for option in others)
    return _ALL, check


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _const(argument: Any, schema: dict) -> Built:
    return _enum([argument], schema)


def _all_of(argument: list, _: dict) -> Built:
    return _ALL, _every(tuple(_compile(sub) for sub in argument))


def _any_of(argument: list, _: dict) -> Built:
    tests = [_compile(sub) for sub in argument]
    return _ALL, lambda value: any(test(value) for test in tests)


def _one_of(argument: list, _: dict) -> Built:
    tests = [_compile(sub) for sub in argument]
    return _ALL, lambda value: sum(1 for test in tests if test(value)) == 1


def _not(argument: Any, _: dict) -> Built:
    test = _compile(argument)
    return _ALL, lambda value: not test(value)


def _if(argument: Any, schema: dict) -> Built:
    condition = _compile(argument)
    then, otherwise = _compile(schema.get("then", True)), _compile(schema.get("else", True))
    return _ALL, lambda value: then(value) if condition(value) else otherwise(value)


_KEYWORDS: dict[str, Callable[[Any, dict], Built]] = {
    "properties": _properties, "additionalProperties": _additional_properties, "propertyNames": _property_names,
    "required": _required, "minProperties": _size("object", True), "maxProperties": _size("object", False),
    "items": _items, "minItems": _size("array", True), "maxItems": _size("array", False), "uniqueItems": _unique_items,
    "contains": _contains, "minLength": _size("string", True), "maxLength": _size("string", False), "pattern": _pattern,
    "minimum": _bound(lambda bound: lambda value: not value < bound),  # as jsonschema compares (NaN included)
    "maximum": _bound(lambda bound: lambda value: not value > bound),
    "exclusiveMinimum": _bound(lambda bound: lambda value: not value <= bound),
    "exclusiveMaximum": _bound(lambda bound: lambda value: not value >= bound),
    "enum": _enum, "const": _const, "allOf": _all_of, "anyOf": _any_of, "oneOf": _one_of, "not": _not, "if": _if,
}

"""A small evaluator of GitHub Actions expressions (``${{ ... }}``), enough to run the workflows' ``if:``,
``concurrency`` and ``run-name`` values against an event: literals, context paths (``a.b.c``, ``a[0]``,
``a.*.b``), ``!``, ``==``, ``!=``, ``&&``, ``||``, parentheses and the functions ``format``, ``contains``,
``startsWith``, ``fromJSON``. Semantics as GitHub documents them: ``&&`` / ``||`` return an operand, string
comparison ignores case, a missing property is null."""
from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!()\[\],.*])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))")


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"cannot parse {text[pos:]!r}")
        kind = match.lastgroup
        tokens.append((kind, match[kind]))
        pos = match.end()
    return tokens


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", -0.0) and not (isinstance(value, float) and value != value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


class _Parser:
    def __init__(self, text: str, context: dict) -> None:
        self.tokens, self.i, self.context = _tokens(text), 0, context

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.i]
        if expected is not None and token[1] != expected:
            raise ValueError(f"expected {expected!r}, got {token[1]!r}")
        self.i += 1
        return token

    def parse(self) -> Any:
        value = self.or_()
        if self.i != len(self.tokens):
            raise ValueError(f"unexpected {self.peek()!r}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == "||":
            self.take()
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.compare()
        while self.peek() == "&&":
            self.take()
            right = self.compare()
            value = right if truthy(value) else value
        return value

    def compare(self) -> Any:
        value = self.unary()
        while self.peek() in ("==", "!="):
            op = self.take()[1]
            right = self.unary()
            value = _equal(value, right) if op == "==" else not _equal(value, right)
        return value

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, text = self.take()
        if text == "(":
            value = self.or_()
            self.take(")")
            return value
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if self.peek() == "(":
            return self.call(text)
        return self.path(self.context.get(text))

    def path(self, value: Any) -> Any:
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                name = self.take()[1]
                if name == "*":
                    items = value if isinstance(value, list) else list((value or {}).values())
                    self.take(".")
                    key = self.take()[1]
                    value = [item.get(key) if isinstance(item, dict) else None for item in items]
                else:
                    value = value.get(name) if isinstance(value, dict) else None
            else:
                index = self.or_()
                self.take("]")
                if isinstance(value, list) and isinstance(index, int):
                    value = value[index] if index < len(value) else None
                else:
                    value = value.get(index) if isinstance(value, dict) else None
        return value

    def call(self, name: str) -> Any:
        self.take("(")
        args = []
        while self.peek() != ")":
            args.append(self.or_())
            if self.peek() == ",":
                self.take()
        self.take(")")
        lowered = name.lower()
        if lowered == "format":
            return re.sub(r"\{(\d+)\}", lambda m: _text(args[int(m[1]) + 1]), args[0])
        if lowered == "contains":
            haystack, needle = args
            if isinstance(haystack, list):
                return any(_equal(item, needle) for item in haystack)
            return _text(needle).lower() in _text(haystack).lower()
        if lowered == "startswith":
            return _text(args[0]).lower().startswith(_text(args[1]).lower())
        if lowered == "fromjson":
            return json.loads(args[0])
        status = self.context.get("__status__")  # success() / failure() / cancelled() / always(), when given
        if isinstance(status, dict) and lowered in status:
            return status[lowered]
        raise ValueError(f"unknown function {name}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def evaluate(expression: str, context: dict) -> Any:
    """The value of one expression (without ``${{ }}``)."""
    return _Parser(expression, context).parse()


def render(template: str, context: dict) -> str:
    """A string with ``${{ ... }}`` parts replaced by their values (as GitHub writes them into a value)."""
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _text(evaluate(m[1], context)), template, flags=re.S)


def condition(text: str, context: dict) -> bool:
    """A job's or step's ``if:`` (with or without ``${{ }}``)."""
    text = text.strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    return truthy(evaluate(text, context))

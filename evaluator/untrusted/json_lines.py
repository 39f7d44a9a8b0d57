"""The line of every value of a JSON text, for the messages about it (``json`` itself gives no lines)."""
from __future__ import annotations

import json
import re

_JSON_TOKEN = re.compile(r'(\s*)("[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+)', re.S)  # (whitespace, token)


def scan_json_lines(text: str) -> tuple[dict[tuple, int], list[tuple[tuple, int, int]]]:
    """Lines of every value of a JSON text already known to be valid, and its duplicate keys as
    ``(path, line, first_line)``. Run only when a line is asked for: one pass over the tokens, a line counted
    from the whitespace before each (valid JSON has no raw newline elsewhere), an open container per level."""
    lines: dict[tuple, int] = {}
    duplicates: list[tuple[tuple, int, int]] = []
    stack: list[list] = []  # per open container: [its path, {key: line} (an object) or None (a list), next index]
    line, expect_key, key_path, key_line = 1, False, None, 0
    try:
        for space, token in _JSON_TOKEN.findall(text):
            if "\n" in space:
                line += space.count("\n")
            first = token[0]
            if first == ",":
                expect_key = stack[-1][1] is not None
            elif first == ":":
                continue
            elif first in "}]":
                stack.pop()
                expect_key = False
            elif expect_key:  # an object's key
                key = json.loads(token) if "\\" in token else token[1:-1]
                path, seen = stack[-1][0], stack[-1][1]
                if key in seen:
                    duplicates.append((path + (key,), line, seen[key]))
                seen[key] = line
                key_path, key_line, expect_key = path + (key,), line, False
            else:  # a value: under its key, at the next index of its list, or the root
                if key_path is not None:
                    path, at, key_path = key_path, key_line, None
                elif stack:
                    top = stack[-1]
                    path, at = top[0] + (top[2],), line
                    top[2] += 1
                else:
                    path, at = (), line
                lines.setdefault(path, at)
                if first == "{":
                    stack.append([path, {}, 0])
                    expect_key = True
                elif first == "[":
                    stack.append([path, None, 0])
    except (IndexError, ValueError, TypeError):
        pass  # the text was not valid JSON; keep what was found
    return lines, duplicates

"""Safe YAML/JSON reading: values, line numbers, and every refused input named with file and line."""
from __future__ import annotations

import pytest

from evaluator.errors import APBError
from evaluator.untrusted.safeio import MAX_BYTES, format_field, load_json, load_yaml, parse_json_text, parse_yaml_text

MANIFEST = """\
schema_version: 1
ap_key: HYDRA_Sehwag2020Hydra
models:
  - architecture: resnet18
    sparsity: 90
    url: gdrive://abcdefghijkl
    sha256: null
    ok: true
    version: "1.0"
    date: 2024-01-01
"""


def only_problem(error: pytest.ExceptionInfo) -> tuple[str, int | None, str | None, str]:
    assert len(error.value.problems) == 1
    problem = error.value.problems[0]
    return problem.file, problem.line, problem.field, problem.message


def test_yaml_values_and_lines(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    data, lines = load_yaml(path)
    entry = data["models"][0]
    assert entry == {"architecture": "resnet18", "sparsity": 90, "url": "gdrive://abcdefghijkl", "sha256": None,
                     "ok": True, "version": "1.0", "date": "2024-01-01"}
    assert lines.line(("models",)) == 3
    assert lines.line(("models", 0)) == 4
    assert lines.line(("models", 0, "url")) == 6
    assert lines.line(("models", 0, "missing")) == 4  # nearest existing parent
    assert lines.line(()) == 1


def test_json_values_and_lines(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{\n  "a": 1,\n  "b": [\n    {"c": 2},\n    {"d": [3,\n 4]}\n  ]\n}\n', encoding="utf-8")
    data, lines = load_json(path)
    assert data == {"a": 1, "b": [{"c": 2}, {"d": [3, 4]}]}
    assert lines.line(("a",)) == 2
    assert lines.line(("b", 0, "c")) == 4
    assert lines.line(("b", 1, "d", 1)) == 6
    assert lines.line(("b", 1, "zzz")) == 5


def test_json_lines_skip_punctuation_inside_strings_and_read_escaped_keys():
    text = '{\n  "k\\"q": "a{b[c,d:e\\\\",\n  "\\u00e9": [\n    "]}",\n    {}\n  ],\n  "z": {"y": []}\n}'
    data, lines = parse_json_text(text, "t.json")
    assert data == {'k"q': 'a{b[c,d:e\\', "é": ["]}", {}], "z": {"y": []}}
    assert (lines.line(('k"q',)), lines.line(("é",)), lines.line(("é", 0)), lines.line(("é", 1))) == (2, 3, 4, 5)
    assert (lines.line(("z",)), lines.line(("z", "y")), lines.line(("z", "y", 0))) == (7, 7, 7)
    with pytest.raises(APBError, match=r"duplicate key 'a' \(first on line 2\)") as raised:
        parse_json_text('{\n "a": "x,{",\n "b": [1,\n 2],\n "a": 3}', "d.json")
    assert raised.value.problems[0].line == 5


def test_text_variants_accept_bytes_from_git_show():
    data, lines = parse_yaml_text(MANIFEST.encode(), "HEAD:submissions/x/manifest.yaml")
    assert data["ap_key"] == "HYDRA_Sehwag2020Hydra" and lines.line(("ap_key",)) == 2
    assert parse_json_text(b'{"a": [1]}', "HEAD:x.json")[0] == {"a": [1]}


@pytest.mark.parametrize("parse, text, line, words", [
    (parse_yaml_text, "a: [1,\n", 2, "invalid YAML"),
    (parse_yaml_text, "a: b: c\n", 1, "invalid YAML"),
    (parse_yaml_text, "a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
    (parse_yaml_text, "x:\n  a: &anchor 1\n  b: 2\n", 2, "anchor &anchor"),
    (parse_yaml_text, "a: 1\nb: *undefined\n", 2, "alias *undefined"),
    (parse_yaml_text, "a: !!str 5\n", 1, "tag"),
    (parse_yaml_text, "a: !custom {b: 1}\n", 1, "tag !custom"),
    (parse_yaml_text, "a: !!python/object:os.system x\n", 1, "tag"),
    (parse_yaml_text, "<<: {a: 1}\nb: 2\n", 1, "merge keys"),
    (parse_yaml_text, "a: 1\n---\nb: 2\n", 2, "more than one YAML document"),
    (parse_yaml_text, "? [a, b]\n: 1\n", 1, "plain string"),
    (parse_yaml_text, "1: a\n", 1, "must be a string"),
    (parse_yaml_text, "a: .nan\n", 1, "non-finite"),
    (parse_yaml_text, "a: -.inf\n", 1, "non-finite"),
    (parse_json_text, '{"a": [1,}', 1, "invalid JSON"),
    (parse_json_text, '{\n"a": 1,\n"a": 2}', 3, "duplicate key 'a' (first on line 2)"),
    (parse_json_text, '{"a": NaN}', 1, "non-finite number NaN"),
    (parse_json_text, '{"a": -Infinity}', 1, "non-finite"),
    (parse_json_text, '\ufeff{"a": 1}', 1, "invalid JSON"),
    (parse_json_text, "", 1, "invalid JSON"),
])
def test_refusals_name_file_and_line(parse, text, line, words):
    with pytest.raises(APBError) as error:
        parse(text, "some.file")
    file, got_line, _, message = only_problem(error)
    assert file == "some.file" and got_line == line and words in message


def test_yaml_duplicate_key_names_the_field():
    with pytest.raises(APBError) as error:
        parse_yaml_text("models:\n  - url: a\n    url: b\n", "m.yaml")
    assert only_problem(error)[1:3] == (3, "models[0].url")


def test_json_duplicate_nested_key_names_the_field():
    with pytest.raises(APBError) as error:
        parse_json_text('{"m": {\n "x": 1,\n "x": 2}}', "r.json")
    assert only_problem(error)[1:3] == (3, "m.x")


@pytest.mark.parametrize("loader, name", [(load_yaml, "m.yaml"), (load_json, "r.json")])
def test_non_utf8_bytes_are_refused_with_their_line(tmp_path, loader, name):
    path = tmp_path / name
    path.write_bytes(b'{"a": 1,\n"b": "caf\xe9"}\n' if name.endswith("json") else b"a: 1\nb: caf\xe9\n")
    with pytest.raises(APBError) as error:
        loader(path)
    file, line, _, message = only_problem(error)
    assert file == str(path) and line == 2 and "not UTF-8" in message


@pytest.mark.parametrize("loader, name", [(load_yaml, "m.yaml"), (load_json, "r.json")])
def test_files_over_the_size_limit_are_refused_before_parsing(tmp_path, loader, name):
    path = tmp_path / name
    path.write_bytes(b"#" * (MAX_BYTES + 1) if name.endswith("yaml") else b" " * (MAX_BYTES + 1))
    with pytest.raises(APBError) as error:
        loader(path)
    file, line, _, message = only_problem(error)
    assert file == str(path) and "larger than" in message and f"{MAX_BYTES:,}" in message


def test_text_over_the_size_limit_is_refused():
    with pytest.raises(APBError, match="larger than"):
        parse_yaml_text("a: 1\n" + "#" * MAX_BYTES, "HEAD:m.yaml")
    with pytest.raises(APBError, match="larger than"):
        parse_json_text(b" " * (MAX_BYTES + 1), "HEAD:r.json")


def test_files_stat_calls_empty_are_read_to_the_end_and_to_the_limit(tmp_path):
    """A pipe (stat says 0 bytes, and reads come in pieces) is read to its end, and refused past the limit;
    a directory raises what open() raises."""
    import os
    import threading
    import time

    from evaluator.untrusted.safeio import read_limited_bytes

    def pipe_of(*pieces: bytes):
        path = tmp_path / f"pipe{len(list(tmp_path.iterdir()))}"
        os.mkfifo(path)

        def write() -> None:
            with open(path, "wb", buffering=0) as handle:
                for piece in pieces:
                    handle.write(piece)
                    time.sleep(0.05)
        threading.Thread(target=write, daemon=True).start()
        return path

    assert read_limited_bytes(pipe_of(b"a: 1\n", b"b: 2\n")) == b"a: 1\nb: 2\n"
    with pytest.raises(APBError, match="larger than"):
        read_limited_bytes(pipe_of(b"#" * 70_000, b"#" * 70_000), limit=100_000)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        read_limited_bytes(tmp_path)


def test_a_parse_handed_out_twice_is_two_copies_of_the_same_values():
    text = "a: [1, {b: 2}]\nc: [true, 1.5, null, '7', 7]\n"
    first, _ = parse_yaml_text(text, "m.yaml")
    first["a"][1]["b"] = 3
    first["a"].append(4)
    again, lines = parse_yaml_text(text, "m.yaml")
    assert again == {"a": [1, {"b": 2}], "c": [True, 1.5, None, "7", 7]} and lines.line(("c", 4)) == 2
    assert [type(value) for value in again["c"]] == [bool, float, type(None), str, int]


def test_scalars_shared_by_files_keep_each_files_lines_and_refusals():
    assert parse_yaml_text("a: 1\nb: x\n", "one.yaml")[0] == {"a": 1, "b": "x"}
    for text, line in [("b: x\n\na: .inf\n", 3), ("a: 1\nc: .inf\n", 2)]:
        with pytest.raises(APBError) as error:
            parse_yaml_text(text, "two.yaml")
        assert only_problem(error)[:2] == ("two.yaml", line)


def test_format_field():
    assert format_field(("models", 3, "url")) == "models[3].url"
    assert format_field(()) == "(root)"
    assert format_field((0, "a")) == "[0].a"


# -- libyaml fast path: the same data, lines and problems as ruamel's pure YAML 1.2 parser ----------------------

DIVERGENT = ["\t", "\u2028", "\ufeff", "\r", "\x85", ">-#x\n", "{url: https://example.org/a}", "[a:b]", "a:\n  - |+2#c\n"]
TOKENS = DIVERGENT + ["", ":", ": ", "- ", "'", '"', "{", "}", "[", "]", ",", "#", "&a ", "*a", "!!str ", "\n", "\n  ",
                      "? ", "|", ">", "%YAML 1.1\n---\n", "---\n", "...\n", '"\\/"', "<<: ", "0o17", "1:20", "Yes", "~"]


def _parsed(text: str) -> tuple:
    from evaluator.untrusted import safeio

    safeio._PARSED_YAML.clear()
    try:
        data, lines = parse_yaml_text(text, "x.yaml")
        return "ok", data, lines._table()
    except APBError as error:
        return "refused", [(p.message, p.line) for p in error.problems]


def _mutations(count: int):
    import random
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text(encoding="utf-8") for p in sorted((root / "evaluator").rglob("*.yaml"))]
    texts += ['schema_version: 1\nap_key: X_Y2024Z\nmodels:\n  - {url: "https://e.org/m.pt", sparsity: 90}\n']
    rng = random.Random(22)
    for index in range(count):
        text = texts[index % len(texts)]
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(TOKENS) + text[at + rng.randrange(4):]
        yield text


def test_a_yaml_directive_is_read_as_the_pure_parser_reads_it(monkeypatch):
    """``%YAML 1.1`` makes ruamel's parser resolve scalars by YAML 1.1 (``yes`` a boolean, ``017`` octal), which
    libyaml never reports: such a text goes to the pure parser, so the data does not depend on the fast path."""
    from evaluator.untrusted import safeio

    body = "a: yes\nb: 0o17\nc: 017\nd: 1:20\ne: on\nf: 0b11\ng: 1_000\n"
    texts = [f"%YAML {version}\n---\n{body}" for version in ("1.1", "1.2")] + [f"# c\n%YAML 1.1\n---\n{body}"]
    fast = [_parsed(text) for text in texts]
    real = safeio._parse_yaml
    monkeypatch.setattr(safeio, "_parse_yaml", lambda text, name, *, fast: real(text, name, fast=False))
    assert fast == [_parsed(text) for text in texts]
    assert fast[0][1]["a"] is True and fast[1][1]["a"] == "yes"


def test_libyaml_is_installed_and_used_where_it_reads_as_the_pure_parser(monkeypatch):
    """ruamel.yaml.clib is a dependency; a text without the characters where YAML 1.1 and 1.2 differ takes it."""
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    from evaluator.untrusted import safeio

    assert CParser is not None and YAML(typ="safe", pure=False).Parser is CParser
    used: list[bool] = []
    real = safeio._parse_yaml
    monkeypatch.setattr(safeio, "_parse_yaml", lambda text, name, *, fast: used.append(fast) or real(text, name, fast=fast))
    for text, fast in [("a: 1\nb: [x, y]\n", [True]), ("a: 1  # tab\t\n", [False]), ("a: {u: https://e.org/x}\n", [True, False])]:
        used.clear()
        assert _parsed(text)[0] == "ok" and used == fast, (text, used)


def test_libyaml_fast_path_reads_every_mutated_text_as_the_pure_parser(monkeypatch):
    """Mutations of the repository's YAML files, with the characters where libyaml and the YAML 1.2 parser
    disagree (tabs, NEL/LS/PS and CR line breaks, a byte-order mark, `>-#`, a URL in a flow mapping): the parse
    (data and lines) or the refusal (message and line) is the pure parser's, every time."""
    from evaluator.untrusted import safeio

    texts = list(_mutations(600))
    fast = [_parsed(text) for text in texts]
    real = safeio._parse_yaml
    monkeypatch.setattr(safeio, "_parse_yaml", lambda text, name, *, fast: real(text, name, fast=False))
    pure = [_parsed(text) for text in texts]
    assert sum(result[0] == "ok" for result in pure) > 150 and sum(result[0] == "refused" for result in pure) > 150
    differ = [(text, a, b) for text, a, b in zip(texts, fast, pure) if a != b]
    assert not differ, differ[:3]

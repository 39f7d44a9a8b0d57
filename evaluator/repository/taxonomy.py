"""The taxonomy's vocabulary (``taxonomy/vocabulary.yaml``), its schema with the vocabulary filled in, and the
display strings of the three taxonomy tables and their legend."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from evaluator.errors import APBError, Problem
from evaluator.paths import TAXONOMY_DIR
from evaluator.untrusted.safeio import LineMap, load_json, load_yaml

VOCABULARY_FILE = Path(TAXONOMY_DIR) / "vocabulary.yaml"
SCHEMA_FILE = Path(TAXONOMY_DIR) / "taxonomy.schema.json"


def load_vocabulary(root: Path) -> dict:
    """The vocabulary of the repository at *root*; ``APBError`` listing every problem if it is malformed."""
    path = root / VOCABULARY_FILE
    data, lines = load_yaml(path)
    problems = vocabulary_problems(data, lines, str(path))
    if problems:
        raise APBError(problems)
    return data


def vocabulary_problems(data: Any, lines: LineMap, file: str) -> list[Problem]:
    """What is wrong with a vocabulary document (the rules its consumers rely on)."""
    problems: list[Problem] = []

    def problem(path: tuple, message: str) -> None:
        problems.append(Problem(file, message, lines.line(path), ".".join(str(p) for p in path) or None))

    if not isinstance(data, dict):
        return [Problem(file, "the vocabulary must be a mapping", 1)]
    unknown = set(data) - {"schema_version", "not_specified", "fields", "legend", "pipelines"}
    for key in sorted(unknown):
        problem((key,), "unknown field; allowed: schema_version, not_specified, fields, legend, pipelines")
    if data.get("schema_version") != 1:
        problem(("schema_version",), "must be 1")
    not_specified = data.get("not_specified")
    if not (isinstance(not_specified, dict) and _is_text(not_specified.get("abbreviation"))
            and _is_text(not_specified.get("definition"))):
        problem(("not_specified",), "needs an abbreviation and a definition")
    fields = data.get("fields")
    if not isinstance(fields, dict) or not fields:
        problem(("fields",), "needs at least one field")
        return problems
    seen: dict[str, str] = {}
    for name, field in fields.items():
        if not isinstance(field, dict) or not isinstance(field.get("values"), dict) or not field["values"]:
            problem(("fields", name), "needs a non-empty mapping 'values' of abbreviation -> definition")
            continue
        for key in sorted(set(field) - {"description", "abbreviation", "definition", "not_specified", "values"}):
            problem(("fields", name, key), "unknown field; allowed: description, abbreviation, definition, "
                                           "not_specified, values")
        for value, definition in field["values"].items():
            if not _is_text(definition):
                problem(("fields", name, "values", value), "the definition must be non-empty text")
            if value in seen and seen[value] != name:
                problem(("fields", name, "values", value), f"{value!r} is already a value of {seen[value]!r}; "
                                                           "abbreviations must be unique")
            seen[value] = name
        if ("abbreviation" in field) != ("definition" in field):
            problem(("fields", name), "abbreviation and definition go together")
    known = set(seen) | {f["abbreviation"] for f in fields.values() if isinstance(f, dict) and "abbreviation" in f}
    if isinstance(not_specified, dict):
        known.add(not_specified.get("abbreviation"))
    legend = data.get("legend")
    if not isinstance(legend, list):
        problem(("legend",), "must be a list of abbreviations")
    else:
        for index, item in enumerate(legend):
            if item not in known:
                problem(("legend", index), f"{item!r} is neither a value, a field abbreviation nor n.s.")
    problems += _pipeline_problems(data.get("pipelines"), fields, lines, file)
    return problems


def _pipeline_problems(pipelines: Any, fields: dict, lines: LineMap, file: str) -> list[Problem]:
    problems: list[Problem] = []
    stages = list(fields.get("pipeline", {}).get("values", {})) if isinstance(fields.get("pipeline"), dict) else []
    if not isinstance(pipelines, dict) or list(pipelines) != stages:
        return [Problem(file, f"pipelines must describe the stages of fields.pipeline, in its order: {stages}",
                        lines.line(("pipelines",)), "pipelines")]
    for stage, table in pipelines.items():
        where = ("pipelines", stage)
        if not isinstance(table, dict) or not _is_text(table.get("title")) or not isinstance(table.get("columns"), list):
            problems.append(Problem(file, "needs a title and a list of columns", lines.line(where), ".".join(where)))
            continue
        for index, column in enumerate(table["columns"]):
            if not (isinstance(column, dict) and _is_text(column.get("title")) and _is_text(column.get("field"))):
                problems.append(Problem(file, "a column needs a title and a field", lines.line(where + ("columns", index)),
                                        f"pipelines.{stage}.columns[{index}]"))
        rows = table.get("rows", [])
        if not isinstance(rows, list) or not all(isinstance(row, str) for row in rows) or len(set(rows)) != len(rows):
            problems.append(Problem(file, "rows must be a list of distinct ap_keys", lines.line(where + ("rows",)),
                                    f"pipelines.{stage}.rows"))
    return problems


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def allowed_values(vocabulary: dict, field: str) -> list[str]:
    """The values a field may take: its vocabulary values, plus "n.s." where the field allows it."""
    spec = vocabulary["fields"][field]
    values = list(spec["values"])
    if spec.get("not_specified"):
        values.append(vocabulary["not_specified"]["abbreviation"])
    return values


def taxonomy_schema(root: Path, vocabulary: dict) -> dict:
    """The taxonomy JSON Schema of *root* with every ``x-vocabulary`` field's ``enum`` filled from *vocabulary*."""
    path = root / SCHEMA_FILE
    schema, _ = load_json(path)
    return fill_vocabulary(schema, vocabulary, str(path))


def fill_vocabulary(schema: Any, vocabulary: dict, file: str = str(SCHEMA_FILE)) -> Any:
    """A copy of *schema* where each ``{"x-vocabulary": field}`` also holds ``"enum": allowed_values(field)``."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            field = node.get("x-vocabulary")
            if field is not None:
                if field not in vocabulary["fields"]:
                    raise APBError(Problem(file, f"x-vocabulary names {field!r}, which taxonomy/vocabulary.yaml "
                                                 "does not define", None, "x-vocabulary"))
                node["enum"] = allowed_values(vocabulary, field)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def _display_order(vocabulary: dict) -> dict[str, int]:
    order: dict[str, int] = {}
    for field in vocabulary["fields"].values():
        for position, value in enumerate(field["values"]):
            order.setdefault(value, position)
    return order


def display(value: Any, vocabulary: dict) -> str:
    """A taxonomy value as the tables show it: a training step as ``KD + AT``, a list in vocabulary order joined
    with ``, `` (``S, US``), anything else as text."""
    if isinstance(value, dict) and "methods" in value:
        return " + ".join(value["methods"])
    if isinstance(value, list):
        order = _display_order(vocabulary)
        return ", ".join(sorted(value, key=lambda item: (order.get(item, len(order)), item)))
    return "" if value is None else str(value)


def _lookup(entry: dict, dotted: str) -> Any:
    value: Any = entry
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def table_columns(entry: dict, vocabulary: dict) -> dict[str, str]:
    """The cells of *entry*'s row in its pipeline's table: column title -> display string, in column order."""
    table = vocabulary["pipelines"][entry["pipeline"]["stage"]]
    return {column["title"]: display(_lookup(entry, column["field"]), vocabulary) for column in table["columns"]}


def legend(vocabulary: dict) -> list[tuple[str, str]]:
    """``(abbreviation, definition)`` lines of the legend, in vocabulary order."""
    definitions: dict[str, str] = {}
    for field in vocabulary["fields"].values():
        definitions.update(field["values"])
        if "abbreviation" in field:
            definitions[field["abbreviation"]] = field["definition"]
    not_specified = vocabulary["not_specified"]
    definitions[not_specified["abbreviation"]] = not_specified["definition"]
    return [(item, definitions[item]) for item in vocabulary["legend"]]


def table_sort_key(entry: dict, vocabulary: dict) -> tuple:
    """Sort key of a taxonomy entry: pipeline order, then the table's listed rows, then year and name."""
    stages = list(vocabulary["pipelines"])
    stage = entry["pipeline"]["stage"]
    rows = vocabulary["pipelines"][stage].get("rows", [])
    listed = rows.index(entry["ap_key"]) if entry["ap_key"] in rows else len(rows)
    return (stages.index(stage), listed, entry.get("year", 0), entry.get("name", ""), entry["ap_key"])

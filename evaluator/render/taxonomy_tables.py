"""``taxonomy/README.md``: one table per pipeline stage (columns and row order from
``taxonomy/vocabulary.yaml``) showing everything the entries hold (a training step's adversarial-training
attack, ``AT (TRADES)``; structured pruning's granularity, ``S (channels)``), the legend, and one entry per AP
(paper, venue, code, and links to its own rows on the leaderboard)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from evaluator.render.markdown import GENERATED_NOTE, github_anchor, inline, link, pipe_table
from evaluator.repository.taxonomy import display, legend, table_columns, table_sort_key

NAME_FIELD = "name"
STRUCTURE_FIELD = "structure"


def entry_anchor(ap_key: str) -> str:
    """The anchor of an AP's entry in taxonomy/README.md (its heading is the ap_key)."""
    return github_anchor(ap_key)


def value_text(value: Any, vocabulary: dict | None = None) -> str:
    """A taxonomy value as the tables show it, with a training step's adversarial-training attack:
    ``KD + AT (PGD)``."""
    if isinstance(value, dict) and "methods" in value:
        attack = value.get("adversarial_training")
        return " + ".join(f"{m} ({attack})" if m == "AT" and attack else m for m in value["methods"])
    return display(value, vocabulary or {"fields": {}})


def detailed_columns(entry: dict, vocabulary: dict) -> dict[str, str]:
    """The cells of *entry*'s row: the vocabulary's columns, training steps with their attack and the structure
    with the granularity of its structured pruning."""
    cells = table_columns(entry, vocabulary)
    for column in vocabulary["pipelines"][entry["pipeline"]["stage"]]["columns"]:
        field = column["field"]
        if field.startswith("pipeline."):
            step = entry["pipeline"].get(field.split(".", 1)[1])
            if isinstance(step, dict):
                cells[column["title"]] = value_text(step)
        elif field == STRUCTURE_FIELD and entry.get("granularity"):
            cells[column["title"]] = ", ".join(f"S ({entry['granularity']})" if part == "S" else part
                                               for part in cells[column["title"]].split(", "))
    return cells


def pipeline_table(entries: list[dict], stage: str, vocabulary: dict, entry_page: str = "") -> str:
    """The table of one pipeline stage; the name column links to each AP's entry (below, or on *entry_page*)."""
    columns = vocabulary["pipelines"][stage]["columns"]
    name_titles = {column["title"] for column in columns if column["field"] == NAME_FIELD}
    rows = []
    for entry in entries:
        cells = detailed_columns(entry, vocabulary)
        for title in name_titles:
            cells[title] = link(inline(cells[title]), f"{entry_page}#{entry_anchor(entry['ap_key'])}")
        rows.append(cells)
    frame = pd.DataFrame(rows, columns=[column["title"] for column in columns])
    return pipe_table(frame, ["left"] * len(columns))


def entry_section(entry: dict, rows: Sequence[tuple[str, str]]) -> list[str]:
    """The heading (the ap_key, so links stay stable), the paper, venue and links of one AP, and links to its
    leaderboard rows (*rows*: ``(text, target)``)."""
    venue = entry.get("venue") or entry.get("year")
    title = f": *{inline(entry['title'])}*" if entry.get("title") else ""  # null: not recorded yet, never "None"
    described = f"**{inline(entry['name'])}**{title}" + (f" ({inline(venue)})" if venue else "") + \
        ("" if title else "; title not recorded yet" + (" (see the paper)" if entry.get("paper_url") else ""))
    links = [link("paper", entry.get("paper_url")) if entry.get("paper_url") else None,
             link("code", entry.get("code_url")) if entry.get("code_url") else None]
    lines = ["", f"### {entry['ap_key']}", "", described]
    shown = [item for item in links if item]
    if rows:
        shown.append("leaderboard: " + ", ".join(link(text, target) for text, target in rows))
    if shown:
        lines += ["", " · ".join(shown)]
    return lines


def render_taxonomy_readme(entries: Iterable[dict], vocabulary: dict,
                           leaderboard_rows: Mapping[str, Sequence[tuple[str, str]]],
                           entry_pages: Mapping[str, str] | None = None) -> str:
    """The taxonomy README of *entries*; *leaderboard_rows*: ap_key -> links ``(text, target relative to
    taxonomy/README.md)`` to its rows on the leaderboard. With *entry_pages* (stage -> link to its page of
    entries, :func:`render_taxonomy_entries`), the entries are there and the README lists those pages."""
    ordered = sorted(entries, key=lambda entry: table_sort_key(entry, vocabulary))
    lines = ["# Taxonomy of adversarial pruning methods", "", GENERATED_NOTE, "",
             "Each adversarial pruning (AP) method is described by `submissions/<ap_key>/taxonomy.json`, with "
             "values from `taxonomy/vocabulary.yaml`. The pipeline says when an AP prunes (after, before or "
             "during training); the other columns say how (structure, locality, criterion). A training step "
             "names the attack of its adversarial training where the paper does, e.g. AT (TRADES); structured "
             "pruning names what it removes, e.g. S (filters)."]
    for stage, table in vocabulary["pipelines"].items():
        members = [entry for entry in ordered if entry["pipeline"]["stage"] == stage]
        if members:
            page = (entry_pages or {}).get(stage, "")
            lines += ["", f"## {table['title']}", "", pipeline_table(members, stage, vocabulary, page)]
    lines += ["", "## Legend", ""]
    lines += [f"- {abbreviation}: {definition}" for abbreviation, definition in legend(vocabulary)]
    lines += ["", "## Entries"]
    if entry_pages is not None:
        counts = {stage: sum(entry["pipeline"]["stage"] == stage for entry in ordered) for stage in entry_pages}
        lines += ["", "Paper, venue, code and leaderboard rows of each AP, a page per pipeline stage:", ""]
        lines += [f"- {link(vocabulary['pipelines'][stage]['title'], target)} ({counts[stage]} entries)"
                  for stage, target in entry_pages.items()]
        return "\n".join(lines) + "\n"
    for entry in ordered:
        lines += entry_section(entry, leaderboard_rows.get(entry["ap_key"], ()))
    return "\n".join(lines) + "\n"


def render_taxonomy_entries(entries: Iterable[dict], stage: str, vocabulary: dict,
                            leaderboard_rows: Mapping[str, Sequence[tuple[str, str]]], readme: str) -> str:
    """The page of one pipeline stage's entries (*leaderboard_rows* as in :func:`render_taxonomy_readme`, relative
    to this page; *readme*: the link back to the taxonomy README)."""
    ordered = sorted((e for e in entries if e["pipeline"]["stage"] == stage),
                     key=lambda entry: table_sort_key(entry, vocabulary))
    lines = [f"# Taxonomy entries: {vocabulary['pipelines'][stage]['title']}", "", GENERATED_NOTE, "",
             f"The {len(ordered)} APs of this pipeline stage, in the order of their table in the "
             f"{link('taxonomy', readme)}."]
    for entry in ordered:
        lines += entry_section(entry, leaderboard_rows.get(entry["ap_key"], ()))
    return "\n".join(lines) + "\n"

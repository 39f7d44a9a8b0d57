"""``taxonomy/README.md``: one table per pipeline stage (columns and row order from
``taxonomy/vocabulary.yaml``), the legend, and one entry per AP (paper, venue, code) that the tables and the
leaderboard link to."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from evaluator.render.layout import LEADERBOARD_README, TAXONOMY_README, relative_link
from evaluator.render.markdown import GENERATED_NOTE, github_anchor, link, pipe_table
from evaluator.taxonomy import legend, table_columns, table_sort_key

NAME_FIELD = "name"


def entry_anchor(ap_key: str) -> str:
    """The anchor of an AP's entry in taxonomy/README.md (its heading is the ap_key)."""
    return github_anchor(ap_key)


def pipeline_table(entries: list[dict], stage: str, vocabulary: dict) -> str:
    """The table of one pipeline stage; the name column links to each AP's entry below."""
    columns = vocabulary["pipelines"][stage]["columns"]
    name_titles = {column["title"] for column in columns if column["field"] == NAME_FIELD}
    rows = []
    for entry in entries:
        cells = table_columns(entry, vocabulary)
        for title in name_titles:
            cells[title] = link(cells[title], f"#{entry_anchor(entry['ap_key'])}")
        rows.append(cells)
    frame = pd.DataFrame(rows, columns=[column["title"] for column in columns])
    return pipe_table(frame, ["left"] * len(columns))


def entry_section(entry: dict, has_results: bool) -> list[str]:
    """The heading (the ap_key, so links stay stable) and the paper, venue and links of one AP."""
    venue = entry.get("venue") or entry.get("year")
    described = f"**{entry['name']}**: *{entry.get('title', '')}*" + (f" ({venue})" if venue else "")
    links = [link("paper", entry.get("paper_url")) if entry.get("paper_url") else None,
             link("code", entry.get("code_url")) if entry.get("code_url") else None,
             link("leaderboard", relative_link(TAXONOMY_README, LEADERBOARD_README)) if has_results else None]
    lines = ["", f"### {entry['ap_key']}", "", described]
    shown = [item for item in links if item]
    if shown:
        lines += ["", " · ".join(shown)]
    return lines


def render_taxonomy_readme(entries: Iterable[dict], vocabulary: dict, with_results: set[str]) -> str:
    """The taxonomy README of *entries*; *with_results* holds the ap_keys that appear on the leaderboard."""
    ordered = sorted(entries, key=lambda entry: table_sort_key(entry, vocabulary))
    lines = ["# Taxonomy of adversarial pruning methods", "", GENERATED_NOTE, "",
             "Each adversarial pruning (AP) method is described by `submissions/<ap_key>/taxonomy.json`, with "
             "values from `taxonomy/vocabulary.yaml`. The pipeline says when an AP prunes (after, before or "
             "during training); the other columns say how (structure, locality, criterion)."]
    for stage, table in vocabulary["pipelines"].items():
        members = [entry for entry in ordered if entry["pipeline"]["stage"] == stage]
        if members:
            lines += ["", f"## {table['title']}", "", pipeline_table(members, stage, vocabulary)]
    lines += ["", "## Legend", ""]
    lines += [f"- {abbreviation}: {definition}" for abbreviation, definition in legend(vocabulary)]
    lines += ["", "## Entries"]
    for entry in ordered:
        lines += entry_section(entry, entry["ap_key"] in with_results)
    return "\n".join(lines) + "\n"

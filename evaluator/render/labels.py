"""How each AP is named on the leaderboard: its taxonomy ``name`` (made unique with the ap_key where two APs
share one), a link to its taxonomy entry (on its pipeline stage's page), its code URL, and its paper's URL, venue and year."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from evaluator.render.layout import taxonomy_page
from evaluator.render.tables import ApLabel
from evaluator.render.taxonomy_tables import entry_anchor


def ap_labels(entries: Iterable[dict]) -> dict[str, ApLabel]:
    """ap_key -> label, for every taxonomy entry."""
    entries = sorted(entries, key=lambda entry: entry["ap_key"])
    shared = {name for name, count in Counter(entry["name"] for entry in entries).items() if count > 1}
    labels = {}
    for entry in entries:
        name = f"{entry['name']} ({entry['ap_key']})" if entry["name"] in shared else entry["name"]
        labels[entry["ap_key"]] = ApLabel(entry["ap_key"], name, entry_anchor(entry["ap_key"]), entry.get("code_url"),
                                          entry.get("paper_url"), entry.get("venue"), entry.get("year"),
                                          taxonomy_page(entry["pipeline"]["stage"]))
    return labels

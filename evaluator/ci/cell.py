"""The published numbers of a model's leaderboard cell (same architecture, dataset, structure kind and
sparsity), for the bot comment: where a new model's AutoAttack accuracy would stand among them. Only a record
of the published numbers' threat model (Linf at 8/255) is compared with them."""
from __future__ import annotations

from pathlib import Path

from evaluator.registry.model_keys import parse_model_key

PUBLISHED_PROTOCOL = "published-2024"
RANKED_METRIC = "aa_robust_accuracy"


def cell_of(model_key: str) -> tuple[str, str, str, int]:
    """``(architecture, dataset, structure_kind, sparsity)`` of a model key."""
    key = parse_model_key(model_key)
    return key.architecture, key.dataset, key.structure_kind, key.sparsity


def published_numbers(root: Path) -> dict[tuple[str, str, str, int], dict[str, float]]:
    """Cell -> {model key: published AutoAttack accuracy} from the repository's published records."""
    from evaluator.paths import RECORDS, submissions_dir
    from evaluator.record.records import read_record

    cells: dict[tuple[str, str, str, int], dict[str, float]] = {}
    for path in sorted(submissions_dir(root).glob(f"*/{RECORDS}/*__{PUBLISHED_PROTOCOL}.json")):
        try:
            record = read_record(path)
            value = (record.get("metrics") or {}).get(RANKED_METRIC)
            cell = cell_of(record["model_key"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # apb validate reports unreadable records; the comment just leaves them out
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cells.setdefault(cell, {})[record["model_key"]] = float(value)
    return cells


def faces_published_numbers(protocol: object) -> bool:
    """Whether a record of *protocol* (an id) has the published numbers' threat model: the only one they face."""
    from evaluator.errors import APBError
    from evaluator.protocol import load_protocol
    from evaluator.render.threats import faces_published, threat_of

    try:
        return isinstance(protocol, str) and faces_published(threat_of(load_protocol(protocol)))
    except APBError:  # an unknown protocol: apb validate reports it
        return False


def cell_line(model_key: str, protocol: object, measured: float | None,
              cells: dict[tuple[str, str, str, int], dict[str, float]]) -> str | None:
    """``published in this cell (...): best 52.10 (KEY); this model's AA 47.42 would rank 3 of 12``, or None (no
    published number there, or a record of *protocol* measures another threat model)."""
    if not faces_published_numbers(protocol):
        return None
    cell = cell_of(model_key)
    others = {key: value for key, value in cells.get(cell, {}).items() if key != model_key}
    if not others:
        return None
    best_key = max(others, key=lambda key: (others[key], key))
    architecture, dataset, kind, sparsity = cell
    line = (f"published AA in this cell ({architecture} {dataset} {kind} {sparsity}%, {PUBLISHED_PROTOCOL}, "
            f"{len(others)} model(s)): best {others[best_key]:.2f} ({best_key})")
    if model_key in cells.get(cell, {}):
        line += f"; this AP's published number here: {cells[cell][model_key]:.2f}"
    if measured is not None:
        rank = 1 + sum(1 for value in others.values() if value > measured)
        line += f"; this model's measured AA {measured:.2f} would rank {rank} of {len(others) + 1}"
    return line

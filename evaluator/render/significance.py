"""The paired test of two rows of a leaderboard table, from the per-sample robust flags the catalog holds.

Two rows (APs) of a table of an evaluated protocol are compared over the table's ranked columns: in each, both
APs' models were evaluated on the protocol's samples, so their flags pair sample by sample; the discordant
counts are pooled over the columns and tested exactly (:func:`evaluator.record.stats.mcnemar_p`). A pair is not
testable (None) when a cell of either row has no flags (a published-only number) or the two cells cover
different samples; the table then ranks that pair as before (equal displayed means share a rank)."""
from __future__ import annotations

from typing import Callable, Collection

from evaluator.render.catalog import Catalog
from evaluator.render.layout import Group
from evaluator.render.tables import Column
from evaluator.record.stats import mcnemar_p, packed_discordant

CellFlags = dict[Column, tuple[bytes | None, tuple[int, int] | None, int]]  # flags, sample range, samples
CACHED_APS = 2  # ranks are compared in order, so each AP's flags are read once (and never all at once)


def paired_test(catalog: Catalog, group: Group, protocol: str, metric: str,
                columns: Collection[Column]) -> Callable[[str, str], float | None]:
    """``p(above, below)``: the exact paired test of two APs' *metric* over *columns* of a group's table of
    *protocol* (None where it cannot be made)."""
    ranked = tuple(columns)
    cache: dict[str, tuple[CellFlags, bytes]] = {}

    def flags_of(ap_key: str) -> tuple[CellFlags, bytes]:
        """An AP's cells and their flags joined in the order of *ranked* (the columns it has flags in): two
        testable rows' joined flags pair sample by sample, so one count covers every column."""
        if ap_key not in cache:
            if len(cache) >= CACHED_APS:
                del cache[next(iter(cache))]
            cells: CellFlags = {row.column: (row.robust_bits(metric), row.sample_range, row.n_samples)
                                for row in catalog.robust_bits(group, protocol, ap_key)}
            joined = b"".join(bits for column in ranked if column in cells and (bits := cells[column][0]))
            cache[ap_key] = (cells, joined)
        return cache[ap_key]

    def p_value(above: str, below: str) -> float | None:
        (first, first_bits), (second, second_bits) = flags_of(above), flags_of(below)
        for column in ranked:
            a, b = first.get(column), second.get(column)
            if a is None or b is None or a[0] is None or b[0] is None or a[1:] != b[1:] or len(a[0]) != len(b[0]):
                return None
        return mcnemar_p(packed_discordant(first_bits, second_bits))

    return p_value

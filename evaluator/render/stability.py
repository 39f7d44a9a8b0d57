"""Does the order hold at other budgets? From the security curves (HO-FMN distances) the catalog keeps, each
group's complete rows are ranked by their mean robust accuracy at ε = 4/255, 8/255 and 16/255 and by the mean
area under their curves up to 16/255 (the robust accuracy averaged over every budget from 0 to 16/255), and
each order is compared with the 8/255 one by Kendall's τ-b (1: the same order, 0: unrelated, -1: reversed).

A row is *complete* when it has a curve in every column of the group that has curves under the protocol
(the tables' rule, :mod:`evaluator.render.tables`); ranks share on equal displayed values (two decimals). These
ranks are descriptive: the paired tests of the tables are made at the protocol's ε only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from evaluator.render.catalog import Catalog
from evaluator.render.curves import EPS_GRID, eps_label, grid_index
from evaluator.render.layout import Group

REFERENCE = 8 / 255
BUDGETS = (4 / 255, 8 / 255, 16 / 255)
AREA_UP_TO = 16 / 255
_AREA = slice(0, grid_index(AREA_UP_TO) + 1)
MEASURES = (*(f"ε = {eps_label(eps)}" for eps in BUDGETS), f"area to {eps_label(AREA_UP_TO)}")


@dataclass
class Stability:
    """One protocol and group: per complete AP its value and rank under each of ``MEASURES`` (best first by the
    8/255 value), and Kendall's τ-b of each order against the 8/255 one."""

    protocol: str
    group: Group
    columns: int
    rows: list[tuple[str, list[tuple[int, float]]]]  # ap_key, [(rank, value)] per measure
    taus: list[float]  # per measure (1.0 for the reference itself)


def curve_measures(curves: np.ndarray) -> np.ndarray:
    """Robust accuracy (%) of curve summaries (one per row of *curves*) at each of ``BUDGETS`` and their mean
    over ``[0, AREA_UP_TO]`` (trapezoids on the grid: the normalized area under the curve); rows x measures."""
    values = np.atleast_2d(curves).astype(np.float64) / 100.0
    part, grid = values[:, _AREA], EPS_GRID[_AREA]
    area = np.sum((part[:, 1:] + part[:, :-1]) / 2 * np.diff(grid), axis=1) / grid[-1]
    return np.column_stack([values[:, [grid_index(eps) for eps in BUDGETS]], area])


def competition_ranks(values: Sequence[float]) -> list[int]:
    """Ranks (1 = highest) where equal displayed values (two decimals) share a rank."""
    shown = [round(v, 2) for v in values]
    return [1 + sum(other > mine for other in shown) for mine in shown]


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's τ-b of two paired samples (ties in either count as neither concordant nor discordant); NaN when
    either has no two distinct values. One row of pairs at a time: memory linear in the sample size."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    score, pairs_a, pairs_b = 0.0, 0, 0
    for i in range(a.size - 1):
        sa, sb = np.sign(a[i + 1:] - a[i]), np.sign(b[i + 1:] - b[i])
        score += float(np.dot(sa, sb))
        pairs_a += int(np.count_nonzero(sa))
        pairs_b += int(np.count_nonzero(sb))
    denominator = np.sqrt(float(pairs_a) * float(pairs_b))
    return score / denominator if denominator else float("nan")


def stability_tables(catalog: Catalog) -> Iterator[Stability]:
    """The :class:`Stability` of every protocol and group with curves (one curve column read at a time)."""
    columns: dict[tuple[str, Group], list] = {}
    for key in catalog.curve_columns():
        columns.setdefault((key[0], key[1]), []).append(key)
    reference = BUDGETS.index(REFERENCE)
    for (protocol, group), keys in columns.items():
        measured: dict[str, list[np.ndarray]] = {}
        for key in keys:
            members = catalog.column_rows(key)  # one column's curves, measured at once
            for row, values in zip(members, curve_measures(np.stack([r.curve for r in members]))):  # type: ignore[misc]
                measured.setdefault(row.ap_key, []).append(values)
        complete = sorted(ap for ap, values in measured.items() if len(values) == len(keys))
        if not complete:
            continue
        means = np.array([np.mean(measured[ap], axis=0) for ap in complete])  # APs x measures
        ranks = [competition_ranks(means[:, m].tolist()) for m in range(len(MEASURES))]
        order = sorted(range(len(complete)), key=lambda i: (ranks[reference][i], complete[i]))
        rows = [(complete[i], [(ranks[m][i], float(means[i, m])) for m in range(len(MEASURES))]) for i in order]
        taus = [kendall_tau_b(means[:, reference], means[:, m]) for m in range(len(MEASURES))]
        yield Stability(protocol, group, len(keys), rows, taus)

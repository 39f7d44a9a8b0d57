"""Does the order hold at other budgets? From the security curves (HO-FMN distances) the catalog keeps, each
group's complete rows are ranked by their mean robust accuracy at ε/2, ε and 2ε (ε: the protocol's; Linf 8/255:
4/255, 8/255 and 16/255) and by the mean area under their curves up to 2ε (the robust accuracy averaged over
every budget from 0 to 2ε), and each order is compared with the one at ε by Kendall's τ-b (1: the same order,
0: unrelated, -1: reversed).

A row is *complete* when it has a curve in every column of the group that has curves under the protocol
(the tables' rule, :mod:`evaluator.render.tables`); ranks share on equal displayed values (two decimals). These
ranks are descriptive: the paired tests of the tables are made at the protocol's ε only."""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from evaluator.registry.norms import ThreatModel
from evaluator.render.catalog import Catalog
from evaluator.render.curves import eps_label
from evaluator.render.layout import Group

SCALES = (0.5, 1, 2)  # the budgets, as multiples of the protocol's eps; the curves' area is measured up to the last
REFERENCE = SCALES.index(1)


def budgets(threat: ThreatModel) -> list[float]:
    """The budgets the ranks are compared at: eps/2, eps and 2 eps."""
    return [float(threat.eps_fraction * scale) for scale in SCALES]


def measures(threat: ThreatModel) -> tuple[str, ...]:
    """The names of the measures: ``ε = 4/255``, ``ε = 8/255``, ``ε = 16/255``, ``area to 16/255``."""
    found = budgets(threat)
    return (*(f"ε = {eps_label(eps)}" for eps in found), f"area to {eps_label(found[-1])}")


@dataclass
class Stability:
    """One protocol and group: per complete AP its value and rank under each of ``MEASURES`` (best first by the
    8/255 value), and Kendall's τ-b of each order against the 8/255 one."""

    protocol: str
    threat: ThreatModel
    group: Group
    columns: int
    rows: list[tuple[str, list[tuple[int, float]]]]  # ap_key, [(rank, value)] per measure
    taus: list[float]  # per measure (1.0 for the reference itself)


def curve_measures(curves: np.ndarray, threat: ThreatModel) -> np.ndarray:
    """Robust accuracy (%) of curve summaries (one per row of *curves*, on *threat*'s grid) at each of its
    ``budgets`` and their mean over ``[0, 2 eps]`` (trapezoids on the grid: the normalized area under the curve);
    rows x measures."""
    found = budgets(threat)
    values = np.atleast_2d(curves).astype(np.float64) / 100.0
    area_slice = slice(0, threat.curve.index(found[-1]) + 1)
    part, grid = values[:, area_slice], threat.curve.budgets[area_slice]
    area = np.sum((part[:, 1:] + part[:, :-1]) / 2 * np.diff(grid), axis=1) / grid[-1]
    return np.column_stack([values[:, [threat.curve.index(eps) for eps in found]], area])


def competition_ranks(values: Sequence[float]) -> list[int]:
    """Ranks (1 = highest) where equal displayed values (two decimals) share a rank: one plus the number of
    values shown higher, counted in the sorted values (finite values: the curves' measures)."""
    shown = [round(v, 2) for v in values]
    ascending = sorted(shown)
    return [1 + len(shown) - bisect_right(ascending, mine) for mine in shown]


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


def stability_tables(catalog: Catalog, threat_of: Callable[[str], ThreatModel]) -> Iterator[Stability]:
    """The :class:`Stability` of every protocol (its threat model from *threat_of*) and group with curves (one
    curve column read at a time)."""
    columns: dict[tuple[str, Group], list] = {}
    for key in catalog.curve_columns():
        columns.setdefault((key[0], key[1]), []).append(key)
    reference = REFERENCE
    for (protocol, group), keys in columns.items():
        threat = threat_of(protocol)
        count = len(measures(threat))
        measured: dict[str, list[np.ndarray]] = {}
        for key in keys:
            members = catalog.column_rows(key)  # one column's curves, measured at once
            for row, values in zip(members, curve_measures(np.stack([r.curve for r in members]),  # type: ignore[misc]
                                                           threat)):
                measured.setdefault(row.ap_key, []).append(values)
        complete = sorted(ap for ap, values in measured.items() if len(values) == len(keys))
        if not complete:
            continue
        means = np.array([np.mean(measured[ap], axis=0) for ap in complete])  # APs x measures
        ranks = [competition_ranks(means[:, m].tolist()) for m in range(count)]
        order = sorted(range(len(complete)), key=lambda i: (ranks[reference][i], complete[i]))
        rows = [(complete[i], [(ranks[m][i], float(means[i, m])) for m in range(count)]) for i in order]
        taus = [kendall_tau_b(means[:, reference], means[:, m]) for m in range(count)]
        yield Stability(protocol, threat, group, len(keys), rows, taus)

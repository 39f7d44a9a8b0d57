"""Published vs re-evaluated: for every model with both a published record and an evaluated one, the published
AutoAttack robust accuracy against the re-evaluated one with its 95% interval, a figure per evaluated protocol
(``leaderboard/curves/<protocol>/published_vs_evaluated.svg``), and a line saying how many differ by more
than the interval allows."""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Collection

from evaluator.render.catalog import Catalog
from evaluator.render.svg import Axis, Series, scatter_chart
from evaluator.render.tables import interval_spread

METRIC = "aa_robust_accuracy"


@dataclass(frozen=True)
class Comparison:
    """One protocol's figure and what it shows."""

    protocol: str
    svg: str
    models: int
    outside: int  # published values outside the re-evaluation's 95% interval
    median_difference: float  # re-evaluated minus published, points

    def summary(self) -> str:
        return (f"{self.models} models with both records; re-evaluated minus published: median "
                f"{self.median_difference:+.2f} points; {self.outside} published values lie outside the "
                "re-evaluation's 95% interval.")


def comparisons(catalog: Catalog, comparable: Collection[str]) -> list[Comparison]:
    """A :class:`Comparison` per evaluated protocol of the *comparable* ones (those of the published numbers' threat
    model) with models that also have a published record."""
    pairs: dict[str, list[tuple[float, float, float]]] = {}
    for protocol, _, published, evaluated, n_samples in catalog.published_pairs(METRIC):
        if protocol not in comparable:
            continue
        spread = interval_spread(evaluated, n_samples) or 0.0
        pairs.setdefault(protocol, []).append((published, evaluated, spread))
    found = []
    axis = Axis("published AutoAttack robust accuracy (%)", 0.0, 100.0, [(v, f"{v}%") for v in range(0, 101, 20)])
    y_axis = Axis("re-evaluated AutoAttack robust accuracy (%)", 0.0, 100.0,
                  [(v, f"{v}%") for v in range(0, 101, 20)])
    for protocol, points in sorted(pairs.items()):
        outside = sum(abs(evaluated - published) > spread for published, evaluated, spread in points)
        svg = scatter_chart(f"Published vs re-evaluated ({protocol}): {len(points)} models",
                            [Series("models (bar: 95% interval)", [(p, e) for p, e, _ in points])], axis, y_axis,
                            legend_title="AutoAttack", diagonal=True,
                            error_bars=[(p, e - s, e + s) for p, e, s in points])
        found.append(Comparison(protocol, svg, len(points), outside, median(e - p for p, e, _ in points)))
    return found

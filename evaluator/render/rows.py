"""The few facts of one record that the tables, figures, analysis and site need, kept compact: a leaderboard of
1,000 APs has 24,000 models, and the renderers keep one :class:`Row` per record (with its curve summary, a few
hundred bytes) instead of the record and its sidecar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluator.render.curves import curve_summary
from evaluator.render.inputs import PUBLISHED, Result, load_distances

METRIC_NAMES = ("clean_accuracy", "aa_robust_accuracy", "hofmn_robust_accuracy", "worst_case_robust_accuracy")


@dataclass(slots=True)
class Row:
    """One record as the renderers see it. ``curve``: robust accuracy on ``curves.EPS_GRID`` in hundredths of a
    percent, from the record's sidecar (None without one); ``sample_range``: the samples the curve covers."""

    model_key: str
    ap_key: str
    dataset: str
    structure_kind: str
    architecture: str
    sparsity: int
    source: str
    protocol: str
    n_samples: int
    metrics: tuple[float | None, ...]  # in the order of METRIC_NAMES
    flags: tuple[str, ...]  # flag codes
    efficiency: dict | None  # the check's efficiency figures, if measured
    curve: np.ndarray | None
    sample_range: tuple[int, int] | None
    distance_counts: tuple[int, int, int] | None  # (samples, distance 0, distance inf) of the sidecar
    date: str | None
    commit: str | None
    reference: str | None  # where a published record's numbers come from
    path: str

    @property
    def published(self) -> bool:
        return self.source == PUBLISHED

    @property
    def group(self) -> tuple[str, str]:
        return (self.dataset, self.structure_kind)

    @property
    def column(self) -> tuple[str, int]:
        return (self.architecture, self.sparsity)

    def metric(self, name: str) -> float | None:
        return self.metrics[METRIC_NAMES.index(name)]

    @property
    def macs_effective(self) -> int | None:
        return None if not self.efficiency else self.efficiency.get("macs_effective")


def row_of(root: Path, result: Result) -> Row:
    """The :class:`Row` of one record, its sidecar (if any) read, checked and reduced to a curve summary."""
    record = result.record
    metrics = record.get("metrics") or {}
    provenance = record.get("provenance") or {}
    distances = load_distances(root, result)
    per_sample = record.get("per_sample") or {}
    sample_range = per_sample.get("sample_range")
    if distances is not None and sample_range is None:
        sample_range = [0, int(distances.size)]
    efficiency = (record.get("check") or {}).get("efficiency")
    return Row(
        model_key=result.model_key, ap_key=result.key.ap_key, dataset=result.key.dataset,
        structure_kind=result.key.structure_kind, architecture=result.key.architecture,
        sparsity=result.key.sparsity, source=record["source"], protocol=result.protocol,
        n_samples=int(record.get("n_samples") or 0),
        metrics=tuple(metrics.get(name) for name in METRIC_NAMES),
        flags=tuple(str(flag.get("code")) for flag in record.get("flags") or []),
        efficiency=efficiency if isinstance(efficiency, dict) else None,
        curve=None if distances is None or distances.size == 0 else curve_summary(distances),
        sample_range=None if sample_range is None else (int(sample_range[0]), int(sample_range[1])),
        distance_counts=None if distances is None else (int(distances.size), int((distances == 0).sum()),
                                                        int(np.isinf(distances).sum())),
        date=provenance.get("date"), commit=provenance.get("git_commit"),
        reference=provenance.get("reference"), path=result.path.as_posix())

"""The few facts of one record that the tables, figures, analysis and site need, kept compact: a leaderboard of
1,000 APs has 24,000 models, and the renderers keep one :class:`Row` per record (with its curve summary, a few
hundred bytes) instead of the record and its sidecar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from sys import intern
from typing import TypeVar

import numpy as np

from evaluator.record.records import METRIC_TABLE, METRICS, WORST_CASE_PARTS
from evaluator.registry.norms import ThreatModel
from evaluator.render.curves import curve_summary
from evaluator.render.inputs import PUBLISHED, Result, load_distances, load_per_sample

EFFICIENCY_FIELDS = ("params_total", "params_nonzero", "macs_dense", "macs_effective")
T = TypeVar("T")


@dataclass(slots=True)
class Row:
    """One record as the renderers see it. ``curve``: robust accuracy on its threat model's curve grid in
    hundredths of a percent, from the record's sidecar (None without one); ``sample_range``: the samples the
    curve covers."""

    model_key: str
    ap_key: str
    dataset: str
    structure_kind: str
    architecture: str
    sparsity: int
    source: str
    protocol: str
    n_samples: int
    metrics: tuple[float | None, ...]  # in the order of records.METRICS
    flags: tuple[str, ...]  # flag codes
    efficiency: tuple[int, int, int, int] | None  # params total, params non-zero, MACs dense, MACs effective
    curve_bytes: bytes | None  # the curve summary's uint16 values (one small object per row, not an array)
    sample_range: tuple[int, int] | None
    distance_counts: tuple[int, int, int] | None  # (samples, distance 0, distance inf) of the sidecar
    date: str | None
    commit: str | None
    reference: str | None  # where a published record's numbers come from
    # per-sample robust flags at the protocol's eps of each metric of WORST_CASE_PARTS, bit-packed (evaluated
    # records); a part the record did not measure (an attack added after it) is all ones, neutral in the worst case
    part_bits: tuple[bytes, ...] | None = None
    # (robust under both attacks, under AutoAttack only, under HO-FMN only) at the protocol's eps, counted on the
    # per-sample flags once: the model page's agreement table and its figure's AutoAttack mark
    agreement: tuple[int, int, int] | None = None

    def robust_bits(self, metric: str) -> bytes | None:
        """The bit-packed per-sample robust flags behind a robust-accuracy *metric* (the worst case: robust under
        every part it measured), or None (a published record, a metric without per-sample flags or one the
        record did not measure)."""
        if self.part_bits is None or self.metric(metric) is None:
            return None
        if metric in WORST_CASE_PARTS:
            return self.part_bits[WORST_CASE_PARTS.index(metric)]
        if METRIC_TABLE[metric].rule == "worst_case":
            return np.bitwise_and.reduce([np.frombuffer(bits, np.uint8) for bits in self.part_bits]).tobytes()
        return None

    @property
    def curve(self) -> np.ndarray | None:
        """The curve summary (read-only uint16 array), or None."""
        return None if self.curve_bytes is None else np.frombuffer(self.curve_bytes, dtype=np.uint16)

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
        return self.metrics[METRICS.index(name)]

    @property
    def macs_effective(self) -> int | None:
        return None if self.efficiency is None else self.efficiency[3]

    @property
    def macs_dense(self) -> int | None:
        return None if self.efficiency is None else self.efficiency[2]

    @property
    def params(self) -> tuple[int, int] | None:
        """(total, non-zero) parameters."""
        return None if self.efficiency is None else (self.efficiency[0], self.efficiency[1])


def row_of(root: Path, result: Result, threat: ThreatModel) -> Row:
    """The :class:`Row` of one record, its sidecar (if any) read, checked and reduced to a curve summary on
    *threat*'s grid and, for an evaluated record, to bit-packed robust flags under *threat* (the paired tests'
    input)."""
    record = result.record
    metrics = record.get("metrics") or {}
    provenance = record.get("provenance") or {}
    per_sample = load_per_sample(root, result)
    distances = per_sample.hofmn_distance if per_sample is not None else load_distances(root, result)
    robust, bits = None, None
    if per_sample is not None:  # a part the record did not measure counts every sample robust
        robust = {metric: per_sample.robust(metric, threat) for metric in WORST_CASE_PARTS
                  if per_sample.measured(metric)}
        unmeasured = np.ones(len(per_sample), dtype=bool)
        bits = tuple(np.packbits(robust.get(metric, unmeasured)).tobytes() for metric in WORST_CASE_PARTS)
    sidecar = record.get("per_sample")
    sample_range = sidecar.get("sample_range") if sidecar else None
    if distances is not None and sample_range is None:
        sample_range = [0, int(distances.size)]
    figures = (record.get("check") or {}).get("efficiency")
    efficiency = None
    if isinstance(figures, dict) and all(isinstance(figures.get(f), int) for f in EFFICIENCY_FIELDS):
        efficiency = tuple(int(figures[f]) for f in EFFICIENCY_FIELDS)
    return Row(  # strings repeated across records are interned: one copy, however many rows
        model_key=result.model_key, ap_key=intern(result.key.ap_key), dataset=intern(result.key.dataset),
        structure_kind=intern(result.key.structure_kind), architecture=intern(result.key.architecture),
        sparsity=result.key.sparsity, source=intern(record["source"]), protocol=intern(result.protocol),
        n_samples=_shared(int(record.get("n_samples") or 0)),
        metrics=tuple(metrics.get(name) for name in METRICS),
        flags=_shared(tuple(str(flag.get("code")) for flag in record.get("flags") or [])),
        efficiency=efficiency,  # type: ignore[arg-type]
        curve_bytes=None if distances is None or distances.size == 0 else curve_summary(distances, threat).tobytes(),
        sample_range=None if sample_range is None else _shared((int(sample_range[0]), int(sample_range[1]))),
        distance_counts=None if distances is None else (int(distances.size), int(np.count_nonzero(distances == 0)),
                                                        int(np.count_nonzero(np.isinf(distances)))),
        date=provenance.get("date"), commit=_interned(provenance.get("git_commit")),
        reference=_interned(provenance.get("reference")),
        part_bits=bits, agreement=None if robust is None else agreement_counts(robust))


def agreement_counts(robust: dict[str, np.ndarray]) -> tuple[int, int, int] | None:
    """(robust under both, AutoAttack only, HO-FMN only) from a model's per-sample robust flags by metric, or None
    where the record did not measure both attacks."""
    aa, hofmn = robust.get("aa_robust_accuracy"), robust.get("hofmn_robust_accuracy")
    if aa is None or hofmn is None:
        return None
    both = int(np.count_nonzero(aa & hofmn))
    return both, int(np.count_nonzero(aa)) - both, int(np.count_nonzero(hofmn)) - both


def split_parts(joined: bytes) -> tuple[bytes, ...]:
    """``Row.part_bits`` from their concatenation (as the catalog stores them: one equal share per part)."""
    size = len(joined) // len(WORST_CASE_PARTS)
    return tuple(joined[i * size:(i + 1) * size] for i in range(len(WORST_CASE_PARTS)))


_SHARED: dict = {}


def _shared(value: T) -> T:
    """One copy of a value many rows hold (the protocol's sample count and range, a set of flag codes)."""
    if len(_SHARED) < 4096:
        return _SHARED.setdefault(value, value)
    return _SHARED.get(value, value)


def _interned(text: object) -> str | None:
    return intern(text) if isinstance(text, str) else None

"""The result record as a type: :class:`Record` states the keys of ``schemas/record.schema.json`` (every one
required there, some nullable), so that record reads are checked by mypy; the schema checks the values."""

from typing import Any, NotRequired, TypedDict


class Flag(TypedDict):
    """One entry of ``flags``: a code of ``evaluator/flags.yaml`` and its message."""

    code: str
    message: str


class SidecarRef(TypedDict):
    """``per_sample``: the sidecar's file name beside the record, its sha256, the samples it covers."""

    file: str
    sha256: str
    sample_range: NotRequired[list[int]]  # [first, stop); imported distances cover fewer than n_samples
    kind: NotRequired[str]  # evaluated (every array of metrics.yaml) | distances (sample_index, hofmn_distance)


class Record(TypedDict):
    """One result record (``submissions/<ap_key>/records/<model_key>__<protocol>.json``)."""

    schema_version: int
    model_key: str
    ap_key: str
    architecture: str
    dataset: str
    structure_kind: str
    sparsity: int
    source: str  # published | evaluated
    protocol: str
    n_samples: int
    metrics: dict[str, float | None]  # metric (metrics.yaml) -> percent
    counts: dict[str, int] | None  # count field (metrics.yaml) -> samples
    intervals: dict[str, list[float]] | None  # metric -> [low, high], percent
    checkpoint_sha256: str | None
    provenance: dict[str, Any]
    flags: list[Flag]
    check: dict[str, Any] | None  # apb check's summary (run/check.py CheckReport.to_dict)
    per_sample: SidecarRef | None

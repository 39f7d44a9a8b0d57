"""A record's numbers as text lines: what ``apb evaluate`` prints at its end and the API's ``benchmark`` prints."""
from __future__ import annotations

from evaluator.record.records import METRICS, metric_label
from evaluator.record.types import Record


def record_numbers(record: Record) -> list[str]:
    """One line per metric (percent, with its 95% interval), then the flags."""
    lines = []
    for metric in (m for m in METRICS if record["metrics"].get(m) is not None):  # an added attack's may be absent
        name = metric_label(metric, "long")
        low, high = (record["intervals"] or {})[metric]
        lines.append(f"  {name:<28} {record['metrics'][metric]:7.2f}%   (95% CI {low:.2f}-{high:.2f})")
    lines.append("  flags: " + ("none" if not record["flags"] else ""))
    lines.extend(f"    - {flag['code']}: {flag['message']}" for flag in record["flags"])
    return lines

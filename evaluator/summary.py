"""A record's numbers as text lines: what ``apb evaluate`` prints at its end and the API's ``benchmark`` prints."""
from __future__ import annotations

METRIC_NAMES = {"clean_accuracy": "clean accuracy", "aa_robust_accuracy": "AutoAttack robust accuracy",
                "hofmn_robust_accuracy": "HO-FMN robust accuracy",
                "worst_case_robust_accuracy": "worst-case robust accuracy"}


def record_numbers(record: dict) -> list[str]:
    """One line per metric (percent, with its 95% interval), then the flags."""
    lines = []
    for metric, name in METRIC_NAMES.items():
        low, high = record["intervals"][metric]
        lines.append(f"  {name:<28} {record['metrics'][metric]:7.2f}%   (95% CI {low:.2f}-{high:.2f})")
    lines.append("  flags: " + ("none" if not record["flags"] else ""))
    lines.extend(f"    - {flag['code']}: {flag['message']}" for flag in record["flags"])
    return lines

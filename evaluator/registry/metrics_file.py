"""``evaluator/metrics.yaml`` as read: its per-sample arrays (name -> row, in sidecar order) and its metrics
rows. ``record/records.py`` builds the metric tables from them; ``protocol.py`` reads the stages added after
the first sidecars (:func:`added_stages`), whose settings a protocol may hold."""
from __future__ import annotations

from typing import Any

from evaluator.paths import PACKAGE_DIR
from evaluator.untrusted.safeio import load_yaml

METRICS_FILE = PACKAGE_DIR / "metrics.yaml"
TABLE: dict[str, Any] = load_yaml(METRICS_FILE)[0]
ARRAYS: dict[str, dict[str, Any]] = dict(TABLE["arrays"])


def added_stages() -> tuple[str, ...]:
    """The evaluation stages declared after the first sidecars: those producing ``optional`` arrays. Each
    reads its settings from the protocol's top-level section named after it (``Protocol.stage_settings``)."""
    return tuple(dict.fromkeys(row["stage"] for row in ARRAYS.values() if row.get("optional")))

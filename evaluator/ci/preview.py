"""``apb ci preview``: the bot's evaluation comment, rendered locally from ``apb evaluate --out DIR`` outputs and
the manifest's claims, by the same report code the bot runs (``evaluator.ci.report``)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.ci.artifacts import Expected, accept_record
from evaluator.ci.report_input import ReportInput
from evaluator.errors import APBError, Problem
from evaluator.protocol import DEFAULT_PROTOCOL
from evaluator.record.records import record_stem

if TYPE_CHECKING:
    from evaluator.repository.manifest import ModelEntry

NO_COMMIT = "0" * 40


def head_commit(root: Path) -> str:
    """The checkout's HEAD commit, or 40 zeros outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return NO_COMMIT
    return out if len(out) == 40 else NO_COMMIT


def records_protocol(entries: list[ModelEntry], records: Path) -> str:
    """The one protocol the records in *records* were made with for these entries (default: the default
    protocol)."""
    found = sorted({path.name.split("__", 1)[1][: -len(".json")] for entry in entries
                    for path in records.glob(f"{entry.model_key}__*.json")})
    if len(found) > 1:
        raise APBError(Problem(str(records), f"holds records of several protocols ({', '.join(found)}); pass "
                                             "--protocol"))
    return found[0] if found else DEFAULT_PROTOCOL


def preview_input(root: Path, entries: list[ModelEntry], records: Path, *, protocol: str | None = None,
                  allow_file_urls: bool = False) -> ReportInput:
    """What the bot would report for *entries* if their evaluation wrote the records in *records*."""
    from evaluator.ci.cell import published_numbers
    from evaluator.repository.validate import validate_repository

    protocol = protocol or records_protocol(entries, records)
    validation = validate_repository(root, allow_file_urls=allow_file_urls)
    report = ReportInput("evaluation", head_commit(root),
                         validation={"ok": validation.ok, "problems": [p.to_dict() for p in validation.problems]},
                         published=published_numbers(root))
    legs, models, missing = [], {}, []
    for entry in entries:
        legs.append({"model_key": entry.model_key, "ap_key": entry.ap_key, "sha256": entry.sha256,
                     "protocol": protocol, "shard": None, "leg": entry.model_key})
        models[entry.model_key] = {"ap_key": entry.ap_key, "sha256": entry.sha256, "url": entry.url,
                                   "sparsity": entry.sparsity, "claimed": entry.claimed}
        path = records / f"{record_stem(entry.model_key, protocol)}.json"
        if not path.is_file():
            missing.append({"model_key": entry.model_key, "log": None,
                            "reason": f"no record in {records}: run `apb evaluate {entry.model_key} --protocol "
                                      f"{protocol} --out {records}`"})
            continue
        try:
            report.records[entry.model_key] = accept_record(path, Expected(entry.model_key, entry.sha256 or "",
                                                                           protocol)).record
        except APBError as error:
            missing.append({"model_key": entry.model_key, "log": None,
                            "reason": "; ".join(problem.message for problem in error.problems)})
    report.plan = {"protocol": protocol, "head": report.head_sha, "include": legs, "models": models,
                   "blocked_files": [], "problems": [], "skipped": [], "entries": {},
                   "reason": f"{len(legs)} model(s) previewed"}
    report.collected = {"missing": missing}
    return report

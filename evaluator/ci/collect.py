"""``apb ci collect`` and ``apb ci ingest``: from the matrix legs' artifacts to checked result records.

``collect`` runs in a job without any token: it reads each leg's output as untrusted data, and only from
``apb-leg-<leg>/`` inside the artifact of the same name (``leg_folder``: a leg's artifact cannot supply another
leg's result; legs handed off from a PR's evaluation are read from the hand-off folder instead), merges the shards of a sharded model with ``apb merge``'s code, checks every record against the plan
(model key, checkpoint sha256, protocol), the record schema and its sidecar, and writes the accepted ones
plus ``collect.json`` (what is missing and why, with the tail of the leg's log) into one folder.

``ingest`` (the leaderboard workflow, the only job that may push) checks that folder's records once more
the same way and copies them into ``submissions/<ap>/records/``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from evaluator.ci.artifacts import AcceptedRecord, Expected, accept_record, load_checked_json, log_tail, scan
from evaluator.ci.plan import manifest_entries
from evaluator.errors import APBError, Problem
from evaluator.paths import records_dir
from evaluator.record.records import record_stem
from evaluator.untrusted.safeio import atomic_write_bytes, dump_json
from evaluator.run.shards import merge_shards

COLLECT_FORMAT = "apb-ci-collect/1"
COLLECT_FILE = "collect.json"
RECORDS = "records"
LEG_PREFIX = "apb-leg-"
LOG_FILE = "evaluate.log"


@dataclass
class Collected:
    protocol: str
    records: list[str] = field(default_factory=list)  # file names under records/
    missing: list[dict] = field(default_factory=list)  # {"model_key", "reason", "log"}
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"format": COLLECT_FORMAT, "protocol": self.protocol, "records": self.records,
                "missing": self.missing, "problems": [p.to_dict() for p in self.problems]}


def legs_by_model(plan: dict) -> dict[tuple[str, str], list[dict]]:
    """The plan's matrix legs grouped by model key and protocol (the shards of one record), in plan order."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for leg in plan["include"]:
        grouped.setdefault((leg["model_key"], leg["protocol"]), []).append(leg)
    return grouped


def relative_to(problem: Problem, folder: Path) -> Problem:
    """*problem* with its file named relative to *folder* (the runner's temp paths mean nothing to a reader)."""
    try:
        return Problem(Path(problem.file).relative_to(folder).as_posix(), problem.message, problem.line, problem.field)
    except ValueError:
        return problem


def _reason(problem: Problem) -> str:
    """A problem as a reason: a file inside a leg's folder (``apb-leg-<leg>/apb-leg-<leg>/...``) is named, the
    leg folder itself is not."""
    return str(problem) if problem.file.count("/") >= 2 else problem.message


def _leg_log(leg_dir: Path) -> str | None:
    try:
        return log_tail(leg_dir / LOG_FILE) if (leg_dir / LOG_FILE).is_file() else None
    except APBError:
        return None


def leg_folder(legs_dir: Path, leg: str) -> Path:
    """Where the output of *leg* is read: ``apb-leg-<leg>/`` inside the artifact ``apb-leg-<leg>``, which
    download-artifact (without ``merge-multiple``) puts in its own folder ``<legs_dir>/apb-leg-<leg>/``."""
    name = f"{LEG_PREFIX}{leg}"
    return legs_dir / name / name


def model_record(legs: list[dict], legs_dir: Path, protocol: str, work: Path) -> Path:
    """The path of the (merged) record of one model from its legs' folders; ``APBError`` saying why not."""
    stem = record_stem(legs[0]["model_key"], protocol)
    outputs = []
    for leg in legs:
        folder = leg_folder(legs_dir, leg["leg"])
        found = scan(folder)
        if found.problems:
            raise APBError(found.problems)
        shard = leg["shard"]
        output = f"{stem}.json" if shard is None else f"{stem}__shard-{shard.replace('/', '-of-')}/shard.json"
        if output not in found.files:
            where = f"shard {shard}" if shard else "its leg"
            raise APBError(Problem(str(folder), f"no output from {where}: the evaluation failed or was cancelled"))
        outputs.append(found.files[output])
    if legs[0]["shard"] is None:
        return outputs[0]
    return merge_shards([path.parent for path in outputs], work)


def accept_model(legs: list[dict], legs_dir: Path, protocol: str) -> AcceptedRecord:
    """The one acceptance rule for one model's legs: merged, then ``accept_record`` against the plan's model
    key, checkpoint sha256 and protocol; ``APBError`` saying why not."""
    expected = Expected(legs[0]["model_key"], legs[0]["sha256"], protocol)
    with tempfile.TemporaryDirectory(prefix="apb-merge-") as work:
        return accept_record(model_record(legs, legs_dir, protocol, Path(work)), expected)


def handed_off(plan: dict) -> set[str]:
    """The model keys of *plan* whose legs come from a PR's evaluation (``apb ci handoff``), not from this run."""
    return {item["model_key"] for item in plan.get("handoff") or []}


def collect(plan: dict, legs_dir: Path, out_dir: Path, handoff_dir: Path | None = None) -> Collected:
    """Check (and merge) the legs' outputs of *plan*; write the accepted records and ``collect.json``. The legs of
    a model the plan hands off are read from *handoff_dir* only, every other leg from *legs_dir* only."""
    result = Collected(plan["protocol"])
    from_pr = handed_off(plan)
    for (model_key, protocol), legs in legs_by_model(plan).items():
        folder = handoff_dir if model_key in from_pr else legs_dir
        try:
            if folder is None:
                raise APBError(Problem("apb ci collect", "handed off from a PR's evaluation, but no --handoff "
                                                         "folder was given"))
            accepted = accept_model(legs, folder, protocol)
        except APBError as error:
            logs = [log for leg in legs if folder and (log := _leg_log(leg_folder(folder, leg["leg"])))]
            reason = "; ".join(_reason(relative_to(p, folder) if folder else p) for p in error.problems)
            result.missing.append({"model_key": model_key, "reason": reason[:5000],
                                   "log": "\n".join(logs)[-8000:] or None})
            continue
        write_accepted(accepted, out_dir / RECORDS)
        result.records.append(f"{accepted.stem}.json")
    atomic_write_bytes(out_dir / COLLECT_FILE, dump_json(result.to_dict()))
    return result


def write_accepted(accepted: AcceptedRecord, directory: Path) -> Path:
    """Write exactly the bytes that were checked: the sidecar first, then the record that names it."""
    atomic_write_bytes(directory / f"{accepted.stem}.npz", accepted.sidecar_bytes)
    path = directory / f"{accepted.stem}.json"
    atomic_write_bytes(path, accepted.json_bytes)
    return path


def read_collected(directory: Path) -> dict:
    """``collect.json`` of a collected folder, checked against its schema (it comes from an artifact)."""
    return load_checked_json(directory / COLLECT_FILE, "collect.schema.json")


def ingest(plan: dict, collected_dir: Path, root: Path) -> list[Path]:
    """Copy the collected records of *plan* into ``root/submissions/<ap>/records/``, each checked again; a
    record whose manifest entry no longer has the same sha256 (or whose manifest does not load) is left out.
    Returns the written paths."""
    current = {entry.model_key: entry.sha256 for entry in manifest_entries(root)[0]}
    written = []
    for (model_key, protocol), legs in legs_by_model(plan).items():
        path = collected_dir / RECORDS / f"{record_stem(model_key, protocol)}.json"
        if not path.is_file() or current.get(model_key) != legs[0]["sha256"]:
            continue
        accepted = accept_record(path, Expected(model_key, legs[0]["sha256"], protocol))
        written.append(write_accepted(accepted, records_dir(root, legs[0]["ap_key"])))
    return written

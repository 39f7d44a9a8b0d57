"""``apb ci plan``: which manifest entries a change asks to evaluate, as a GitHub Actions matrix.

The plan reads the two commits with git as data only (``git ls-tree`` / ``git cat-file``: nothing of the
head commit is checked out or run). A change that touches anything but ``submissions/<ap>/manifest.yaml``
and ``submissions/<ap>/taxonomy.json`` is planned as *no evaluation*: such a PR needs a maintainer's review
as code, and the GPU runner only ever evaluates data.

Entries of the changed manifests are compared by model key: *added*, *changed* (a field that decides what
is evaluated differs: checkpoint, URL, loading fields), *removed* or *untouched*. Added and changed entries
are evaluated unless a record of the same model key, checkpoint sha256 and protocol already exists and the
loading fields did not change; an entry without sha256 cannot be evaluated (run ``apb lock``). A big model
can be split into shards, one matrix leg each; every leg carries the actions/cache key of its result.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from evaluator.errors import APBError, Problem
from evaluator.registry.model_keys import is_ap_key
from evaluator.paths import MANIFEST, RECORDS, SUBMISSIONS, TAXONOMY, TAXONOMY_README, records_dir, submissions_dir
from evaluator.record.records import recorded_sha256
from evaluator.untrusted.safeio import MAX_BYTES, atomic_write_bytes, load_json, parse_json_text
from evaluator.repository.manifest import LOADING_FIELDS as ENTRY_LOADING_FIELDS
from evaluator.repository.manifest import ModelEntry, load_manifest

PLAN_FORMAT = "apb-ci-plan/1"
DATA_FILES = (MANIFEST, TAXONOMY)
MAX_LEGS = 256  # GitHub's limit on the jobs of one matrix
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree: the "before" of a first push
# what decides the result, besides the protocol: the model, the checkpoint, how it is loaded
LOADING_FIELDS = ("architecture", "dataset", "structure", "sparsity", "sha256", *ENTRY_LOADING_FIELDS)
_REGULAR_BLOB_MODES = ("100644", "100755")
_REF = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_./~^-]*\Z")


@dataclass(frozen=True)
class Leg:
    """One matrix leg: one model key, or one shard of it."""

    model_key: str
    ap_key: str
    sha256: str
    protocol: str
    shard: str | None  # "i/n" (1-based) or None for the whole model
    cache_key: str
    leg: str  # a name usable for artifacts: the model key, plus "-shard-i-of-n"


@dataclass
class Plan:
    protocols: list[str]  # every model is planned under each, in this order
    base: str | None = None
    head: str | None = None
    merge_base: str | None = None
    changed_files: list[str] = field(default_factory=list)
    blocked_files: list[str] = field(default_factory=list)  # changed files that are not submission data
    entries: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in ("added", "changed", "removed",
                                                                                    "untouched")})
    models: dict[str, dict] = field(default_factory=dict)  # model key -> what the report shows about it
    include: list[Leg] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"model_key", "sha256", "reason"}
    problems: list[Problem] = field(default_factory=list)
    pr_author: str | None = None
    ownership: list[dict] = field(default_factory=list)  # {"ap_key", "files", "authors"}: other authors' APs
    handoff: list[dict] = field(default_factory=list)  # {"model_key", "run_id", "pull", "head_sha"}: from a PR's run

    @property
    def evaluate(self) -> bool:
        return bool(self.include)

    @property
    def reason(self) -> str:
        """One sentence on what will be evaluated, or why nothing is."""
        if self.blocked_files:
            shown = ", ".join(self.blocked_files[:5]) + (" ..." if len(self.blocked_files) > 5 else "")
            return (f"no evaluation: the change touches {len(self.blocked_files)} file(s) besides "
                    f"submissions/<ap>/manifest.yaml and taxonomy.json ({shown}); a maintainer reviews it as code")
        if self.problems and not self.include:
            return f"no evaluation: {len(self.problems)} problem(s) in the submitted files"
        if not self.include:
            return "nothing to evaluate: no added or changed entry lacks a record"
        models = len({leg.model_key for leg in self.include})
        left_out = f"; {len(self.problems)} problem(s), their files left out" if self.problems else ""
        return f"{models} model(s) to evaluate in {len(self.include)} leg(s){left_out}"

    def matrix(self) -> dict:
        return {"include": [asdict(leg) for leg in self.include]}

    def to_dict(self) -> dict:
        several = {"protocols": self.protocols} if len(self.protocols) > 1 else {}
        return {"format": PLAN_FORMAT, "protocol": self.protocols[0], **several, "base": self.base, "head": self.head,
                "merge_base": self.merge_base, "evaluate": self.evaluate, "reason": self.reason,
                "changed_files": self.changed_files, "blocked_files": self.blocked_files, "entries": self.entries,
                "models": self.models, "include": self.matrix()["include"], "skipped": self.skipped,
                "problems": [p.to_dict() for p in self.problems], "pr_author": self.pr_author,
                "ownership": self.ownership, "evaluator_version": evaluator_version(), "handoff": self.handoff}


def evaluator_version() -> str:
    """The version of the evaluator that plans (and, on the legs, evaluates): part of every result's key."""
    from evaluator import __version__

    return __version__


# ------------------------------------------------------------------------------------------------ git


def git(root: Path, *args: str) -> bytes:
    """Run one read-only git command in *root*; an ``APBError`` names the command if it fails."""
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise APBError(Problem(str(root), f"`git {' '.join(args)}` failed: {message[-1] if message else 'no output'}",
                               field="git"))
    return result.stdout


def resolve_commit(root: Path, ref: str) -> str:
    """The full sha of *ref* (``0000...`` — a push's "before" for a new branch — is the empty tree)."""
    if re.fullmatch(r"0{40}", ref):
        return EMPTY_TREE
    if not _REF.match(ref) or ".." in ref:
        raise APBError(Problem("apb ci plan", f"{ref!r} is not a git revision", field="ref"))
    return git(root, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}").decode().strip()


def merge_base(root: Path, base: str, head: str) -> str:
    """Where the change branched off *base* (what a PR diff is taken against)."""
    if base == EMPTY_TREE:
        return EMPTY_TREE
    return git(root, "merge-base", base, head).decode().strip()


def changed_files(root: Path, old: str, new: str) -> list[str]:
    """Paths that differ between two commits (renames count as a delete and an add)."""
    out = git(root, "diff", "--no-renames", "--no-ext-diff", "--name-only", "-z", old, new, "--")
    return sorted(p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p)


def read_blob(root: Path, commit: str, path: str, limit: int = MAX_BYTES) -> bytes | None:
    """The bytes of *path* at *commit*, or None if it does not exist there. Only a regular file is read (a
    symlink or submodule is refused) and only up to *limit* bytes."""
    if commit == EMPTY_TREE:
        return None
    listing = git(root, "ls-tree", "-z", "--full-tree", commit, "--", path).split(b"\0")[0]
    if not listing:
        return None
    meta, _, name = listing.partition(b"\t")
    mode, kind, oid = meta.decode().split()
    if kind != "blob" or mode not in _REGULAR_BLOB_MODES:
        raise APBError(Problem(path, f"is a {kind} of mode {mode} at {commit[:12]}, not a regular file; "
                                     "submit plain files"))
    size = int(git(root, "cat-file", "-s", oid).decode().strip())
    if size > limit:
        raise APBError(Problem(path, f"is {size:,} bytes at {commit[:12]}, over the {limit:,}-byte limit"))
    return git(root, "cat-file", "blob", oid)


# ------------------------------------------------------------------------------------------------ entries


def classify_path(path: str) -> str:
    """``data`` (a submission's manifest or taxonomy), ``generated`` (what ``apb leaderboard`` writes: the bot
    regenerates it on main, so a PR may carry it or not and it is never extracted), ``records`` (result files)
    or ``other``."""
    from evaluator.render import GENERATED_DIRS

    parts = PurePosixPath(path).parts
    if len(parts) == 3 and parts[0] == SUBMISSIONS and parts[2] in DATA_FILES and is_ap_key(parts[1]):
        return "data"
    if PurePosixPath(path) == PurePosixPath(TAXONOMY_README) or (len(parts) > 1 and parts[0] in GENERATED_DIRS):
        return "generated"
    if len(parts) >= 3 and parts[0] == SUBMISSIONS and parts[2] == RECORDS:
        return "records"
    return "other"


def loading_fields(entry: ModelEntry) -> dict:
    """The fields of a manifest entry that decide its evaluation result."""
    return {name: getattr(entry, name) for name in LOADING_FIELDS}


def loading_digest(entry: ModelEntry) -> str:
    """12 hex digits naming the loading fields (part of the cache key: a new normalization is a new result)."""
    text = json.dumps(loading_fields(entry), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def evaluation_fields(entry: ModelEntry) -> dict:
    """What makes an entry *changed* (``claimed`` numbers and line numbers do not)."""
    return {**loading_fields(entry), "url": entry.url}


def parse_manifest_blob(path: str, data: bytes | None) -> dict[str, ModelEntry]:
    """Model key -> entry of a manifest's content (empty if the file does not exist)."""
    if data is None:
        return {}
    return {entry.model_key: entry for entry in load_manifest(Path(path), text=data)}


def compare_entries(old: dict[str, ModelEntry], new: dict[str, ModelEntry]) -> dict[str, list[str]]:
    """Model keys grouped as added / changed / removed / untouched (each list sorted)."""
    return {
        "added": sorted(set(new) - set(old)),
        "changed": sorted(k for k in set(new) & set(old) if evaluation_fields(new[k]) != evaluation_fields(old[k])),
        "removed": sorted(set(old) - set(new)),
        "untouched": sorted(k for k in set(new) & set(old) if evaluation_fields(new[k]) == evaluation_fields(old[k])),
    }


def existing_record_sha256(root: Path, ap_key: str, model_key: str, protocol: str) -> str | None:
    """The checkpoint sha256 of the record already in *root* for this model key and protocol, if any."""
    return recorded_sha256(records_dir(root, ap_key), model_key, protocol, load=lambda path: load_json(path)[0])


# ------------------------------------------------------------------------------------------------ legs


def parse_shards(spec: str | None) -> dict[str, int]:
    """``"4"`` (every model in 4 shards) or ``"vgg16=4,resnet18=2"`` (per architecture; ``*=n`` for the rest)."""
    if spec is None or not spec.strip():
        return {"*": 1}
    result: dict[str, int] = {}
    for part in spec.split(","):
        name, _, count = part.strip().rpartition("=")
        name = name.strip() or "*"
        if not count.strip().isdigit() or not 1 <= int(count) <= 64:
            raise APBError(Problem("APB_SHARDS", f"{part.strip()!r}: the number of shards must be 1 to 64",
                                   field="shards"))
        result[name] = int(count)
    result.setdefault("*", 1)
    return result


def cache_key(entry: ModelEntry, protocol: str, shard: str | None) -> str:
    """The actions/cache key of one leg's result: protocol, evaluator version (a fixed evaluator never restores
    an older one's results), model key, checkpoint sha256, loading fields."""
    key = f"apb-{protocol}-{evaluator_version()}-{entry.model_key}-{entry.sha256}-{loading_digest(entry)}"
    return key if shard is None else f"{key}-shard-{shard.replace('/', '-of-')}"


def legs_for(entry: ModelEntry, protocol: str, shards: dict[str, int]) -> list[Leg]:
    """The matrix legs of one pinned entry (one with a sha256): one, or one per shard."""
    if not entry.sha256:
        raise ValueError(f"{entry.model_key} has no sha256: only pinned entries are scheduled")
    count = shards.get(entry.architecture, shards["*"])
    names = [None] if count == 1 else [f"{i}/{count}" for i in range(1, count + 1)]
    return [Leg(entry.model_key, entry.ap_key, entry.sha256, protocol, shard, cache_key(entry, protocol, shard),
                entry.model_key if shard is None else f"{entry.model_key}-shard-{shard.replace('/', '-of-')}")
            for shard in names]


def model_summary(entry: ModelEntry) -> dict:
    """What the report shows about an entry besides its record."""
    return {"ap_key": entry.ap_key, "sha256": entry.sha256, "url": entry.url, "sparsity": entry.sparsity,
            "claimed": dict(entry.claimed) if entry.claimed else None}


def schedule(plan: Plan, root: Path, entries: list[ModelEntry], loading_changed: set[str], shards: dict[str, int],
             *, limit: int | None = MAX_LEGS) -> None:
    """Add each entry to the plan's legs, or to its skipped list with the reason; more than *limit* legs is an
    error (a PR's matrix); ``None`` for no limit (``apb ci handoff`` batches what main lacks)."""
    for entry in entries:
        plan.models[entry.model_key] = model_summary(entry)
        if not entry.sha256:
            plan.skipped.append({"model_key": entry.model_key, "sha256": None,
                                 "reason": "no sha256: it cannot be evaluated; run `apb lock` to pin one"})
            continue
        for protocol in plan.protocols:
            recorded = existing_record_sha256(root, entry.ap_key, entry.model_key, protocol)
            if recorded == entry.sha256 and entry.model_key not in loading_changed:
                plan.skipped.append({"model_key": entry.model_key, "sha256": entry.sha256,
                                     "reason": f"a record for this checkpoint and protocol {protocol} exists"})
                continue
            plan.include.extend(legs_for(entry, protocol, shards))
    if limit is not None and len(plan.include) > limit:
        raise APBError(Problem("apb ci plan", f"{len(plan.include)} matrix legs, over GitHub's {MAX_LEGS}; "
                                              "split the change or lower APB_SHARDS", field="include"))


# ------------------------------------------------------------------------------------------------ plans


def ownership_notes(root: Path, plan: Plan) -> list[dict]:
    """The APs that existed before the change whose data it changes, unless the PR's author is one of their
    ``authors`` (GitHub handles in the AP's taxonomy.json, read at the merge base: the PR cannot edit itself in).
    The reviewer is told; nothing is refused."""
    notes: dict[str, dict] = {}
    for path in data_files(plan):
        ap_key = PurePosixPath(path).parts[1]
        before = {name: _blob_or_empty(root, plan.merge_base or EMPTY_TREE, f"{SUBMISSIONS}/{ap_key}/{name}")
                  for name in DATA_FILES}
        if all(data is None for data in before.values()):  # a new AP: whoever submits it owns it
            continue
        try:
            taxonomy = parse_json_text(before[TAXONOMY] or b"{}", TAXONOMY)[0]
        except APBError:
            taxonomy = {}
        raw = taxonomy.get("authors") if isinstance(taxonomy, dict) else None
        authors = sorted(a for a in raw if isinstance(a, str)) if isinstance(raw, list) else []
        if plan.pr_author and plan.pr_author.lower() in (a.lower() for a in authors):
            continue
        notes.setdefault(ap_key, {"ap_key": ap_key, "files": [], "authors": authors})["files"].append(path)
    return [notes[key] for key in sorted(notes)]


def _blob_or_empty(root: Path, commit: str, path: str) -> bytes | None:
    """A blob's bytes; a refused one (link, submodule, too big) counts as present but empty."""
    try:
        return read_blob(root, commit, path)
    except APBError:
        return b""


def plan_change(root: Path, base: str, head: str, *, protocols: list[str], shards: dict[str, int],
                pr_author: str | None = None) -> Plan:
    """The plan of what *head* changes relative to its merge base with *base* (a PR, or a push); *pr_author*
    (the PR's GitHub login) decides which changed APs are someone else's (``Plan.ownership``)."""
    base_sha, head_sha = resolve_commit(root, base), resolve_commit(root, head)
    fork_point = merge_base(root, base_sha, head_sha)
    plan = Plan(protocols=list(protocols), base=base_sha, head=head_sha, merge_base=fork_point,
                changed_files=changed_files(root, fork_point, head_sha), pr_author=pr_author)
    plan.blocked_files = [p for p in plan.changed_files if classify_path(p) not in ("data", "generated")]
    if plan.blocked_files:
        return plan
    plan.ownership = ownership_notes(root, plan)
    for path in data_files(plan):
        if not path.endswith(f"/{MANIFEST}"):  # manifests are read below; a refused blob is a problem too
            try:
                read_blob(root, head_sha, path)
            except APBError as error:
                plan.problems.extend(error.problems)
    to_schedule: list[ModelEntry] = []
    loading_changed: set[str] = set()
    for path in sorted(p for p in plan.changed_files if p.endswith(f"/{MANIFEST}")):
        try:
            old = parse_manifest_blob(path, read_blob(root, fork_point, path))
            new = parse_manifest_blob(path, read_blob(root, head_sha, path))
        except APBError as error:
            plan.problems.extend(error.problems)
            continue
        groups = compare_entries(old, new)
        for name, keys in groups.items():
            plan.entries[name].extend(keys)
        loading_changed |= {k for k in groups["changed"] if loading_fields(new[k]) != loading_fields(old[k])}
        to_schedule.extend(new[k] for k in groups["added"] + groups["changed"])
    for name in plan.entries:
        plan.entries[name].sort()
    if not plan.problems:
        schedule(plan, root, sorted(to_schedule, key=lambda e: e.model_key), loading_changed, shards)
    return plan


def manifest_entries(root: Path) -> tuple[list[ModelEntry], list[Problem]]:
    """Every entry of *root*'s manifests, and a problem for each manifest that does not load (the others still
    count: one broken manifest on main must not hold back every other AP's records)."""
    entries: list[ModelEntry] = []
    problems: list[Problem] = []
    for path in sorted(submissions_dir(root).glob(f"*/{MANIFEST}")):
        try:
            entries.extend(load_manifest(path))
        except APBError as error:
            problems.extend(Problem(path.relative_to(root).as_posix(), p.message, p.line, p.field)
                            for p in error.problems)
    return entries, problems


def plan_missing(root: Path, *, protocols: list[str], shards: dict[str, int]) -> Plan:
    """The plan of every entry in *root*'s manifests that has a sha256 but no record of it for one of *protocols*: what
    the leaderboard workflow hands off from the PRs' evaluations or evaluates (``apb ci handoff`` splits it; it
    may hold more legs than one matrix). It looks at the whole state of the checkout, never at a window of
    commits, so a run that GitHub cancelled (or that failed) loses nothing: the next run plans it."""
    plan = Plan(protocols=list(protocols))
    entries, plan.problems = manifest_entries(root)
    plan.entries["untouched"] = sorted(e.model_key for e in entries)
    missing = [e for e in entries if e.sha256 and any(existing_record_sha256(root, e.ap_key, e.model_key, protocol)
                                                      != e.sha256 for protocol in protocols)]
    schedule(plan, root, sorted(missing, key=lambda e: e.model_key), set(), shards, limit=None)
    return plan


def data_files(plan: Plan) -> list[str]:
    """The changed files of *plan* that are submission data (generated files are the bot's: never extracted)."""
    return [path for path in plan.changed_files if classify_path(path) == "data"]


def extract_data(root: Path, plan: Plan, into: Path) -> list[str]:
    """Mirror the head commit's version of each changed data file into the tree at *into* (a scratch copy
    of the base checkout): write it, or delete it if the change removed it. Returns the paths touched.

    Only ``submissions/<ap>/manifest.yaml`` and ``taxonomy.json`` are ever written, as regular files; nothing is
    written for a plan with problems (a refused blob) or files that are not data."""
    if plan.blocked_files or plan.problems:
        raise APBError(Problem("apb ci plan", "refusing to extract: " + plan.reason, field="extract"))
    if plan.head is None:
        raise APBError(Problem("apb ci plan", "refusing to extract: the plan names no head commit", field="extract"))
    touched = []
    for path in data_files(plan):
        target = into.joinpath(*PurePosixPath(path).parts)
        if target.parent.is_symlink() or target.is_symlink():
            raise APBError(Problem(str(target), "is a symlink in the scratch tree; use a fresh copy", field="extract"))
        data = read_blob(root, plan.head, path)
        if data is None:
            target.unlink(missing_ok=True)
        else:
            atomic_write_bytes(target, data)
        touched.append(path)
    return touched

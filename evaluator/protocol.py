"""Evaluation protocols: ``evaluator/protocols/<id>.yaml`` read into a frozen ``Protocol``.

A protocol file always has ``id``, ``leaderboard`` and ``description``. An *evaluable* protocol (one that
``apb evaluate`` can run) also fixes the threat model (a ``norm`` of ``evaluator/registry/norms.yaml``, ``eps``
as an exact fraction such as ``"8/255"``, optionally the ``curve`` budgets), ``n_samples``, ``chunk_size``,
``seed`` and the ``autoattack``, ``hofmn`` and ``sanity`` sections; a protocol without them (``published-2024``)
only names where imported numbers come from. An evaluable protocol may also hold a section named after an
evaluation stage added later (``metrics_file.added_stages``, from ``metrics.yaml``): kept as it is written
(``Protocol.stage_settings``), checked by its stage with ``Protocol.reader``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR
from evaluator.registry.metrics_file import added_stages
from evaluator.registry.norms import CurveGrid, ThreatModel, curve_grid, norms, parse_fraction, threat_model
from evaluator.untrusted.safeio import LineMap, format_field, load_yaml

PROTOCOLS_DIR = PACKAGE_DIR / "protocols"
PROTOCOLS_DIR_VARIABLE = "APB_PROTOCOLS_DIR"  # a folder of protocol files read instead of PROTOCOLS_DIR
DEFAULT_PROTOCOL = "linf-8-255-v1"  # what `apb evaluate`, the Python API and the CI preview use without --protocol
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "custom")
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab")  # names of version custom's list
LOSSES = ("LL", "DLR", "CE")
OPTIMIZERS = ("SGD", "Adam")
SCHEDULERS = ("cosine", "none")
TUNING_SAMPLES = ("first-clean-correct",)
EVALUATION_SECTIONS = ("threat_model", "n_samples", "chunk_size", "seed", "autoattack", "hofmn", "sanity")
TOP_LEVEL = ("id", "leaderboard", "description", *EVALUATION_SECTIONS)


@dataclass(frozen=True)
class SearchDimension:
    """One tuned optimizer parameter: sampled in ``[low, high]``, in log scale when ``log``."""

    name: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class TuningSettings:
    trials: int
    startup_trials: int
    steps: int
    batch_size: int
    samples: str  # which samples form the tuning batch: first-clean-correct
    search_space: tuple[SearchDimension, ...]

    def search_space_dict(self) -> dict[str, dict]:
        """The search space as ``{name: {"low", "high", "log"}}`` (the form ``tune_fmn`` takes)."""
        return {d.name: {"low": d.low, "high": d.high, "log": d.log} for d in self.search_space}


@dataclass(frozen=True)
class HOFMNSettings:
    loss: str
    optimizer: str
    scheduler: str
    tuning: TuningSettings
    steps: int
    batch_size: int


@dataclass(frozen=True)
class AutoAttackSettings:
    version: str
    batch_size: int
    attacks: tuple[str, ...] = ()  # the attacks of version custom (AutoAttack's attacks_to_run), in order


@dataclass(frozen=True)
class SanityLimits:
    """Largest shares (fractions of the evaluated samples) that do not raise a flag."""

    max_aa_only: float
    max_hofmn_only: float
    max_no_adversarial: float


@dataclass(frozen=True)
class Protocol:
    """Any protocol file. Only an ``EvaluableProtocol`` (every evaluation section present) fixes the threat model
    and the attacks; here those fields are None."""

    id: str
    leaderboard: bool
    description: str
    path: Path
    sha256: str  # of the protocol file's bytes: records pin the exact protocol they were made with
    threat_model: ThreatModel | None = None
    n_samples: int | None = None
    chunk_size: int | None = None
    seed: int | None = None
    autoattack: AutoAttackSettings | None = None
    hofmn: HOFMNSettings | None = None
    sanity: SanityLimits | None = None
    stage_sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def stage_settings(self, stage: str) -> Mapping[str, Any] | None:
        """The section named after *stage* (one of ``metrics_file.added_stages``) as written, or None: a protocol
        without it does not run that stage."""
        return self.stage_sections.get(stage)

    def reader(self) -> ProtocolReader:
        """A reader of this protocol's file, whose errors name the file, line and field (for a stage checking
        its section)."""
        return ProtocolReader(self.path, load_yaml(self.path)[1])

    @property
    def evaluable(self) -> bool:
        return isinstance(self, EvaluableProtocol)

    @property
    def eps(self) -> float:
        """The threat model's eps as the float nearest the exact fraction (8/255 -> 0.03137254901960784)."""
        if self.threat_model is None:
            raise APBError(Problem(str(self.path), "this protocol fixes no threat model", field="threat_model"))
        return self.threat_model.eps

    def require_evaluable(self) -> EvaluableProtocol:
        """This protocol, or an error saying it cannot be run by ``apb evaluate``."""
        if not isinstance(self, EvaluableProtocol):
            runnable = ", ".join(p.id for p in list_protocols() if p.evaluable)
            raise APBError(Problem(str(self.path), f"protocol {self.id!r} describes imported results and cannot "
                                                   f"be evaluated; use one of: {runnable}", field="id"))
        return self


@dataclass(frozen=True)
class EvaluableProtocol(Protocol):
    """A protocol ``apb evaluate`` can run: every evaluation field is required."""

    threat_model: ThreatModel
    n_samples: int
    chunk_size: int
    seed: int
    autoattack: AutoAttackSettings
    hofmn: HOFMNSettings
    sanity: SanityLimits


def on_first_samples(protocol: EvaluableProtocol, n: int) -> EvaluableProtocol:
    """*protocol* on its first *n* test samples (``apb evaluate --n N``): the id ``<id>-n<N>``, which names no
    protocol file, and ``leaderboard: false``, so its records are never written under submissions/ and never
    accepted there (``apb validate`` refuses an unknown protocol)."""
    import dataclasses

    if n < 1:
        raise APBError(Problem("--n", f"the number of test samples must be positive, got {n}"))
    return dataclasses.replace(protocol, id=f"{protocol.id}-n{n}", leaderboard=False, n_samples=n,
                               chunk_size=min(protocol.chunk_size, n),
                               description=f"{protocol.description} Run on the first {n} samples only (apb evaluate "
                                           f"--n {n}): not a leaderboard run.")


class ProtocolReader:
    """Typed access to the fields of one protocol file; every error names the file, line and field."""

    def __init__(self, path: Path, lines: LineMap) -> None:
        self.path = path
        self.lines = lines

    def fail(self, where: tuple, message: str) -> APBError:
        return APBError(Problem(str(self.path), message, self.lines(where), format_field(where)))

    def mapping(self, data: Any, where: tuple, keys: tuple[str, ...], required: tuple[str, ...] | None = None) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where, "must be a mapping")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise self.fail(where + (unknown[0],), f"unknown field; allowed here: {', '.join(keys)}")
        missing = [key for key in (keys if required is None else required) if key not in data]
        if missing:
            raise self.fail(where, f"missing field {missing[0]!r}; add it (fields here: {', '.join(keys)})")
        return data

    def integer(self, data: dict, where: tuple, minimum: int = 0) -> int:
        value = data[where[-1]]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, data: dict, where: tuple) -> Fraction:
        try:
            return parse_fraction(data[where[-1]])
        except ValueError as error:
            raise self.fail(where, str(error)) from None

    def share(self, data: dict, where: tuple) -> float:
        value = self.number(data, where)
        if not 0 <= value <= 1:
            raise self.fail(where, f"must be a share between 0 and 1, got {data[where[-1]]!r}")
        return float(value)

    def choice(self, data: dict, where: tuple, choices: tuple[str, ...]) -> str:
        value = data[where[-1]]
        if value not in choices:
            raise self.fail(where, f"must be one of {', '.join(choices)}, got {value!r}")
        return value


def _attacks(reader: ProtocolReader, autoattack: dict) -> tuple[str, ...]:
    """The attack list of ``version: custom`` (required there, refused with any other version)."""
    attacks = autoattack.get("attacks")
    if autoattack["version"] != "custom":
        if attacks is not None:
            raise reader.fail(("autoattack", "attacks"), "is for version: custom only")
        return ()
    if not isinstance(attacks, list) or not attacks or any(name not in AUTOATTACK_ATTACKS for name in attacks) \
            or len(set(attacks)) != len(attacks):
        raise reader.fail(("autoattack", "attacks"), f"version custom needs a list of distinct attacks from "
                                                     f"{', '.join(AUTOATTACK_ATTACKS)}, got {attacks!r}")
    return tuple(attacks)


def _search_space(reader: ProtocolReader, data: Any, where: tuple) -> tuple[SearchDimension, ...]:
    if not isinstance(data, dict) or not data:
        raise reader.fail(where, "must be a non-empty mapping of parameter name to {low, high, log}")
    dimensions = []
    for name, spec in data.items():
        at = where + (name,)
        reader.mapping(spec, at, ("low", "high", "log"), ("low", "high"))
        low, high = reader.number(spec, at + ("low",)), reader.number(spec, at + ("high",))
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise reader.fail(at + ("log",), f"must be true or false, got {log!r}")
        if low >= high or (log and low <= 0):
            raise reader.fail(at, "needs low < high (and low > 0 when log is true)")
        dimensions.append(SearchDimension(name, float(low), float(high), log))
    return tuple(dimensions)


def _hofmn(reader: ProtocolReader, data: Any) -> HOFMNSettings:
    at = ("hofmn",)
    reader.mapping(data, at, ("loss", "optimizer", "scheduler", "tuning", "steps", "batch_size"))
    tuning = reader.mapping(data["tuning"], at + ("tuning",),
                            ("trials", "startup_trials", "steps", "batch_size", "samples", "search_space"))
    tat = at + ("tuning",)
    settings = TuningSettings(
        trials=reader.integer(tuning, tat + ("trials",), 1),
        startup_trials=reader.integer(tuning, tat + ("startup_trials",), 0),
        steps=reader.integer(tuning, tat + ("steps",), 1),
        batch_size=reader.integer(tuning, tat + ("batch_size",), 1),
        samples=reader.choice(tuning, tat + ("samples",), TUNING_SAMPLES),
        search_space=_search_space(reader, tuning["search_space"], tat + ("search_space",)),
    )
    return HOFMNSettings(loss=reader.choice(data, at + ("loss",), LOSSES),
                         optimizer=reader.choice(data, at + ("optimizer",), OPTIMIZERS),
                         scheduler=reader.choice(data, at + ("scheduler",), SCHEDULERS),
                         tuning=settings, steps=reader.integer(data, at + ("steps",), 1),
                         batch_size=reader.integer(data, at + ("batch_size",), 1))


def _threat_model(reader: ProtocolReader, data: Any) -> ThreatModel:
    """The norm (one of evaluator/registry/norms.yaml), the exact eps and, optionally, the curve budgets
    (``curve: {step, points, tick_step, tick_unit}``; fields left out are the norm's)."""
    at = ("threat_model",)
    threat = reader.mapping(data, at, ("norm", "eps", "curve"), ("norm", "eps"))
    norm = reader.choice(threat, at + ("norm",), tuple(norms()))
    eps = reader.number(threat, at + ("eps",))
    if not 0 < eps < 1:
        raise reader.fail(at + ("eps",), f"must lie strictly between 0 and 1, got {threat['eps']!r}")
    curve: CurveGrid | None = None
    if "curve" in threat:
        try:
            curve = curve_grid(threat["curve"], "curve", norms()[norm].curve)
        except ValueError as error:
            raise reader.fail(at + ("curve",), str(error)) from None
    return threat_model(norm, eps, curve)


def _evaluation_fields(reader: ProtocolReader, data: dict) -> dict:
    """The fields of an evaluable protocol (all sections present)."""
    threat = _threat_model(reader, data["threat_model"])
    autoattack = reader.mapping(data["autoattack"], ("autoattack",), ("version", "batch_size", "attacks"),
                                ("version", "batch_size"))
    sanity = reader.mapping(data["sanity"], ("sanity",), ("max_aa_only", "max_hofmn_only", "max_no_adversarial"))
    return {
        "threat_model": threat,
        "n_samples": reader.integer(data, ("n_samples",), 1),
        "chunk_size": reader.integer(data, ("chunk_size",), 1),
        "seed": reader.integer(data, ("seed",), 0),
        "autoattack": AutoAttackSettings(reader.choice(autoattack, ("autoattack", "version"), AUTOATTACK_VERSIONS),
                                         reader.integer(autoattack, ("autoattack", "batch_size"), 1),
                                         _attacks(reader, autoattack)),
        "hofmn": _hofmn(reader, data["hofmn"]),
        "sanity": SanityLimits(*(reader.share(sanity, ("sanity", key)) for key in
                                 ("max_aa_only", "max_hofmn_only", "max_no_adversarial"))),
    }


def _stage_section(reader: ProtocolReader, data: Any, stage: str) -> Mapping[str, Any]:
    """A stage's section as written (a mapping; its stage checks its fields)."""
    if not isinstance(data, dict):
        raise reader.fail((stage,), f"must be a mapping of the {stage} stage's settings")
    return data


def read_protocol_file(path: Path) -> Protocol:
    """Read and check one protocol file; its ``id`` must equal the file name's stem."""
    data, lines = load_yaml(path)
    reader = ProtocolReader(path, lines)
    stages = tuple(stage for stage in added_stages() if stage not in TOP_LEVEL)
    reader.mapping(data, (), (*TOP_LEVEL, *stages), ("id", "leaderboard", "description"))
    if data["id"] != path.stem:
        raise reader.fail(("id",), f"must equal the file name without .yaml ({path.stem!r}), got {data['id']!r}")
    if not isinstance(data["leaderboard"], bool):
        raise reader.fail(("leaderboard",), f"must be true or false, got {data['leaderboard']!r}")
    if not isinstance(data["description"], str) or not data["description"].strip():
        raise reader.fail(("description",), "must be a non-empty text")
    present = [key for key in EVALUATION_SECTIONS if key in data]
    if present and len(present) != len(EVALUATION_SECTIONS):
        missing = next(key for key in EVALUATION_SECTIONS if key not in data)
        raise reader.fail((missing,), f"missing: an evaluable protocol needs all of {', '.join(EVALUATION_SECTIONS)}")
    common = {"id": data["id"], "leaderboard": data["leaderboard"], "description": data["description"].strip(),
              "path": path, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if present:
        sections = {stage: _stage_section(reader, data[stage], stage) for stage in stages if stage in data}
        return EvaluableProtocol(**common, **_evaluation_fields(reader, data), stage_sections=sections)
    stage = next((stage for stage in stages if stage in data), None)
    if stage is not None:
        raise reader.fail((stage,), f"a stage's settings need an evaluable protocol (with all of "
                                    f"{', '.join(EVALUATION_SECTIONS)}); remove it")
    return Protocol(**common)


def protocols_dir() -> Path:
    """Where the protocols are: ``$APB_PROTOCOLS_DIR`` when set (a folder that stands in for the shipped one, with
    every protocol the repository's records name: a test, or a fork trying a new threat model), else
    ``evaluator/protocols/``."""
    folder = os.environ.get(PROTOCOLS_DIR_VARIABLE)
    return Path(folder) if folder else PROTOCOLS_DIR


def protocol_path(name_or_path: str | Path) -> Path:
    """The file of a protocol given by id (e.g. ``DEFAULT_PROTOCOL``) or by path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return Path(text)
    return protocols_dir() / f"{text}.yaml"


def load_protocol(name_or_path: str | Path) -> Protocol:
    """The protocol with this id (a file of ``protocols_dir()``) or at this path."""
    path = protocol_path(name_or_path)
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(protocols_dir().glob("*.yaml")))
        raise APBError(Problem(str(path), f"no such protocol; choose one of: {known}", field="protocol"))
    return read_protocol_file(path)


def list_protocols() -> list[Protocol]:
    """Every protocol of ``protocols_dir()`` (the shipped ``evaluator/protocols/``), sorted by id."""
    return [read_protocol_file(path) for path in sorted(protocols_dir().glob("*.yaml"))]

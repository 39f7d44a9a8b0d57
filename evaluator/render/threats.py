"""The threat model of each protocol's records as the renderers use it: numbers are compared only within one.

A protocol that fixes no threat model (``published-2024``: imported numbers) is read as ``IMPORTED_THREAT``, the
original benchmark's Linf at 8/255; published numbers fill or face only the cells of protocols of that threat
model, so a record of another threat model never sits in (or is compared with) a Linf 8/255 column.
"""
from __future__ import annotations

from fractions import Fraction

from evaluator.protocol import Protocol, list_protocols
from evaluator.registry.norms import ThreatModel, threat_model

IMPORTED_THREAT = threat_model("Linf", Fraction(8, 255))


def threat_of(protocol: Protocol) -> ThreatModel:
    """The threat model of a protocol's records: its own, or ``IMPORTED_THREAT`` where it fixes none."""
    return protocol.threat_model if protocol.threat_model is not None else IMPORTED_THREAT


def threats() -> dict[str, ThreatModel]:
    """Every protocol's threat model, by protocol id."""
    return {protocol.id: threat_of(protocol) for protocol in list_protocols()}


def faces_published(threat: ThreatModel) -> bool:
    """Whether published numbers may fill or be compared with cells of this threat model."""
    return threat.key == IMPORTED_THREAT.key

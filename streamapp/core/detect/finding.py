"""The finding: one document on ``pagerduty_audit_findings`` per detection.

Its ``id`` is derived from the rule and the records that triggered it, nothing else (no
clock, no counter, no worker): the same records through the same rule give the same id
after a crash and a replay, so consumers drop repeats by ``id``. Schema evolution as for
the output document: fields are only added, each with a default; ``attack`` is absent
(not null) when no ATT&CK technique fits the rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from streamapp.core.detect.attack import Attack
from streamapp.core.output import Actor, ResourceRef, Timestamp

__all__ = [
    "SEVERITIES",
    "Finding",
    "Severity",
    "decode_finding",
    "encode_finding",
    "finding_id",
    "finding_key",
]

Severity = Literal["info", "low", "medium", "high", "critical"]
#: every severity, least to most severe
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "low", "medium", "high", "critical")


class Finding(msgspec.Struct, kw_only=True, frozen=True):
    """A detection: what fired, on which records, who did it, and what to check."""

    #: 32 hex digits of sha256 over the rule, the source, the state key and the record ids
    id: str
    rule_id: str
    title: str
    severity: Severity
    #: the MITRE ATT&CK technique the rule maps to; absent when none fits
    attack: Attack | msgspec.UnsetType = msgspec.UNSET
    #: one line a person can act on
    summary: str
    source_name: str
    #: ``execution_time`` of the triggering record (of a burst: its newest record)
    at: Timestamp
    #: ``execution_time`` of the earliest triggering record (equal to ``at`` for one record)
    first_seen: Timestamp
    #: the audit records that triggered the finding, oldest first
    record_ids: list[str]
    #: who acted (the first actor of the triggering record), null when PagerDuty named none
    actor: Actor | None = None
    #: the objects acted on, deduplicated: changed resource, root resource, references
    resources: list[ResourceRef] = []
    #: what the rule saw, as short texts: the matched change, the new value, the count...
    evidence: dict[str, str] = {}
    #: when the worker published the finding; null where no clock is involved (replays)
    detected_at: Timestamp | None = None


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(Finding)


def finding_id(rule_id: str, source_name: str, key: bytes, record_ids: Iterable[str]) -> str:
    """The finding's id: sha256 over a JSON array of a version tag, the rule, the source,
    the state key (``b""`` for one-record rules) and the sorted record ids; 32 hex digits."""
    material = _ENCODER.encode(
        ["f1", rule_id, source_name, key.decode("utf-8", "replace"), sorted(set(record_ids))]
    )
    return hashlib.sha256(material).hexdigest()[:32]


def finding_key(finding: Finding) -> bytes:
    """The Kafka message key of a finding: its id, so a compacted topic keeps one per id."""
    return finding.id.encode("ascii")


def encode_finding(finding: Finding) -> bytes:
    """The UTF-8 JSON value published on ``pagerduty_audit_findings``."""
    return _ENCODER.encode(finding)


def decode_finding(data: bytes | str) -> Finding:
    return _DECODER.decode(data)

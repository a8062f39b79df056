"""``rules test FILE``: what the detection rules would fire on the records of a file.

Records come from a file (JSON lines, a JSON array, one object, an ``/audit/records`` page,
or output documents) and go through enrichment and the rules in effect (the built-in pack,
or ``STREAMAPP_RULES_FILE``, with its per-source overrides), in execution order, with a state
of their own: nothing is read from or written to Kafka.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import msgspec

from streamapp.core.detect import Detector, RuleSet, read_records, render_findings
from streamapp.core.detect.replay import ReplayInputError, replay_documents
from streamapp.core.enrich import InvalidRecord, enrich
from streamapp.core.errors import ConfigError
from streamapp.core.models import RawEnvelope
from streamapp.core.output import OutputDocument
from streamapp.kafka.clients import Cluster

_decode_envelope = msgspec.json.Decoder(RawEnvelope).decode


def show(documents: list[OutputDocument], rules: RuleSet, out: TextIO = sys.stdout) -> int:
    findings = replay_documents(documents, Detector(rules))
    for line in render_findings(findings, records=len(documents)):
        print(line, file=out)
    return 0


def from_file(path: str, *, source_name: str) -> list[OutputDocument]:
    """The documents of a file (``-``: standard input); ConfigError for input that is no good."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        return read_records(data, origin=path, source_name=source_name)
    except ReplayInputError as exc:
        raise ConfigError(str(exc)) from None


async def from_raw_topic(cluster: Cluster, topic: str) -> list[OutputDocument]:
    """Every record on the raw topic, enriched, in execution order (repeats once)."""
    latest = await cluster.read_latest(topic) or {}
    documents: dict[str, OutputDocument] = {}
    for value in latest.values():
        try:
            envelope = _decode_envelope(value or b"")
            doc = enrich(
                bytes(envelope.record),
                source_name=envelope.source_name,
                ingested_at=envelope.polled_at,
            )
        except (msgspec.DecodeError, msgspec.ValidationError, InvalidRecord):
            continue  # a rejected or unreadable record: the dead-letter topic has it
        documents.setdefault(doc.id, doc)
    return sorted(documents.values(), key=lambda d: (d.event_time, d.id))

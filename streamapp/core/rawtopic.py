"""What the poller writes to the raw topic for a page: one envelope per record, keyed by id.

A record is carried byte for byte inside a :class:`~streamapp.core.models.RawEnvelope`. A
record that cannot be carried as it is (no id or time, nested too deeply, or too large for
the topic) travels as a *rejected* envelope instead, keyed ``dlq:<id>`` (or
``dlq:sha256:<hash>`` without an id): the pipeline turns it into one dead letter per key,
so a bad record seen by many polls is dead-lettered once, and the rest of its page flows on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from streamapp.core.deadletter import rejected
from streamapp.core.models import Outgoing, RawEnvelope

_encode = msgspec.json.Encoder().encode
_NULL = msgspec.Raw(b"null")


class RecordLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def raw(self) -> msgspec.Raw: ...


class MalformedLike(Protocol):
    @property
    def raw(self) -> bytes: ...
    @property
    def reason(self) -> str: ...
    @property
    def id(self) -> str | None: ...


def rejected_key(record_id: str | None, original: bytes) -> bytes:
    if record_id:
        return f"dlq:{record_id}".encode()
    return f"dlq:sha256:{hashlib.sha256(original).hexdigest()}".encode()


def rejected_message(
    source_name: str,
    original: bytes,
    *,
    reason: str,
    record_id: str | None,
    raw_topic: str,
    polled_at: datetime,
    room: int,
) -> Outgoing:
    """A rejected envelope for ``original``, whose encoding fits in ``room`` bytes."""
    envelope = RawEnvelope(
        source_name=source_name,
        polled_at=polled_at,
        record=_NULL,
        rejected=rejected(original, reason=reason, record_id=record_id, room=room),
    )
    return Outgoing(
        raw_topic,
        rejected_key(record_id, original),
        _encode(envelope),
        [("source_name", source_name.encode()), ("rejected", b"1")],
    )


def page_messages(
    source_name: str,
    records: Sequence[RecordLike],
    malformed: Sequence[MalformedLike],
    *,
    raw_topic: str,
    polled_at: datetime,
    room: int,
) -> list[Outgoing]:
    """A page as raw-topic messages, records first (newest first, as PagerDuty sent them),
    then one rejected envelope per malformed record. ``room`` is the largest value the raw
    topic takes: a record whose envelope is larger is rejected too."""
    headers = [("source_name", source_name.encode())]
    messages: list[Outgoing] = []
    for record in records:
        envelope = RawEnvelope(source_name=source_name, polled_at=polled_at, record=record.raw)
        value = _encode(envelope)
        if len(value) <= room:
            messages.append(Outgoing(raw_topic, record.id.encode(), value, headers))
            continue
        reason = (
            f"the record is {len(record.raw):,} bytes, more than the {room:,} the raw topic"
            " takes (STREAMAPP_KAFKA_MAX_MESSAGE_BYTES, or the topic's max.message.bytes)"
        )
        messages.append(
            rejected_message(
                source_name,
                bytes(record.raw),
                reason=reason,
                record_id=record.id,
                raw_topic=raw_topic,
                polled_at=polled_at,
                room=room,
            )
        )
    for bad in malformed:
        messages.append(
            rejected_message(
                source_name,
                bad.raw,
                reason=bad.reason,
                record_id=bad.id,
                raw_topic=raw_topic,
                polled_at=polled_at,
                room=room,
            )
        )
    return messages

"""From raw records to output messages: dedupe decision, enrichment, routing, dead letters.

Pure: a batch of raw-topic messages in, the messages to send out. The faust agent supplies
the dedupe lookup and does the sending; this module never raises on input. Anything that
cannot become an output document becomes a dead letter with its reason and original bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from streamapp.core.deadletter import dead_letter
from streamapp.core.enrich import InvalidRecord, encode_document, enrich
from streamapp.core.models import Outgoing, RawEnvelope
from streamapp.core.ocsf import encode_ocsf, to_ocsf
from streamapp.core.routing import Router, headers_for, message_key

_decode_envelope = msgspec.json.Decoder(RawEnvelope).decode
_encode = msgspec.json.Encoder().encode

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One raw-topic message."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


@dataclass
class BatchResult:
    messages: list[Outgoing] = field(default_factory=list)
    #: (record id, raw partition) of records emitted for the first time: mark them seen
    #: only once the broker acknowledged ``messages``
    fresh: list[tuple[bytes, int]] = field(default_factory=list)
    #: source name → count, for metrics
    emitted: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)


def _bump(counter: dict[str, int], name: str | None) -> None:
    key = name or "-"
    counter[key] = counter.get(key, 0) + 1


@dataclass
class Processor:
    raw_topic: str
    output_topic: str
    dlq_topic: str
    router: Router = field(default_factory=Router)
    ocsf_topic: str | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def process(self, batch: Sequence[Incoming], seen: Callable[[bytes, int], bool]) -> BatchResult:
        result = BatchResult()
        now = self.clock()
        in_batch: set[bytes] = set()
        for message in batch:
            self._one(message, seen, in_batch, now, result)
        return result

    def _one(
        self,
        message: Incoming,
        seen: Callable[[bytes, int], bool],
        in_batch: set[bytes],
        now: datetime,
        result: BatchResult,
    ) -> None:
        original = message.value or b""
        try:
            envelope = _decode_envelope(original)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._dead(message, f"not a raw-topic envelope: {exc}", None, now, result)
            return
        if message.key is not None and (
            message.key in in_batch or seen(message.key, message.partition)
        ):
            # the raw topic is keyed by record id: a repeat needs no enrichment
            _bump(result.duplicates, envelope.source_name)
            return
        try:
            doc = enrich(
                bytes(envelope.record),
                source_name=envelope.source_name,
                source_type=envelope.source_type,
                ingested_at=now,
            )
        except InvalidRecord as exc:
            self._dead(
                message,
                f"invalid audit record: {exc.reason}",
                envelope.source_name,
                now,
                result,
            )
            return
        except Exception as exc:  # never crash on input: a bug here still dead-letters
            self._dead(
                message,
                f"enrichment failed: {type(exc).__name__}: {exc}",
                envelope.source_name,
                now,
                result,
            )
            return
        record_id = doc.id.encode()
        if record_id != message.key and (
            record_id in in_batch or seen(record_id, message.partition)
        ):
            _bump(result.duplicates, doc.source_name)
            return
        in_batch.add(record_id)
        key = message_key(doc)
        headers = headers_for(doc)
        value = encode_document(doc)
        result.messages.append(Outgoing(self.output_topic, key, value, headers))
        for topic in self.router.topics_for(doc):
            result.messages.append(Outgoing(topic, key, value, headers))
        if self.ocsf_topic is not None:
            result.messages.append(
                Outgoing(self.ocsf_topic, key, encode_ocsf(to_ocsf(doc)), headers)
            )
        result.fresh.append((record_id, message.partition))
        _bump(result.emitted, doc.source_name)

    def _dead(
        self,
        message: Incoming,
        reason: str,
        source_name: str | None,
        now: datetime,
        result: BatchResult,
    ) -> None:
        letter = dead_letter(
            message.value or b"",
            reason=reason,
            stage="pipeline",
            source_name=source_name,
            at=now,
            topic=self.raw_topic,
            partition=message.partition,
            offset=message.offset,
        )
        headers: Headers = [("reason", letter.reason[:200].encode())]
        result.messages.append(Outgoing(self.dlq_topic, message.key, _encode(letter), headers))
        _bump(result.dead, source_name)


def seen_value(first_seen: float, partition: int) -> bytes:
    """The dedupe table's value: when an id was first emitted, and its raw partition."""
    return f"{int(first_seen)}:{partition}".encode()


def expired_ids(
    items: Iterable[tuple[bytes, bytes]], *, active_partitions: Container[int], cutoff: float
) -> list[tuple[bytes, int]]:
    """The (id, partition) pairs first seen before ``cutoff`` on partitions this worker owns.

    Unreadable values are expired too: they cannot prove an id is recent."""
    expired: list[tuple[bytes, int]] = []
    for key, value in items:
        first_seen, _, partition = value.decode("ascii", "replace").partition(":")
        try:
            when, where = int(first_seen), int(partition)
        except ValueError:
            expired.append((key, -1))
            continue
        if where in active_partitions and when < cutoff:
            expired.append((key, where))
    return expired

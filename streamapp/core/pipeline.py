"""From raw records to output messages: dedupe decision, enrichment, routing, dead letters.

Pure: a batch of raw-topic messages in, the messages to send out. The caller supplies the
dedupe lookup and does the sending; this module never raises on input. Anything that
cannot become an output document becomes a dead letter with its reason and original bytes:
an envelope that does not decode, a record that is not an audit record, a record the poller
rejected (malformed, too deep, too large), and a document larger than the output topic
takes. Each dead letter, like each output, is produced once per key: its key is marked seen.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from streamapp.core.deadletter import dead_letter, one_line, original_of
from streamapp.core.ecs import encode_ecs, to_ecs
from streamapp.core.enrich import InvalidRecord, encode_document, enrich
from streamapp.core.geoip import SourceAs, SourceGeo
from streamapp.core.models import Outgoing, RawEnvelope, Rejected
from streamapp.core.ocsf import encode_ocsf, to_ocsf
from streamapp.core.output import OutputDocument
from streamapp.core.routing import Router, headers_for, message_key

T = TypeVar("T")
_decode_envelope = msgspec.json.Decoder(RawEnvelope).decode
_encode = msgspec.json.Encoder().encode

Headers = list[tuple[str, bytes]]
#: the largest value (bytes) a message to a topic may carry; unlimited when not given
Room = Callable[[str], int]
#: another rendering of each record to a topic of its own (OCSF, ECS), keyed like the output
Rendering = tuple[str, Callable[[OutputDocument], bytes]]
#: more messages for each record emitted (the detections' findings and keyed inputs)
Fanout = Callable[[OutputDocument], list[Outgoing]]
#: the GeoIP answer for a source address
GeoLookup = Callable[[str | None], tuple[SourceGeo | None, SourceAs | None]]


def _unlimited(topic: str) -> int:
    return 1 << 62


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
    #: for each message, the index in the batch of the raw message it came from
    origin: list[int] = field(default_factory=list)
    #: (key, raw partition) of records emitted or dead-lettered for the first time: mark
    #: them seen only once the broker acknowledged ``messages``
    fresh: list[tuple[bytes, int]] = field(default_factory=list)
    #: source name → count, for metrics
    emitted: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    #: (source name, stage) → count of dead letters
    dead: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, message: Outgoing, origin: int) -> None:
        self.messages.append(message)
        self.origin.append(origin)


@dataclass(slots=True)
class _Batch:
    """What one :meth:`Processor.process` call shares across its messages."""

    seen: Callable[[bytes, int], bool]
    now: datetime
    result: BatchResult
    #: keys emitted or dead-lettered earlier in this batch
    in_batch: set[bytes] = field(default_factory=set)

    def repeat(self, key: bytes | None, partition: int) -> bool:
        return key is not None and (key in self.in_batch or self.seen(key, partition))

    def mark(self, key: bytes, partition: int) -> None:
        """``key`` has its output (or dead letter) in this batch: seen once acknowledged."""
        self.in_batch.add(key)
        self.result.fresh.append((key, partition))


def _bump(counter: dict[str, int], name: str | None, n: int = 1) -> None:
    key = name or "-"
    counter[key] = counter.get(key, 0) + n


@dataclass
class Processor:
    raw_topic: str
    output_topic: str
    dlq_topic: str
    router: Router = field(default_factory=Router)
    renderings: Sequence[Rendering] = ()
    fanout: Fanout | None = None
    geo: GeoLookup | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    room: Room = _unlimited

    def process(self, batch: Sequence[Incoming], seen: Callable[[bytes, int], bool]) -> BatchResult:
        state = _Batch(seen=seen, now=self.clock(), result=BatchResult())
        for index, message in enumerate(batch):
            envelope = self._envelope(index, message, state)
            if envelope is None:
                continue
            doc = self._document(index, message, envelope, state)
            if doc is not None:
                self._emit(index, message, doc, state)
        return state.result

    def _envelope(self, index: int, message: Incoming, state: _Batch) -> RawEnvelope | None:
        """The raw message's envelope, or None when it is a repeat, unreadable or a record
        the poller rejected (the last two dead-lettered)."""
        original = message.value or b""
        try:
            envelope = _decode_envelope(original)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            if not state.repeat(message.key, message.partition):
                self._dead(index, message, state, f"not a raw-topic envelope: {exc}", None)
            return None
        if state.repeat(message.key, message.partition):
            # the raw topic is keyed by record id: a repeat needs no enrichment
            _bump(state.result.duplicates, envelope.source_name)
            return None
        if isinstance(envelope.rejected, msgspec.UnsetType):
            return envelope
        rejection = envelope.rejected
        carried = original_of(rejection)
        self._dead(
            index,
            message,
            state,
            f"rejected by the poller: {rejection.reason}",
            envelope.source_name,
            stage="poll",
            original=carried,
            record_id=rejection.record_id,
            omitted=rejection if carried is None else None,
        )
        return None

    def _document(
        self, index: int, message: Incoming, envelope: RawEnvelope, state: _Batch
    ) -> OutputDocument | None:
        """The enriched document, or None when the record is not one (dead-lettered) or its
        id repeats one already emitted under another key."""
        try:
            doc = enrich(
                bytes(envelope.record),
                source_name=envelope.source_name,
                source_type=envelope.source_type,
                ingested_at=state.now,
            )
        except InvalidRecord as exc:
            self._dead(index, message, state, exc.reason, envelope.source_name)
            return None
        except Exception as exc:  # never crash on input: a bug here still dead-letters
            reason = f"enrichment failed: {type(exc).__name__}: {exc}"
            self._dead(index, message, state, reason, envelope.source_name)
            return None
        record_id = doc.id.encode()
        if record_id != message.key and state.repeat(record_id, message.partition):
            _bump(state.result.duplicates, doc.source_name)
            return None
        if self.geo is not None and doc.src_ip:
            doc = _located(doc, *self.geo(doc.src_ip))
        return doc

    def _emit(self, index: int, message: Incoming, doc: OutputDocument, state: _Batch) -> None:
        """The document to the output topic, its routes, renderings and fanout; a part too
        large for its topic becomes a dead letter instead."""
        result = state.result
        record_id = doc.id.encode()
        value = encode_document(doc)
        state.mark(record_id, message.partition)
        if len(value) > self.room(self.output_topic):
            reason = (
                f"the output document is {len(value):,} bytes, more than the"
                f" {self.room(self.output_topic):,} topic {self.output_topic!r} takes"
            )
            self._dead(
                index, message, state, reason, doc.source_name, record_id=doc.id, marked=True
            )
            return
        key = message_key(doc)
        headers = headers_for(doc)
        result.add(Outgoing(self.output_topic, key, value, headers), index)
        for topic in self.router.topics_for(doc):
            result.add(Outgoing(topic, key, value, headers), index)
        extras = [Outgoing(topic, key, render(doc), headers) for topic, render in self.renderings]
        if self.fanout is not None:
            extras.extend(self.fanout(doc))
        for extra in extras:
            if len(extra.value) <= self.room(extra.topic):
                result.add(extra, index)
            else:
                reason = f"its {extra.topic!r} message is {len(extra.value):,} bytes, too large"
                self._dead(
                    index,
                    message,
                    state,
                    reason,
                    doc.source_name,
                    stage="render",
                    record_id=doc.id,
                    marked=True,
                )
        _bump(result.emitted, doc.source_name)

    def _dead(
        self,
        index: int,
        message: Incoming,
        state: _Batch,
        reason: str,
        source_name: str | None,
        *,
        stage: str = "pipeline",
        original: bytes | None = None,
        record_id: str | None = None,
        omitted: Rejected | None = None,
        marked: bool = False,
    ) -> None:
        """Dead-letter a raw message, once per key: its key is marked seen, unless the
        caller ``marked`` the record already (a part of an emitted document)."""
        if record_id is None and message.key and not message.key.startswith(b"dlq:"):
            record_id = message.key.decode("utf-8", "replace")  # the raw topic's key is the id
        letter = self._letter_message(
            message, reason, stage, source_name, state.now, record_id, original, omitted
        )
        state.result.add(letter, index)
        key = (source_name or "-", stage)
        state.result.dead[key] = state.result.dead.get(key, 0) + 1
        if not marked and message.key is not None:
            state.mark(message.key, message.partition)

    def dead_letter_for(
        self, message: Incoming, reason: str, *, source_name: str | None = None
    ) -> Outgoing:
        """A bounded dead letter for a raw message whose outputs the broker refused."""
        return self._letter_message(message, reason, "publish", source_name, self.clock(), None)

    def _letter_message(
        self,
        message: Incoming,
        reason: str,
        stage: str,
        source_name: str | None,
        now: datetime,
        record_id: str | None,
        original: bytes | None = None,
        omitted: Rejected | None = None,
    ) -> Outgoing:
        letter = dead_letter(
            message.value or b"" if original is None else original,
            reason=reason,
            stage=stage,
            source_name=source_name,
            at=now,
            topic=self.raw_topic,
            partition=message.partition,
            offset=message.offset,
            record_id=record_id,
            room=self.room(self.dlq_topic),
            omitted=omitted,
        )
        headers: Headers = [("reason", one_line(letter.reason, 200).encode())]
        return Outgoing(self.dlq_topic, message.key, _encode(letter), headers)


def _located(doc: OutputDocument, geo: SourceGeo | None, system: SourceAs | None) -> OutputDocument:
    if geo is None and system is None:
        return doc
    return msgspec.structs.replace(
        doc,
        src_geo=geo if geo is not None else msgspec.UNSET,
        src_as=system if system is not None else msgspec.UNSET,
    )


def ocsf_rendering(topic: str) -> Rendering:
    return topic, lambda doc: encode_ocsf(to_ocsf(doc))


def ecs_rendering(topic: str) -> Rendering:
    return topic, lambda doc: encode_ecs(
        to_ecs(doc, geo=_or_none(doc.src_geo), asn=_or_none(doc.src_as))
    )


def _or_none(value: T | msgspec.UnsetType) -> T | None:
    return None if isinstance(value, msgspec.UnsetType) else value


def seen_value(first_seen: float, partition: int) -> bytes:
    """The dedupe table's value: when an id was first emitted, and its raw partition."""
    return f"{int(first_seen)}:{partition}".encode()


def seen_before(value: bytes, cutoff: float) -> bool:
    """Whether a dedupe entry's id was first seen before ``cutoff`` (epoch seconds).

    An unreadable entry counts as old: it cannot prove the id is recent."""
    first_seen = value.decode("ascii", "replace").partition(":")[0]
    try:
        return int(first_seen) < cutoff
    except ValueError:
        return True


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

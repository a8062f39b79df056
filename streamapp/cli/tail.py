"""``tail``: the output topic for a person (one line per record) or a pipe (JSON lines)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamapp.cli.common import CommandFailed
from streamapp.core.enrich import decode_document
from streamapp.core.errors import ConfigError
from streamapp.core.output import OutputDocument
from streamapp.kafka.clients import Cluster

#: output-document fields ``tail --filter`` accepts
FILTER_KEYS = ("action", "resource_type", "category", "source_name", "event_name")


class _Routing(msgspec.Struct, kw_only=True, frozen=True):
    """The fields ``--filter`` reads; the rest of the document is not decoded."""

    action: Any = None
    resource_type: Any = None
    category: Any = None
    source_name: Any = None
    event_name: Any = None


_decode_routing = msgspec.json.Decoder(_Routing).decode


def parse_filters(items: Iterable[str]) -> dict[str, set[str]]:
    """``KEY=VALUE`` pairs: different keys must all match, repeated keys match any value."""
    filters: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in FILTER_KEYS:
            raise ConfigError(
                f"--filter: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)},"
                f" got {item!r}"
            )
        filters.setdefault(key, set()).add(value.strip())
    return filters


def matches(value: bytes | None, filters: dict[str, set[str]]) -> bool:
    if not filters:
        return True
    if value is None:
        return False
    try:
        routing = _decode_routing(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return all(getattr(routing, key) in wanted for key, wanted in filters.items())


def _actor_text(doc: OutputDocument) -> str:
    actor = doc.actor
    if actor is None:
        return "-"
    who = actor.name or actor.id or "?"
    return f"{who} ({actor.type})" if actor.type else who


def _resource_text(doc: OutputDocument) -> str:
    ref = doc.resource or doc.root_resource
    if ref is None:
        return "-"
    name = f'"{ref.name}"' if ref.name else ""
    parts = [p for p in (ref.type, name, ref.id) if p]
    return " ".join(parts) or "-"


def pretty_line(value: bytes | None, *, partition: int = 0, offset: int = 0) -> str:
    """One compact line for a person: time, source, event, actor, resource, [category],
    source IP."""
    try:
        doc = decode_document(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        size = len(value) if value is not None else 0
        return f"(partition {partition} offset {offset}: not an output document, {size} bytes)"
    return "  ".join(
        [
            doc.event_time,
            doc.source_name,
            f"{doc.event_name:<28}",
            _actor_text(doc),
            _resource_text(doc),
            f"[{doc.category or '-'}]",
            doc.src_ip or "-",
        ]
    )


def one_line_json(value: bytes) -> bytes:
    """The document on one line: byte for byte, except that line breaks become spaces.

    ``raw`` keeps the record as PagerDuty sent it, line breaks included when it was
    pretty-printed. In JSON a line break can only be whitespace between tokens (a string
    cannot hold one unescaped), so a space in its place is the same document.
    """
    return value.replace(b"\r\n", b" ").replace(b"\n", b" ").replace(b"\r", b" ")


class Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.printed = 0

    def __call__(self, message: Any) -> None:
        if self.as_json:
            sys.stdout.buffer.write(one_line_json(message.value or b"") + b"\n")
        else:
            sys.stdout.write(
                pretty_line(message.value, partition=message.partition, offset=message.offset)
                + "\n"
            )
        self.printed += 1

    def flush(self) -> None:
        sys.stdout.flush()


async def run_tail(
    cluster: Cluster,
    topic: str,
    *,
    follow: bool,
    filters: Sequence[str],
    from_beginning: bool,
    last: int | None,
    output_format: str,
) -> int:
    """Print ``topic``'s documents (without ``follow``: up to its end, then exit)."""
    wanted = parse_filters(filters)
    if from_beginning and last is not None:
        raise ConfigError("--from-beginning and --last exclude each other")
    if last is not None and last < 0:
        raise ConfigError(f"--last: must be 0 or more, got {last}")
    count = 10 if last is None else last
    as_json = output_format == "json" or (output_format == "auto" and not sys.stdout.isatty())
    printer = Printer(as_json)
    consumer = await cluster.reader()
    try:
        partitions = await _partitions(cluster, consumer, topic, wait=follow)
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            begin = await consumer.beginning_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(begin[tp], end[tp] - count))
        backlog: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    if not matches(message.value, wanted):
                        continue
                    if from_beginning:
                        printer(message)
                    else:
                        backlog.append(message)
            printer.flush()
            positions = [await consumer.position(tp) for tp in partitions]
            if all(
                pos >= end[tp] for pos, tp in zip(positions, partitions, strict=True)
            ) and not any(batch.values()):
                break
        backlog.sort(key=lambda m: (m.timestamp, m.partition, m.offset))
        for message in backlog[len(backlog) - count :] if count else []:
            printer(message)
        printer.flush()
        while follow:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    if matches(message.value, wanted):
                        printer(message)
            printer.flush()
    except KafkaError as exc:
        raise cluster.problem(exc) from None
    except BrokenPipeError:
        return 0
    finally:
        await consumer.stop()
    return 0


async def _partitions(cluster: Cluster, consumer: Any, topic: str, *, wait: bool) -> list[Any]:
    """The topic's partitions; with ``wait``, until the topic exists (a consumer's own
    metadata is not refreshed by listing topics, so the count comes from the admin API)."""
    while True:
        numbers = await cluster.partitions(topic)
        if numbers:
            return [TopicPartition(topic, p) for p in numbers]
        if not wait:
            raise CommandFailed(
                f"topic {topic!r} does not exist on the broker yet (no output so far)"
            )
        await asyncio.sleep(1.0)

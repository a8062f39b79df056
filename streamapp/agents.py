"""The stream agents: raw topic → dedupe → enrich/route → ``pagerduty_audit_logs``.

Thin faust shell around ``streamapp.pipeline.Processor``. Per batch (``take_events``):

1. check offsets: any range of a partition the stream skipped (a faust defect on start-up
   and rebalance, see ``streamapp.offsets``) is read directly from the broker and processed
   with the batch, so no record is lost to it;
2. decide and render (pure), dedupe against the ``seen`` table;
3. send every output, await the broker's acknowledgements (retrying until they come);
4. only then mark the batch's ids as seen. A crash between 3 and 4 repeats output (counted
   as duplicates downstream), never loses it.

``seen`` maps record id → ``<first seen epoch seconds>:<raw partition>``; it is partitioned
like the raw topic (same key, same partition) and swept of ids older than the retention.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from mode import Service

from streamapp import metrics
from streamapp.app import app, raw_topic, settings, writing_to
from streamapp.kafkaclient import client_options
from streamapp.offsets import Gap, OffsetTracker
from streamapp.pipeline import (
    BatchResult,
    Incoming,
    Outgoing,
    Processor,
    expired_ids,
    seen_value,
)

log = logging.getLogger("streamapp.agents")

BATCH_SIZE = 2000
BATCH_WITHIN = 0.25
#: first and largest pause between attempts to get a batch acknowledged
SEND_BACKOFF = (0.5, 10.0)


class PinnedPartitionTable(faust.Table):
    """A table whose writes name their partition instead of deriving it from the current
    event: a batch from ``take_events`` mixes partitions, and the sweeper has no event."""

    _pinned: int | None = None

    def partition_for_key(self, key: Any) -> int | None:
        if self._pinned is not None:
            return self._pinned
        return super().partition_for_key(key)

    def set_in(self, partition: int, key: bytes, value: bytes) -> None:
        self._pinned = partition
        try:
            with writing_to(partition):
                self[key] = value
        finally:
            self._pinned = None

    def delete_in(self, partition: int, key: bytes) -> None:
        self._pinned = partition
        try:
            with writing_to(partition):
                del self[key]
        finally:
            self._pinned = None


seen = PinnedPartitionTable(
    app,
    name="seen",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    beacon=app.tables.beacon,
)
app.tables.add(seen)

output_topics = [
    app.topic(name, partitions=settings.partitions, key_type=bytes, value_type=bytes)
    for name in [
        settings.topics.output,
        *([settings.topics.ocsf] if settings.ocsf else []),
        *settings.router.extra_topics,
    ]
]

processor = Processor(
    raw_topic=settings.topics.raw,
    output_topic=settings.topics.output,
    dlq_topic=settings.topics.dlq,
    router=settings.router,
    ocsf_topic=settings.topics.ocsf if settings.ocsf else None,
)
tracker = OffsetTracker()


def _is_seen(key: bytes, partition: int) -> bool:
    # stores that keep a database per partition look in the current event's partition
    with writing_to(partition):
        return seen.get(key) is not None


@app.on_partitions_assigned.connect  # type: ignore[arg-type]
async def _on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
    # the stream resumes from the committed offsets; expectations start there again
    tracker.reset()


async def _expect_from_committed(partition: int) -> None:
    tp = TP(settings.topics.raw, partition)
    # the next offset faust will deliver (private, but it is what the stream resumes from)
    committed = app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
    if committed is None:
        earliest = await app.consumer.earliest_offsets(tp)
        committed = earliest.get(tp)
    if committed is not None:
        tracker.expect(partition, committed)


async def _read_gap(gap: Gap) -> list[Incoming]:
    """Read ``gap`` of the raw topic directly, with a consumer outside the group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=_bootstrap(),
        **client_options(),
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.topics.raw, gap.partition)
        consumer.assign([tp])
        consumer.seek(tp, gap.start)
        found: list[Incoming] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for record in batch.get(tp, []):
                if record.offset >= gap.end:
                    return found
                found.append(Incoming(record.key, record.value, gap.partition, record.offset))
            if found and found[-1].offset >= gap.end - 1:
                return found
        log.error("gap %s: read %d of %d records before timing out", gap, len(found), gap.size)
        return found
    finally:
        await consumer.stop()


def _bootstrap() -> list[str]:
    hosts: list[str] = []
    for url in app.conf.broker:
        hosts.append(f"{url.host}:{url.port or 9092}")
    return hosts


def _ack_in_faust(items: Sequence[Incoming]) -> None:
    """Tell faust's consumer the gap's offsets are done, so its commits can move past them."""
    for item in items:
        message = faust.types.Message(
            settings.topics.raw,
            item.partition,
            item.offset,
            time.time(),
            0,
            None,
            item.key,
            item.value,
            None,
            tp=TP(settings.topics.raw, item.partition),
        )
        try:
            app.consumer.ack(message)
        except Exception:  # pragma: no cover - bookkeeping only; replays are deduplicated
            log.debug("could not ack gap offset %s:%s", item.partition, item.offset)


async def _send_all(messages: Sequence[Outgoing]) -> None:
    """Send and await every acknowledgement; on failure send the whole batch again."""
    delay, cap = SEND_BACKOFF
    while True:
        producer = app.producer
        try:
            futures: list[Awaitable[Any]] = [
                await producer.send(m.topic, m.key, m.value, None, None, m.headers)
                for m in messages
            ]
            await asyncio.gather(*futures)
            return
        except Exception as exc:
            log.warning(
                "output not acknowledged (%s: %s); sending the batch of %d again in %.1fs",
                type(exc).__name__,
                exc,
                len(messages),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)


def _count(result: BatchResult) -> None:
    for source, n in result.emitted.items():
        metrics.RECORDS_EMITTED.labels(source).inc(n)
    for source, n in result.duplicates.items():
        metrics.RECORDS_DEDUPLICATED.labels(source).inc(n)
    for source, n in result.dead.items():
        metrics.RECORDS_DEAD_LETTERED.labels(source, "pipeline").inc(n)


async def process_batch(batch: list[Incoming]) -> BatchResult:
    gaps: list[Gap] = []
    for item in batch:
        if tracker.expected(item.partition) is None:
            await _expect_from_committed(item.partition)
        gap = tracker.observe(item.partition, item.offset)
        if gap is not None:
            gaps.append(gap)
    recovered: list[Incoming] = []
    for gap in gaps:
        log.warning(
            "raw partition %d: the stream skipped offsets %d..%d; reading them directly",
            gap.partition,
            gap.start,
            gap.end - 1,
        )
        recovered.extend(await _read_gap(gap))
    if recovered:
        metrics.GAP_RECORDS.inc(len(recovered))
    result = processor.process(recovered + batch, _is_seen)
    await _send_all(result.messages)
    for key, partition in result.fresh:
        seen.set_in(partition, key, seen_value(time.time(), partition))
    _ack_in_faust(recovered)
    _count(result)
    return result


@app.agent(raw_topic)
async def pipeline(stream: faust.StreamT) -> None:
    async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):  # type: ignore[attr-defined]
        batch = [
            Incoming(e.message.key, e.message.value, e.message.partition, e.message.offset)
            for e in events
        ]
        await process_batch(batch)


@app.service
class SeenSweeper(Service):
    """Forgets ids older than the dedupe retention, so state does not grow for ever."""

    async def on_start(self) -> None:
        for topic in output_topics:
            await topic.maybe_declare()

    @Service.task
    async def _sweep_loop(self) -> None:
        retention = settings.dedupe_retention.total_seconds()
        interval = min(3600.0, max(10.0, retention / 100))
        while not self.should_stop:
            await self.sleep(interval)
            if not self.should_stop:
                await sweep_seen(retention)


async def sweep_seen(retention: float, now: float | None = None) -> int:
    actives = {
        tp.partition for tp in app.assignor.assigned_actives() if tp.topic == settings.topics.raw
    }
    expired = expired_ids(
        list(seen.items()), active_partitions=actives, cutoff=(now or time.time()) - retention
    )
    for key, partition in expired:
        if partition < 0:
            partition = _raw_partition_of(key)
        seen.delete_in(partition, key)
    if expired:
        log.info("dedupe: forgot %d ids older than the retention", len(expired))
    return len(expired)


def _raw_partition_of(key: bytes) -> int:
    from aiokafka.partitioner import DefaultPartitioner

    return int(DefaultPartitioner()(key, list(range(settings.partitions)), []))

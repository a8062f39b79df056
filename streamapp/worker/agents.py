"""The stream agents: raw topic → dedupe → enrich/route → ``pagerduty_audit_logs``.

Thin faust shell around ``streamapp.core.pipeline.Processor``. Per batch (``take_events``):

1. check offsets: any range of a partition the stream skipped (a faust defect on start-up
   and rebalance, see ``streamapp.core.offsets``) is read directly from the broker and processed
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
import os
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from mode import Service

from streamapp.core.offsets import Gap, OffsetTracker
from streamapp.core.pipeline import (
    BatchResult,
    Incoming,
    Outgoing,
    Processor,
    expired_ids,
    seen_value,
)
from streamapp.kafka.clients import client_options
from streamapp.worker import metrics
from streamapp.worker.app import app, ensure_output_topics, raw_topic, settings, writing_to

log = logging.getLogger("streamapp.worker.agents")

BATCH_SIZE = 5000
BATCH_WITHIN = 0.25
#: first and largest pause between attempts to get a batch acknowledged
SEND_BACKOFF = (0.5, 10.0)
#: how long a batch's acknowledgements may take before the batch is sent again
ACK_TIMEOUT = 120.0


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

    async def put_many(self, entries: Sequence[tuple[bytes, int, bytes]]) -> None:
        """Set many (key, partition, value) at once: the changelog writes go straight to the
        producer's batches instead of faust's one-at-a-time buffer (the pipeline's hot path),
        and are awaited, so that after a crash a replayed batch finds its ids seen.
        A write that fails only means an id may be emitted once more."""
        topic = self.changelog_topic.get_topic_name()
        producer = app.producer
        futures = []
        for key, partition, value in entries:
            futures.append(await producer.send(topic, key, value, partition, None, None))
            with writing_to(partition):
                self.data[key] = value
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = sum(isinstance(r, BaseException) for r in results)
        if failed:
            log.warning(
                "dedupe: %d of %d seen ids not written to the changelog", failed, len(results)
            )

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


class SideReader:
    """A consumer outside the group that reads chosen offsets of the raw topic directly."""

    def __init__(self) -> None:
        self._consumer: AIOKafkaConsumer | None = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=_bootstrap(),
                **client_options(),
                enable_auto_commit=False,
                group_id=None,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(self, partition: int, start: int, end: int | None) -> list[Incoming]:
        """Offsets ``start`` up to ``end`` (exclusive), or to the partition's end if None."""
        consumer = await self._started()
        tp = TopicPartition(settings.topics.raw, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        found: list[Incoming] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=300, max_records=5000)
            records = batch.get(tp, [])
            if not records and end is None:
                return found  # nothing more on the partition
            for record in records:
                if end is not None and record.offset >= end:
                    return found
                found.append(Incoming(record.key, record.value, partition, record.offset))
            if end is not None and found and found[-1].offset >= end - 1:
                return found
            if end is None and len(found) >= 5000:
                return found
        log.error(
            "raw partition %d: read %d records from %d before timing out",
            partition,
            len(found),
            start,
        )
        return found

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


side_reader = SideReader()
#: one batch at a time, whether from the stream or from a direct read
_processing = asyncio.Lock()
#: -1 → monotonic time the stream last delivered a batch
_last_delivery: dict[int, float] = {}
#: once the stream has been idle this long, partitions are checked for records it skipped
QUIET = 3.0
#: ... and read even when the broker says nothing is left, this often
RECHECK = 30.0
#: raw partition → monotonic time of its last direct read
_last_probe: dict[int, float] = {}


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
            await ensure_output_topics()
            futures: list[Awaitable[Any]] = [
                await producer.send(m.topic, m.key, m.value, None, None, m.headers)
                for m in messages
            ]
            # bounded: a write that can never complete is retried instead of hanging
            await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT)
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
    async with _processing:
        _last_delivery[-1] = time.monotonic()
        return await _process(batch)


async def _process(batch: list[Incoming], *, read_directly: bool = False) -> BatchResult:
    """Process a batch (the stream's, or records read directly when ``read_directly``)."""
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
        recovered.extend(await side_reader.read(gap.partition, gap.start, gap.end))
    if read_directly:
        recovered, batch = recovered + batch, []
    if recovered:
        metrics.GAP_RECORDS.inc(len(recovered))
    result = processor.process(recovered + batch, _is_seen)
    await _send_all(result.messages)
    now = time.time()
    await seen.put_many([(key, p, seen_value(now, p)) for key, p in result.fresh])
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
        try:
            await process_batch(batch)
        except BaseException as exc:
            # take_events acks the batch's events however the loop body ends, and faust
            # would then commit them: a batch whose outputs were not all acknowledged must
            # not be committed, so the process leaves without committing anything
            _exit_without_commit(batch, exc)
            raise


def _exit_without_commit(batch: Sequence[Incoming], exc: BaseException) -> None:
    log.critical(
        "stopping in the middle of a batch of %d raw records (%s): exiting without committing "
        "its offsets, so the next worker processes it again",
        len(batch),
        type(exc).__name__,
    )
    logging.shutdown()
    os._exit(70)


async def probe_quiet_partitions() -> int:
    """Read, directly, what the stream has not delivered on partitions it left quiet.

    A gap between two delivered offsets is caught in ``_process``; records skipped at the
    end of a partition have no later offset to reveal them. A partition is read when the
    stream has been quiet on it for ``QUIET`` seconds and either the broker reports more
    than was processed or it was not read for ``RECHECK`` seconds (some brokers report a
    stale high watermark). Repeats of what the stream delivers later are dropped by dedupe.
    """
    now = time.monotonic()
    if app.rebalancing or app.in_recovery or now - _last_delivery.get(-1, 0.0) < QUIET:
        return 0  # the stream is busy: what it has not reached yet is not skipped
    found = 0
    for tp in list(app.consumer.assignment()):
        partition = tp.partition
        if tp.topic != settings.topics.raw:
            continue
        if tracker.expected(partition) is None:
            await _expect_from_committed(partition)
        start = tracker.expected(partition)
        if start is None:
            continue
        highwater = app.consumer.highwater(tp)
        behind = highwater is None or highwater > start
        if not behind and now - _last_probe.get(partition, 0.0) < RECHECK:
            continue
        _last_probe[partition] = now
        records = await side_reader.read(partition, start, None)
        async with _processing:
            expected = tracker.expected(partition) or start
            records = [r for r in records if r.offset >= expected]  # not delivered meanwhile
            if not records:
                continue
            log.warning(
                "raw partition %d: the stream has not delivered offsets %d..%d; "
                "reading them directly",
                partition,
                records[0].offset,
                records[-1].offset,
            )
            await _process(records, read_directly=True)
            found += len(records)
    return found


@app.service
class QuietPartitionProbe(Service):
    """Every few seconds, checks partitions the stream left quiet (see above)."""

    async def on_stop(self) -> None:
        await side_reader.close()

    @Service.task
    async def _probe_loop(self) -> None:
        while not self.should_stop:
            await self.sleep(QUIET)
            try:
                await probe_quiet_partitions()
            except Exception as exc:  # the next round tries again
                log.warning("quiet-partition probe failed: %s: %s", type(exc).__name__, exc)


@app.service
class SeenSweeper(Service):
    """Forgets ids older than the dedupe retention, so state does not grow for ever."""

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

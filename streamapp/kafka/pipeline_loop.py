"""The pipeline: raw topic → dedupe, enrich, route → outputs, in batches, nothing lost.

A consumer group of its own (``<app_id>-pipeline``) shares the raw topic's partitions among
the workers. Per batch:

1. decide and render (``streamapp.core.pipeline.Processor``, pure), dedupe against the ids
   this worker holds for the batch's partitions;
2. write every output and dead letter and wait for the broker's acknowledgements; a message
   the broker will never take (too large) is replaced by a bounded dead letter, anything
   else is retried with backoff until it is acknowledged (the wait shows in ``stalled_for``
   and on ``/health``, and stopping the worker interrupts it);
3. only then remember the batch's ids as seen (awaited changelog writes);
4. only then commit the batch's offsets.

A crash anywhere repeats work (duplicates are dropped by id), never loses it: nothing is
committed before its outputs were acknowledged. Being stopped mid-batch commits nothing.
When partitions move to another worker, the batch in hand is finished first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from streamapp.core.models import Outgoing
from streamapp.core.pipeline import BatchResult, Incoming, Processor
from streamapp.kafka.publisher import SKIP, Publisher, Skip
from streamapp.kafka.seen import SeenStore

log = logging.getLogger("streamapp.pipeline")

#: first and largest pause between attempts to get a batch's outputs acknowledged
BACKOFF = (0.5, 10.0)
#: longest wait for the consumer to leave its group on shutdown
STOP_TIMEOUT = 10.0


@dataclass
class LoopState:
    """What /health and /metrics read of the loop."""

    #: monotonic time since which a batch's outputs wait for acknowledgement (None: none)
    unacknowledged_since: float | None = None
    last_error: str | None = None
    batches: int = 0
    records: int = 0
    assigned: set[int] = field(default_factory=set)

    def stalled_for(self, now: float | None = None) -> float:
        if self.unacknowledged_since is None:
            return 0.0
        return (now if now is not None else time.monotonic()) - self.unacknowledged_since


class PipelineLoop:
    def __init__(
        self,
        consumer: Callable[[], AIOKafkaConsumer],
        *,
        raw_topic: str,
        publisher: Publisher,
        seen: SeenStore,
        processor: Processor,
        batch_size: int = 5000,
        on_batch: Callable[[BatchResult], None] | None = None,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        #: builds the group consumer (aiokafka clients need the running loop)
        self._new_consumer = consumer
        self._consumer: AIOKafkaConsumer | None = None
        self.raw_topic = raw_topic
        self.publisher = publisher
        self.seen = seen
        self.processor = processor
        self.batch_size = batch_size
        self.state = LoopState()
        self._on_batch = on_batch
        self._backoff = backoff
        #: one batch at a time; a rebalance waits for the batch in hand
        self._lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the pipeline loop is not started")
        return self._consumer

    async def start(self) -> None:
        consumer = self._consumer = self._new_consumer()
        consumer.subscribe([self.raw_topic], listener=_Rebalance(self))
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            await consumer.stop()
            raise self.publisher.cluster.problem(exc) from None

    async def stop(self) -> None:
        """Leave the group (bounded: a broker that is gone must not hold up a shutdown)."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT)
        except (TimeoutError, KafkaError) as exc:
            log.warning("pipeline consumer did not stop cleanly: %s", exc)
        self.seen.close()

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.batch_size)
            if not batch:
                continue
            async with self._lock:
                await self.handle(batch)

    # --- one batch ------------------------------------------------------------------------

    async def handle(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> BatchResult:
        incoming = [
            Incoming(record.key, record.value, tp.partition, record.offset)
            for tp, records in batch.items()
            for record in records
        ]
        # the ids of a partition must be known before its first batch: a fetch can deliver
        # records while the assignment's own restore is still running
        await self.seen.assign(tp.partition for tp in batch)
        result = self.processor.process(incoming, self.seen.contains)
        await self._deliver(result, incoming)
        await self._remember(result)
        await self._commit(batch)
        self.state.batches += 1
        self.state.records += len(incoming)
        if self._on_batch is not None:
            self._on_batch(result)
        return result

    async def _deliver(self, result: BatchResult, incoming: Sequence[Incoming]) -> None:
        """Every message acknowledged or replaced by a dead letter; retried until then."""
        messages: list[Outgoing] = result.messages
        indexes = list(range(len(messages)))
        replaced: set[int] = set()  # raw messages already dead-lettered for a refused output

        def substitute(position: int, reason: str) -> Outgoing | Skip:
            origin = result.origin[indexes[position]]
            if origin in replaced:
                return SKIP  # its raw message is already dead-lettered
            replaced.add(origin)
            return self.processor.dead_letter_for(
                incoming[origin], f"the broker refused its output: {reason}"
            )

        delay, cap = self._backoff
        while True:
            delivery = await self.publisher.deliver(
                [messages[i] for i in indexes], substitute=substitute
            )
            if delivery.ok:
                self.state.unacknowledged_since = None
                self.state.last_error = None
                return
            first = next(iter(delivery.failed.values()))
            what = f"{len(delivery.failed)} of {len(messages)} outputs not acknowledged"
            self._stalled(what, first)
            indexes = [indexes[p] for p in sorted(delivery.failed)]
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)

    async def _remember(self, result: BatchResult) -> None:
        delay, cap = self._backoff
        while True:
            try:
                await self.seen.add(result.fresh)
                return
            except Exception as exc:  # retried: the outputs are out, the ids must follow
                self._stalled("seen ids not written to the changelog", exc)
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)

    def _stalled(self, what: str, exc: BaseException) -> None:
        if self.state.unacknowledged_since is None:
            self.state.unacknowledged_since = time.monotonic()
        self.state.last_error = f"{what}: {type(exc).__name__}: {exc}"[:300]
        log.warning(
            "pipeline: %s (%s: %s); trying again (waiting %.0fs so far)",
            what,
            type(exc).__name__,
            exc,
            self.state.stalled_for(),
        )

    async def _commit(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "")
            for tp, records in batch.items()
            if records
        }
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # the partitions moved on: their new owner repeats the batch, and drops repeats
            log.warning("pipeline: offsets not committed (%s); the batch will be repeated", exc)

    # --- rebalances -----------------------------------------------------------------------

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:  # the batch in hand is finished (and committed) first
            numbers = {tp.partition for tp in partitions if tp.topic == self.raw_topic}
            self.seen.revoke(numbers)
            self.state.assigned -= numbers

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions if tp.topic == self.raw_topic}
        await self.seen.assign(numbers)
        self.state.assigned |= numbers

    async def sweep(self, retention: float) -> int:
        """Forget ids older than the retention (between batches)."""
        async with self._lock:
            return await self.seen.expire(retention)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: PipelineLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.loop.assigned(set(assigned))

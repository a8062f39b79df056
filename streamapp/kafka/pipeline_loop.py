"""A topic in, batches out, nothing lost: the loop under the pipeline and the detections.

A consumer group of its own shares the input topic's partitions among the workers, and
state kept per input partition (a :class:`~streamapp.kafka.seen.PartitionedStore`) follows
them. Per batch:

1. take over the state of any partition the batch comes from, then decide what to write
   (the :class:`BatchWork`: pure, in the callers);
2. write every message and wait for the broker's acknowledgements; a message the broker
   will never take (too large) is replaced by a bounded dead letter, anything else is
   retried with backoff until it is acknowledged (the wait shows in ``state`` and on
   ``/health``; stopping the worker interrupts it);
3. only then store the batch's state (awaited changelog writes);
4. only then commit the batch's offsets.

A crash anywhere repeats work (repeats are dropped by key), never loses it: nothing is
committed before its outputs were acknowledged, and being stopped mid-batch commits
nothing. When partitions move to another worker, the batch in hand is finished first.

This replaces a faust agent whose stream skipped ranges of offsets on start-up and
rebalance (faust-streaming issues #216, #221, #312, #606): aiokafka's consumer delivers
every offset, and committing is ours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from streamapp.core.models import Outgoing
from streamapp.core.pipeline import Incoming
from streamapp.kafka.publisher import SKIP, Publisher, Skip
from streamapp.kafka.seen import PartitionedStore

log = logging.getLogger("streamapp.pipeline")

#: first and largest pause between attempts to get a batch's outputs acknowledged
BACKOFF = (0.5, 10.0)
#: longest wait for the consumer to leave its group on shutdown
STOP_TIMEOUT = 10.0


class Planned(Protocol):
    """What a batch's work decided: the messages, and where each came from."""

    @property
    def messages(self) -> list[Outgoing]: ...
    @property
    def origin(self) -> list[int]: ...


P = TypeVar("P", bound=Planned)


class BatchWork(Protocol[P]):
    """The decisions of one loop; the loop does the writing, waiting and committing."""

    store: PartitionedStore

    def plan(self, batch: Sequence[Incoming]) -> P: ...
    def dead_letter_for(self, message: Incoming, reason: str) -> Outgoing: ...
    async def remember(self, planned: P) -> None: ...
    def done(self, planned: P) -> None: ...


@dataclass
class LoopState:
    """What /health and /metrics read of a loop."""

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


class Loops:
    """Several loops seen as one for health: stalled as long as the most stalled one."""

    def __init__(self, states: Sequence[LoopState]) -> None:
        self.states = list(states)

    def stalled_for(self, now: float | None = None) -> float:
        return max((state.stalled_for(now) for state in self.states), default=0.0)

    @property
    def last_error(self) -> str | None:
        waiting = [s for s in self.states if s.unacknowledged_since is not None]
        return (
            min(waiting, key=lambda s: s.unacknowledged_since or 0.0).last_error
            if waiting
            else None
        )


class ConsumerLoop(Generic[P]):
    def __init__(
        self,
        consumer: Callable[[], AIOKafkaConsumer],
        *,
        topic: str,
        publisher: Publisher,
        work: BatchWork[P],
        batch_size: int = 5000,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        #: builds the group consumer (aiokafka clients need the running loop)
        self._new_consumer = consumer
        self._consumer: AIOKafkaConsumer | None = None
        self.topic = topic
        self.publisher = publisher
        self.work = work
        self.batch_size = batch_size
        self.state = LoopState()
        self._backoff = backoff
        #: one batch started at a time; a rebalance waits for the batches in hand
        self._lock = asyncio.Lock()
        #: the last batch started and not yet committed (it awaits the one before it)
        self._inflight: asyncio.Future[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the loop is not started")
        return self._consumer

    async def start(self) -> None:
        consumer = self._consumer = self._new_consumer()
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        await self.publisher.cluster.start_client(consumer.start, consumer.stop)

    async def stop(self) -> None:
        """Leave the group (bounded: a broker that is gone must not hold up a shutdown)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT)
            except (TimeoutError, KafkaError) as exc:
                log.warning("consumer of %s did not stop cleanly: %s", self.topic, exc)
        self.work.store.close()

    async def run(self) -> None:
        """Process batches until cancelled.

        Two batches overlap: while the broker acknowledges one batch, the next is fetched and
        decided (its work sees the first one's keys as seen). State writes and commits stay
        in order: a batch writes its state and commits only after the one before it did, so
        a crash never skips an unacknowledged batch and a key never ends with an older state.
        """
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=500, max_records=self.batch_size)
                if batch:
                    async with self._lock:
                        await self._start(batch)
        finally:
            if self._inflight is not None:
                self._inflight.cancel()  # stopped mid-batch: nothing more is committed

    async def handle(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> P:
        """One batch, start to commit (tests, and the loop's own steps)."""
        async with self._lock:
            planned = await self._start(batch)
            await self._drain()
            return planned

    async def _start(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> P:
        incoming = [
            Incoming(record.key, record.value, tp.partition, record.offset)
            for tp, records in batch.items()
            for record in records
        ]
        # a partition's state must be in hand before its first batch: a fetch can deliver
        # records while the assignment's own restore is still running
        await self.work.store.assign(tp.partition for tp in batch)
        planned = self.work.plan(incoming)
        previous, self._inflight = (
            self._inflight,
            asyncio.ensure_future(self._finish(planned, incoming, batch, self._inflight)),
        )
        if previous is not None:
            await previous  # at most two batches in flight
        return planned

    async def _drain(self) -> None:
        if self._inflight is not None:
            await self._inflight
            self._inflight = None

    async def _finish(
        self,
        planned: P,
        incoming: Sequence[Incoming],
        batch: Mapping[TopicPartition, Sequence[Any]],
        previous: asyncio.Future[None] | None,
    ) -> None:
        await self._deliver(planned, incoming)
        # state in batch order: were this batch's state written while the one before was
        # still writing its own, a key both touch could end with the older value (in the
        # changelog, too, when this batch's partitions answered first)
        if previous is not None:
            await previous
        await self._remember(planned)
        await self._commit(batch)
        self.state.batches += 1
        self.state.records += len(incoming)
        self.work.done(planned)

    async def _deliver(self, planned: P, incoming: Sequence[Incoming]) -> None:
        """Every message acknowledged or replaced by a dead letter; retried until then."""
        messages = planned.messages
        indexes = list(range(len(messages)))
        replaced: set[int] = set()  # inputs already dead-lettered for a refused output

        def substitute(position: int, reason: str) -> Outgoing | Skip:
            origin = planned.origin[indexes[position]]
            if origin in replaced:
                return SKIP  # its input is already dead-lettered
            replaced.add(origin)
            return self.work.dead_letter_for(
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

    async def _remember(self, planned: P) -> None:
        delay, cap = self._backoff
        while True:
            try:
                await self.work.remember(planned)
                return
            except Exception as exc:  # retried: the outputs are out, the state must follow
                self._stalled("state not written to its changelog", exc)
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)

    def _stalled(self, what: str, exc: BaseException) -> None:
        if self.state.unacknowledged_since is None:
            self.state.unacknowledged_since = time.monotonic()
        self.state.last_error = f"{what}: {type(exc).__name__}: {exc}"[:300]
        log.warning(
            "%s: %s (%s: %s); trying again (waiting %.0fs so far)",
            self.topic,
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
            log.warning(
                "%s: offsets not committed (%s); the batch will be repeated", self.topic, exc
            )

    # --- rebalances -----------------------------------------------------------------------

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:  # the batches in hand are finished (and committed) first
            await self._drain()
            numbers = {tp.partition for tp in partitions if tp.topic == self.topic}
            self.work.store.revoke(numbers)
            self.state.assigned -= numbers

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions if tp.topic == self.topic}
        await self.work.store.assign(numbers)
        self.state.assigned |= numbers

    async def between_batches(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` (a coroutine function) while no batch is in hand."""
        async with self._lock:
            await self._drain()
            return await action()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop[Any]) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.loop.assigned(set(assigned))

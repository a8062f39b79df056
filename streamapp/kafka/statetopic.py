"""A small key → value table kept in a one-partition compacted topic, on every worker.

Used for what must survive any worker: the sources' progress (checkpoints, done backfill
windows) and their health. Like Kafka Connect's offsets topic: the writer waits for the
broker's acknowledgement before it counts a value as stored, and any worker can rebuild
the table by reading the topic from the start. Every worker follows the topic, so a worker
that becomes the one that polls already holds (or, with ``caught_up``, waits for) the
newest value of every key.

A value this worker wrote itself is never replaced by an older one the follower reads
afterwards (the follower compares offsets), so the table never moves backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamapp.core.errors import PublishError
from streamapp.core.models import Outgoing
from streamapp.kafka.publisher import Publisher

log = logging.getLogger("streamapp.state")

#: topic settings of a state topic: one partition, compacted (the newest value per key)
TOPIC_CONFIG = {"cleanup.policy": "compact"}


class StateTopic:
    """A replicated dict of bytes, durable in ``topic`` (one partition, compacted)."""

    def __init__(
        self,
        topic: str,
        *,
        publisher: Publisher,
        idle_ms: int = 200,
    ) -> None:
        self.topic = topic
        self._publisher = publisher
        self._idle_ms = idle_ms
        self._data: dict[bytes, bytes] = {}
        #: key → offset of the newest value written or read for it
        self._offsets: dict[bytes, int] = {}
        self._position = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._empty_reads = 0

    # --- reading --------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    # --- writing --------------------------------------------------------------------------

    async def put(self, key: bytes, value: bytes | None) -> None:
        """Store ``value`` (None deletes) once the broker acknowledged it; PublishError if not."""
        try:
            metadata = await self._publisher.send_one(
                Outgoing(self.topic, key, value or b"", None), partition=0, tombstone=value is None
            )
        except (KafkaError, TimeoutError, OSError) as exc:
            raise PublishError(
                f"the broker did not acknowledge a write to {self.topic!r}: {type(exc).__name__}"
            ) from None
        self._apply(key, value, getattr(metadata, "offset", -1))

    def _apply(self, key: bytes, value: bytes | None, offset: int) -> None:
        if offset >= 0 and offset < self._offsets.get(key, -1):
            return  # an older value than one this worker already holds
        self._offsets[key] = offset
        if value is None or value == b"":
            self._data.pop(key, None)
        else:
            self._data[key] = value

    # --- following ------------------------------------------------------------------------

    async def start(self) -> None:
        consumer = await self._publisher.cluster.reader()
        self._consumer = consumer
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        self._task = asyncio.create_task(self._follow(tp), name=f"follow:{self.topic}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)

    async def _follow(self, tp: TopicPartition) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            try:
                batch = await consumer.getmany(tp, timeout_ms=self._idle_ms, max_records=10000)
            except KafkaError as exc:
                log.warning("reading %s failed (%s); trying again", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            records = batch.get(tp, [])
            for record in records:
                if record.key is not None:
                    self._apply(record.key, record.value, record.offset)
                self._position = record.offset + 1
            async with self._progress:
                self._empty_reads = 0 if records else self._empty_reads + 1
                self._progress.notify_all()

    async def caught_up(self, within: float = 30.0) -> bool:
        """Wait until everything written before this call has been read; False on timeout.

        The end offset is asked for once, then the follower must pass it and come back
        empty once more: some brokers report an end offset that leaves out the rest of the
        newest batch, and the extra empty read covers that.
        """
        consumer = self._consumer
        if consumer is None:
            return False
        tp = TopicPartition(self.topic, 0)
        try:
            end = (await asyncio.wait_for(consumer.end_offsets([tp]), within))[tp]
        except (KafkaError, TimeoutError) as exc:
            log.warning("could not ask %s for its end (%s)", self.topic, exc)
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with self._progress:
            self._empty_reads = 0
            while not (self._position >= end and self._empty_reads >= 1):
                left = deadline - loop.time()
                if left <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), left)
        return True

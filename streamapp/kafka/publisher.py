"""The worker's one producer: every message the app writes goes through ``Publisher``.

``deliver`` hands a batch to the broker and returns once each message is acknowledged or
has failed for good. One bad message never holds up the rest:

- a message larger than the broker takes (the topic's ``max.message.bytes`` where the broker
  reports it, else the producer's own ``max_request_size``) is never sent: the caller's
  ``substitute`` gives what to write instead (a dead letter, bounded);
- the broker refusing a batch for its size or shape fails every message sharing that
  batch; those are sent again one at a time, and the ones still refused are substituted;
- anything else (broker down, timeouts) is reported back as failed, for the caller to
  retry or give up on: the publisher itself never retries forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner

from streamapp.core.models import Outgoing
from streamapp.kafka.clients import Cluster

log = logging.getLogger("streamapp.publisher")

#: errors that say "this message (or its batch) will never be accepted as it is"
PERMANENT = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordException)
#: bytes a record adds to its key, value and headers inside a record batch (a generous
#: bound: the batch header is 61 bytes, a record's own framing at most ~25 more)
RECORD_OVERHEAD = 128
DEFAULT_MAX_REQUEST_SIZE = 4 * 1024 * 1024
#: keys whose partition is remembered, at most (the memory is cleared past it)
PARTITION_CACHE = 100_000


T = TypeVar("T")
Headers = list[tuple[str, bytes]] | None


def _record(item: tuple[int, Outgoing]) -> tuple[bytes | None, bytes | None, Headers]:
    message = item[1]
    return message.key, message.value, message.headers


class Skip:
    """A substitute's answer: nothing needs writing instead (another message covers it)."""


SKIP = Skip()
#: given a message's index in the batch and why it cannot be written, what to write instead:
#: a message, SKIP, or None when there is no substitute (the message then fails)
Substitute = Callable[[int, str], "Outgoing | Skip | None"]


def encoded_size(message: Outgoing) -> int:
    """An upper bound of the bytes the message takes in a record batch."""
    size = len(message.value) + len(message.key or b"") + RECORD_OVERHEAD
    for name, value in message.headers or ():
        size += len(name) + len(value) + 8
    return size


@dataclass
class Delivery:
    """What became of each message of a batch (by index)."""

    #: index → why it was replaced (its substitute was acknowledged)
    substituted: dict[int, str] = field(default_factory=dict)
    #: index → the error it failed with (transient: the caller may try again)
    failed: dict[int, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(eq=False, repr=False)
class Publisher:
    """An aiokafka producer (acks from all in-sync replicas) with size-aware delivery."""

    cluster: Cluster
    _: KW_ONLY
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    linger_ms: int = 5
    max_batch_size: int = 1024 * 1024
    ack_timeout: float = 120.0
    stop_timeout: float = 10.0
    _producer: AIOKafkaProducer | None = field(default=None, init=False)
    _partitioner: DefaultPartitioner = field(default_factory=DefaultPartitioner, init=False)
    #: (key, partition count) → partition, as the partitioner chose it
    _partition_of: dict[tuple[bytes, int], int] = field(default_factory=dict, init=False)
    #: topic → the largest message the broker said it takes
    _topic_limits: dict[str, int] = field(default_factory=dict, init=False)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.cluster.bootstrap,
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=self.max_batch_size,
            max_request_size=self.max_request_size,
            **self.cluster.options,
        )
        await self.cluster.start_client(producer.start, producer.stop)
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is pending, but never for longer than ``stop_timeout``."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), self.stop_timeout)
        except (TimeoutError, KafkaError) as exc:
            log.warning("producer did not flush within %.0fs: %s", self.stop_timeout, exc)

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the publisher is not started")
        return self._producer

    # --- limits ---------------------------------------------------------------------------

    def set_topic_limit(self, topic: str, max_bytes: int | None) -> None:
        """What the broker reported as the topic's largest message (None: not reported)."""
        if max_bytes is None:
            self._topic_limits.pop(topic, None)
        else:
            self._topic_limits[topic] = max_bytes

    def limit(self, topic: str) -> int:
        """The largest message (key, value, headers and framing) written to ``topic``."""
        reported = self._topic_limits.get(topic)
        return min(self.max_request_size, reported) if reported else self.max_request_size

    def fits(self, message: Outgoing) -> bool:
        return encoded_size(message) <= self.limit(message.topic)

    def room(self, topic: str) -> int:
        """Bytes of value a message to ``topic`` may carry beside a small key and headers."""
        return self.limit(topic) - RECORD_OVERHEAD - 1024

    # --- sending --------------------------------------------------------------------------

    async def send_one(
        self, message: Outgoing, *, partition: int | None = None, tombstone: bool = False
    ) -> Any:
        """Write one message and wait for its acknowledgement (its RecordMetadata).

        ``tombstone``: write a null value (a compacted topic then forgets the key).
        """
        future = await self.producer.send(
            message.topic,
            None if tombstone else message.value,
            key=message.key,
            partition=partition,
            headers=message.headers,
        )
        return await asyncio.wait_for(future, self.ack_timeout)

    async def deliver(
        self, messages: Sequence[Outgoing], *, substitute: Substitute | None = None
    ) -> Delivery:
        """Write ``messages``; return once each is acknowledged, substituted or failed."""
        delivery = Delivery()
        outcome = await self._send_and_wait(list(enumerate(messages)), delivery, substitute)
        refused = [i for i, exc in outcome.items() if isinstance(exc, PERMANENT)]
        for index in refused:  # alone in a batch of its own, each once more
            del outcome[index]
            one = await self._send_and_wait([(index, messages[index])], delivery, substitute)
            error = one.get(index)
            if isinstance(error, PERMANENT):
                reason = f"the broker refused it ({type(error).__name__})"
                await self._substitute(index, reason, delivery, substitute, error)
            elif error is not None:
                delivery.failed[index] = error
        delivery.failed.update(outcome)
        return delivery

    async def _send_and_wait(
        self,
        batch: list[tuple[int, Outgoing]],
        delivery: Delivery,
        substitute: Substitute | None,
    ) -> dict[int, BaseException]:
        """Send every message of ``batch`` that fits, await them all; index → error.

        Messages go to the broker as whole record batches, one per topic partition (and
        more when one fills), through aiokafka's public ``create_batch``/``send_batch``:
        ``send`` per message paid a future, a metadata check and an accumulator append
        each, a fifth of the pipeline's CPU. Partitions are chosen as ``send`` chooses them
        (aiokafka's ``DefaultPartitioner``: murmur2 of the key, like the Java client)."""
        errors: dict[int, BaseException] = {}
        refused: list[tuple[int, Outgoing]] = []
        sends: list[tuple[asyncio.Future[Any], list[int]]] = []
        try:
            # one deadline for handing the batch over (a hand-over waits only for metadata
            # or for the partition's previous batch to be on its way)
            async with asyncio.timeout(self.ack_timeout):
                groups = await self._by_partition(batch, refused, errors)
                for (topic, partition), group in groups.items():
                    try:
                        batches = await self.send_batches(topic, partition, group, _record)
                        sends.extend((f, [i for i, _ in held]) for f, held in batches)
                    except KafkaError as exc:
                        handed = {i for _, indices in sends for i in indices}
                        errors.update({i: exc for i, _ in group if i not in handed})
        except TimeoutError as exc:
            handed = {i for _, indices in sends for i in indices} | set(errors)
            handed |= {i for i, _ in refused}
            for index, _ in batch:
                if index not in handed:
                    errors[index] = exc
        for index, message in refused:
            reason = (
                f"{encoded_size(message):,} bytes is more than the"
                f" {self.limit(message.topic):,} bytes topic {message.topic!r} takes"
            )
            await self._substitute(index, reason, delivery, substitute, None)
        if sends:
            _, pending = await asyncio.wait([f for f, _ in sends], timeout=self.ack_timeout)
            for future, indices in sends:
                if future in pending:
                    future.cancel()
                    late = TimeoutError(f"no acknowledgement within {self.ack_timeout:g}s")
                    errors.update({i: late for i in indices})
                elif (error := future.exception()) is not None:
                    errors.update({i: error for i in indices})
        return errors

    async def _by_partition(
        self,
        batch: list[tuple[int, Outgoing]],
        refused: list[tuple[int, Outgoing]],
        errors: dict[int, BaseException],
    ) -> dict[tuple[str, int], list[tuple[int, Outgoing]]]:
        """The messages that fit, by (topic, partition); the others into ``refused``."""
        groups: dict[tuple[str, int], list[tuple[int, Outgoing]]] = {}
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        limits: dict[str, int] = {}
        for index, message in batch:
            topic = message.topic
            limit = limits.get(topic) or limits.setdefault(topic, self.limit(topic))
            if encoded_size(message) > limit:
                refused.append((index, message))
                continue
            if topic not in partitions:
                try:
                    every = sorted(await self.producer.partitions_for(topic))
                except KafkaError as exc:
                    errors[index] = exc
                    continue
                available = self.producer.client.cluster.available_partitions_for_topic(topic)
                partitions[topic] = (every, sorted(available or every))
                if len(self._partition_of) > PARTITION_CACHE:
                    self._partition_of.clear()
            every, available = partitions[topic]
            key = message.key
            if key is None:
                partition = self._partitioner(None, every, available)
            else:
                # murmur2 in Python costs more than the rest of a message's hand-over, and
                # keys repeat (one per resource): remember them per partition count
                partition = self._partition_of.get((key, len(every)), -1)
                if partition < 0:
                    partition = self._partitioner(key, every, available)
                    self._partition_of[(key, len(every))] = partition
            groups.setdefault((topic, partition), []).append((index, message))
        return groups

    async def send_batches(
        self,
        topic: str,
        partition: int,
        items: Sequence[T],
        record: Callable[[T], tuple[bytes | None, bytes | None, Headers]],
    ) -> list[tuple[asyncio.Future[Any], list[T]]]:
        """``items`` to one partition as whole record batches (``record`` gives each one's
        key, value and headers; a None value is a tombstone): each batch's future, with the
        items it holds. A full batch is handed over and the item that did not fit starts the
        next one (a batch always takes its first record)."""
        producer = self.producer
        sends: list[tuple[asyncio.Future[Any], list[T]]] = []
        builder = producer.create_batch()
        held: list[T] = []
        for item in items:
            key, value, headers = record(item)
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                sends.append((await producer.send_batch(builder, topic, partition=partition), held))
                builder, held = producer.create_batch(), []
                builder.append(timestamp=None, key=key, value=value, headers=headers)
            held.append(item)
        sends.append((await producer.send_batch(builder, topic, partition=partition), held))
        return sends

    async def _substitute(
        self,
        index: int,
        reason: str,
        delivery: Delivery,
        substitute: Substitute | None,
        error: BaseException | None,
    ) -> None:
        replacement = substitute(index, reason) if substitute is not None else None
        if replacement is None:
            delivery.failed[index] = error or MessageSizeTooLargeError(reason)
            return
        if isinstance(replacement, Skip):
            delivery.substituted[index] = reason
            return
        try:
            await self.send_one(replacement)
        except (KafkaError, TimeoutError) as exc:
            delivery.failed[index] = exc
            return
        delivery.substituted[index] = reason

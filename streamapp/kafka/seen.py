"""The dedupe state: which record ids were already emitted, per raw-topic partition.

An id is remembered in the partition its raw message came from (the raw topic is keyed by
id, so repeats of an id land on the same partition) together with when it was first seen.
The state lives in a changelog topic partitioned like the raw topic (``key = id``, value
``<epoch seconds>:<partition>``, the format the faust table it replaces wrote): a worker
given a raw partition first reads that partition of the changelog to its end, and a
worker that loses it drops it. Writes are awaited, so after a crash a replayed batch finds
its ids already seen.

Two stores keep the ids on this worker: memory (rebuilt from the changelog at every
assignment) and RocksDB (kept on disk with the changelog offset it has read up to, so an
assignment reads only what is new).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamapp.core.errors import PublishError
from streamapp.core.pipeline import expired_ids, seen_value
from streamapp.kafka.publisher import Publisher

log = logging.getLogger("streamapp.seen")


class PartitionStore(Protocol):
    """The ids of one partition, with the changelog offset read so far."""

    def __contains__(self, key: bytes) -> bool: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def items(self) -> Iterable[tuple[bytes, bytes]]: ...
    def __len__(self) -> int: ...
    @property
    def offset(self) -> int: ...
    def set_offset(self, offset: int) -> None: ...
    def close(self) -> None: ...


class MemoryPartition:
    def __init__(self) -> None:
        self._ids: dict[bytes, bytes] = {}
        self._offset = 0

    def __contains__(self, key: bytes) -> bool:
        return key in self._ids

    def put(self, key: bytes, value: bytes) -> None:
        self._ids[key] = value

    def delete(self, key: bytes) -> None:
        self._ids.pop(key, None)

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self._ids.items())

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def offset(self) -> int:
        return self._offset

    def set_offset(self, offset: int) -> None:
        self._offset = offset

    def close(self) -> None:
        self._ids.clear()


_OFFSET_KEY = b"\x00streamapp:changelog-offset"


class RocksPartition:
    """One RocksDB database per partition (``rocksdict``), the changelog offset inside it."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Rdict

        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path))
        self._count: int | None = None
        stored = self._db.get(_OFFSET_KEY)
        self._offset = int(stored) if stored is not None else 0

    def __contains__(self, key: bytes) -> bool:
        return self._db.get(key) is not None

    def put(self, key: bytes, value: bytes) -> None:
        self._db[key] = value
        self._count = None

    def delete(self, key: bytes) -> None:
        with contextlib.suppress(KeyError):
            del self._db[key]
        self._count = None

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        for key, value in self._db.items():
            if key != _OFFSET_KEY and isinstance(key, bytes) and isinstance(value, bytes):
                yield key, value

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self.items())
        return self._count

    @property
    def offset(self) -> int:
        return self._offset

    def set_offset(self, offset: int) -> None:
        self._offset = offset
        self._db[_OFFSET_KEY] = str(offset).encode()

    def close(self) -> None:
        self._db.close()


class SeenStore:
    """Dedupe state of the raw partitions assigned to this worker."""

    def __init__(
        self,
        changelog: str,
        *,
        publisher: Publisher,
        store: str = "memory://",
        data_dir: str | Path = "./var",
    ) -> None:
        self.changelog = changelog
        self._publisher = publisher
        self._store = store
        self._dir = Path(data_dir) / "seen"
        self._partitions: dict[int, PartitionStore] = {}
        #: one restore at a time (a rebalance and a batch may both ask for a partition)
        self._restoring = asyncio.Lock()

    def _open(self, partition: int) -> PartitionStore:
        if self._store.startswith("rocksdb"):
            return RocksPartition(self._dir / f"{self.changelog}-{partition}")
        return MemoryPartition()

    # --- lookups --------------------------------------------------------------------------

    def contains(self, key: bytes, partition: int) -> bool:
        store = self._partitions.get(partition)
        return store is not None and key in store

    @property
    def partitions(self) -> set[int]:
        return set(self._partitions)

    def __len__(self) -> int:
        return sum(len(store) for store in self._partitions.values())

    # --- assignment -----------------------------------------------------------------------

    async def assign(self, partitions: Iterable[int]) -> None:
        """Take over ``partitions``: read their changelog to its end first."""
        wanted = set(partitions)
        if wanted <= set(self._partitions):
            return
        async with self._restoring:
            new = [p for p in sorted(wanted) if p not in self._partitions]
            if new:
                await self._take(new)

    async def _take(self, new: list[int]) -> None:
        stores = {p: self._open(p) for p in new}
        started = time.monotonic()
        read = await self._restore(stores)
        self._partitions.update(stores)
        log.info(
            "dedupe (%s): took over raw partitions %s (%d ids, %d changelog entries read in %.1fs)",
            self._store,
            ",".join(map(str, new)),
            sum(len(s) for s in stores.values()),
            read,
            time.monotonic() - started,
        )

    def revoke(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            store = self._partitions.pop(partition, None)
            if store is not None:
                store.close()

    def close(self) -> None:
        self.revoke(list(self._partitions))

    async def _restore(self, stores: dict[int, PartitionStore]) -> int:
        consumer = await self._publisher.cluster.reader()
        read = 0
        try:
            tps = {TopicPartition(self.changelog, p): s for p, s in stores.items()}
            consumer.assign(list(tps))
            for tp, store in tps.items():
                consumer.seek(tp, store.offset)
            end = await consumer.end_offsets(list(tps))
            # to the reported end, then one more empty read (some brokers report a stale end)
            while True:
                batch = await consumer.getmany(timeout_ms=300, max_records=20000)
                for tp, records in batch.items():
                    store = tps[tp]
                    for record in records:
                        if record.value is None or record.value == b"":
                            store.delete(record.key)
                        else:
                            store.put(record.key, record.value)
                        read += 1
                    if records:
                        store.set_offset(records[-1].offset + 1)
                positions = [await consumer.position(tp) for tp in tps]
                if not any(batch.values()) and all(
                    pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)
                ):
                    return read
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    # --- writes ---------------------------------------------------------------------------

    async def add(self, entries: Sequence[tuple[bytes, int]], *, now: float | None = None) -> None:
        """Remember ``(id, raw partition)`` pairs; returns once the changelog has them.

        An id whose partition is not (or no longer) assigned here is skipped: its new owner
        will see the output repeated at worst, never lose it.
        """
        moment = time.time() if now is None else now
        futures = []
        producer = self._publisher.producer
        written: list[tuple[PartitionStore, bytes, bytes]] = []
        for key, partition in entries:
            store = self._partitions.get(partition)
            if store is None:
                continue
            value = seen_value(moment, partition)
            futures.append(await producer.send(self.changelog, value, key=key, partition=partition))
            written.append((store, key, value))
        if not futures:
            return
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = sum(isinstance(r, BaseException) for r in results)
        for (store, key, value), result in zip(written, results, strict=True):
            if not isinstance(result, BaseException):
                store.put(key, value)
        if failed:
            raise PublishError(
                f"dedupe: {failed} of {len(results)} seen ids not written to {self.changelog!r}"
            )

    async def expire(self, retention: float, *, now: float | None = None) -> int:
        """Forget ids first seen longer than ``retention`` seconds ago."""
        cutoff = (time.time() if now is None else now) - retention
        producer = self._publisher.producer
        forgotten = 0
        for partition, store in list(self._partitions.items()):
            expired = expired_ids(store.items(), active_partitions={partition}, cutoff=cutoff)
            futures = []
            for key, _ in expired:
                futures.append(
                    await producer.send(self.changelog, None, key=key, partition=partition)
                )
                store.delete(key)
            if futures:
                with contextlib.suppress(KafkaError):
                    await asyncio.gather(*futures)
            forgotten += len(expired)
        if forgotten:
            log.info("dedupe: forgot %d ids older than the retention", forgotten)
        return forgotten


def wipe(data_dir: str | Path) -> None:
    """Remove the RocksDB stores of this worker (tests and ``make clean``)."""
    shutil.rmtree(Path(data_dir) / "seen", ignore_errors=True)

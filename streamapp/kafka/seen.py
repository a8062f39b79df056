"""State kept per partition of an input topic, durable in a changelog partitioned like it.

:class:`PartitionedStore` is the worker's one kind of partitioned state: key → bytes, per
input partition, written to a changelog topic with the same partition count (the entry of a
key lives in the partition its input message came from). A worker given an input partition
first reads that partition of the changelog to its end, and a worker that loses it drops
it. Writes are awaited, so after a crash a replayed batch finds the state it left.

Two stores keep the entries on this worker: memory (rebuilt from the changelog at every
assignment) and RocksDB (kept on disk with the changelog offset it has read up to, so an
assignment reads only what is new).

Its uses: :class:`SeenStore`, which record ids were already emitted (the raw topic is keyed
by id, so repeats of an id land on the same partition; value ``<epoch seconds>:<partition>``,
the format the faust table it replaces wrote), and the detections' per-actor rule state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamapp.core.errors import PublishError
from streamapp.core.pipeline import seen_before, seen_value
from streamapp.kafka.publisher import Publisher

if TYPE_CHECKING:
    from rocksdict import Options

log = logging.getLogger("streamapp.seen")


class PartitionStore(Protocol):
    """The entries of one partition, with the changelog offset read so far."""

    def __contains__(self, key: bytes) -> bool: ...
    def get(self, key: bytes) -> bytes | None: ...
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

    def get(self, key: bytes) -> bytes | None:
        return self._ids.get(key)

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


#: memory the RocksDB databases opened with one ``rocks_options()`` share: memtables (writes
#: not yet on disk) and the block cache (what reads keep). RocksDB's defaults give each
#: database 64 MiB memtables and its own cache, so a worker's RSS grew with the ids it had
#: seen and with the partitions it held (360 MB at 1,000,000 ids, ``make bench``); with
#: these it is bounded.
ROCKS_WRITE_BUFFERS = 32 * 1024 * 1024
ROCKS_BLOCK_CACHE = 16 * 1024 * 1024


def rocks_options() -> Options:
    """Options for RocksDB databases that share one bounded memory: give the same object to
    every database that should share it (the worker: both of its state stores)."""
    from rocksdict import BlockBasedOptions, Cache, Options, WriteBufferManager

    cache = Cache(ROCKS_BLOCK_CACHE)
    options = Options()
    options.create_if_missing(True)
    options.set_write_buffer_size(4 * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    # memtables count against the cache, all databases together
    options.set_write_buffer_manager(
        WriteBufferManager.new_write_buffer_manager_with_cache(ROCKS_WRITE_BUFFERS, False, cache)
    )
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    # most lookups are of new ids: a bloom filter answers "absent" without reading a block
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    options.set_block_based_table_factory(table)
    options.set_max_open_files(256)
    return options


class RocksPartition:
    """One RocksDB database per partition (``rocksdict``), the changelog offset inside it."""

    def __init__(self, path: Path, options: Options | None = None) -> None:
        from rocksdict import Rdict

        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options if options is not None else rocks_options())
        self._count: int | None = None
        stored = self._db.get(_OFFSET_KEY)
        self._offset = int(stored) if stored is not None else 0

    def __contains__(self, key: bytes) -> bool:
        return self._db.get(key) is not None

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return value if isinstance(value, bytes) else None

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


#: an entry to write: the store it goes to once the changelog has it, key, value (None: gone)
_Entry = tuple["PartitionStore", bytes, bytes | None]

#: what a sweep's function answers to keep an entry as it is
KEEP = object()


class PartitionedStore:
    """Key → value state of the input partitions assigned to this worker."""

    def __init__(
        self,
        changelog: str,
        *,
        publisher: Publisher,
        store: str = "memory://",
        data_dir: str | Path = "./var",
        rocks: Options | None = None,
    ) -> None:
        self.changelog = changelog
        self._publisher = publisher
        self._store = store
        #: the RocksDB options (and so the memory) its partitions share, made when first needed
        self._rocks = rocks
        self._dir = Path(data_dir) / "seen"
        self._partitions: dict[int, PartitionStore] = {}
        #: one restore at a time (a rebalance and a batch may both ask for a partition)
        self._restoring = asyncio.Lock()

    def _open(self, partition: int) -> PartitionStore:
        if self._store.startswith("rocksdb"):
            if self._rocks is None:
                self._rocks = rocks_options()
            return RocksPartition(self._dir / f"{self.changelog}-{partition}", self._rocks)
        return MemoryPartition()

    # --- lookups --------------------------------------------------------------------------

    def contains(self, key: bytes, partition: int) -> bool:
        store = self._partitions.get(partition)
        return store is not None and key in store

    def get(self, key: bytes, partition: int) -> bytes | None:
        store = self._partitions.get(partition)
        return store.get(key) if store is not None else None

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

    async def write(self, entries: Sequence[tuple[bytes, int, bytes | None]]) -> None:
        """Store ``(key, partition, value)`` (None deletes); returns once the changelog has
        them. A key whose partition is not (or no longer) assigned here is skipped: its new
        owner will repeat work at worst, never lose it. PublishError if a write failed.

        The entries of one partition go to the broker as whole record batches
        (``Publisher.send_batches``): sent one by one they cost the pipeline a tenth of its
        CPU."""
        by_partition: dict[int, list[_Entry]] = {}
        for key, partition, value in entries:
            store = self._partitions.get(partition)
            if store is not None:
                by_partition.setdefault(partition, []).append((store, key, value))
        if not by_partition:
            return
        sends: list[tuple[asyncio.Future[Any], list[_Entry]]] = []
        for partition, items in by_partition.items():
            sends += await self._publisher.send_batches(
                self.changelog, partition, items, lambda entry: (entry[1], entry[2], None)
            )
        results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
        failed = 0
        for (_, chunk), result in zip(sends, results, strict=True):
            if isinstance(result, BaseException):
                failed += len(chunk)
                continue
            for store, key, value in chunk:
                if value is None:
                    store.delete(key)
                else:
                    store.put(key, value)
        if failed:
            total = sum(len(chunk) for _, chunk in sends)
            raise PublishError(
                f"{failed} of {total} state entries not written to {self.changelog!r}"
            )

    async def sweep(self, decide: Callable[[bytes, bytes], object]) -> int:
        """Rewrite the entries ``decide`` changes: it answers KEEP, None (forget the key) or
        new bytes. Returns how many entries changed."""
        changes: list[tuple[bytes, int, bytes | None]] = []
        for partition, store in list(self._partitions.items()):
            for key, value in store.items():
                answer = decide(key, value)
                if answer is KEEP:
                    continue
                changes.append((key, partition, answer if isinstance(answer, bytes) else None))
        for start in range(0, len(changes), 5000):
            with contextlib.suppress(PublishError, KafkaError):
                await self.write(changes[start : start + 5000])
        return len(changes)


class SeenStore(PartitionedStore):
    """Which record ids were already emitted (and when first), per raw partition."""

    async def add(self, entries: Sequence[tuple[bytes, int]], *, now: float | None = None) -> None:
        """Remember ``(id, raw partition)`` pairs; returns once the changelog has them."""
        moment = time.time() if now is None else now
        await self.write([(key, p, seen_value(moment, p)) for key, p in entries])

    async def expire(self, retention: float, *, now: float | None = None) -> int:
        """Forget ids first seen longer than ``retention`` seconds ago."""
        cutoff = (time.time() if now is None else now) - retention

        def decide(key: bytes, value: bytes) -> object:
            return None if seen_before(value, cutoff) else KEEP

        forgotten = await self.sweep(decide)
        if forgotten:
            log.info("dedupe: forgot %d ids older than the retention", forgotten)
        return forgotten


def wipe(data_dir: str | Path) -> None:
    """Remove the RocksDB stores of this worker (tests and ``make clean``)."""
    shutil.rmtree(Path(data_dir) / "seen", ignore_errors=True)

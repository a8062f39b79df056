"""The partition stores under the dedupe and detection state: memory and RocksDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.kafka.seen import MemoryPartition, PartitionStore, RocksPartition


def _stores(tmp_path: Path) -> list[PartitionStore]:
    pytest.importorskip("rocksdict")
    return [MemoryPartition(), RocksPartition(tmp_path / "p0")]


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
def test_a_partition_store_puts_gets_deletes_and_counts(tmp_path: Path, kind: str) -> None:
    store = dict(zip(["memory", "rocksdb"], _stores(tmp_path), strict=True))[kind]
    try:
        store.put(b"id-1", b"1733329000.5:0")
        store.put(b"id-2", b"1733329001.5:0")
        assert b"id-1" in store and store.get(b"id-2") == b"1733329001.5:0"
        assert b"id-3" not in store and store.get(b"id-3") is None
        store.delete(b"id-1")
        store.delete(b"never-there")
        assert b"id-1" not in store
        store.set_offset(42)
        assert sorted(store.items()) == [(b"id-2", b"1733329001.5:0")]
        assert len(store) == 1 and store.offset == 42
    finally:
        store.close()


def test_rocksdb_keeps_entries_and_offset_across_a_reopen(
    tmp_path: Path,
) -> None:
    pytest.importorskip("rocksdict")
    first = [RocksPartition(tmp_path / f"p{n}") for n in range(4)]
    for n, store in enumerate(first):
        for i in range(2_000):
            store.put(f"rec-{n}-{i}".ljust(43, "x").encode(), b"1733329000.0:0")
        store.set_offset(2_000 + n)
        store.close()
    again = [RocksPartition(tmp_path / f"p{n}") for n in range(4)]
    try:
        for n, store in enumerate(again):
            assert store.offset == 2_000 + n
            assert len(store) == 2_000
            assert f"rec-{n}-1999".ljust(43, "x").encode() in store
            assert f"rec-{n + 1}-0".ljust(43, "x").encode() not in store
    finally:
        for store in again:
            store.close()

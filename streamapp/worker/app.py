"""The faust application: its settings, topics and tables. Nothing else lives here.

``faust -A streamapp.worker.app worker -l info`` finds the ``app`` attribute. The leaf modules that
hold the poller and the agents import this module, never the reverse; they are listed in
``MODULES`` and discovered explicitly.

Importing this module reads the environment only (cheap): no loop, no client, no
connection is made until the worker starts. A bad setting stops start-up with one line.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import faust
from faust.streams import _current_event

from streamapp.config import Settings, load_settings
from streamapp.kafka import clients
from streamapp.core.errors import ConfigError
from streamapp.worker.logsetup import logging_config

#: the leaf modules that define timers, agents, commands and views
MODULES = [
    "streamapp.worker.poller",
    "streamapp.worker.agents",
    "streamapp.worker.watchdog",
    "streamapp.worker.views",
    "streamapp.cli.commands",
]


def _load() -> Settings:
    try:
        return load_settings(require_sources=False)
    except ConfigError as exc:
        print(f"streamapp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


settings = _load()
clients.configure(settings.kafka_security)

app = faust.App(
    settings.app_id,
    broker=settings.broker or "kafka://127.0.0.1:9092",
    store=settings.store,
    datadir=settings.data_dir,
    autodiscover=MODULES,
    origin="streamapp",
    topic_partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
    web_port=settings.web_port,
    producer_acks=-1,
    # throughput: large producer batches, large fetches, a deep stream buffer (the pipeline
    # takes up to 10,000 events at a time)
    producer_linger_ms=5,
    producer_max_batch_size=1024 * 1024,
    producer_max_request_size=4 * 1024 * 1024,
    broker_max_poll_records=5000,
    stream_buffer_maxsize=20000,
    # short enough that a dead worker's sources and partitions move within seconds
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=max(0.5, min(3.0, settings.session_timeout / 6)),
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    logging_config=logging_config(settings.log_level, settings.log_json),
    broker_credentials=clients.faust_credentials(settings.kafka_security),
    recovery_consistency_check=settings.recovery_consistency_check,
)

raw_topic = app.topic(
    settings.topics.raw,
    partitions=settings.partitions,
    key_type=bytes,
    value_type=bytes,
    internal=True,
)
notifications_topic = app.topic(
    settings.topics.notifications,
    partitions=1,
    key_type=bytes,
    value_type=bytes,
)
dlq_topic = app.topic(
    settings.topics.dlq,
    partitions=settings.partitions,
    key_type=bytes,
    value_type=bytes,
    internal=True,
)


class _PartitionStandIn:
    """Just enough of an event for faust's stores, which read the partition of a write from
    the current event (the RocksDB store asserts there is one)."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


@contextmanager
def writing_to(partition: int) -> Iterator[None]:
    """Make table writes and reads outside a stream event go to ``partition``."""
    stand_in = _PartitionStandIn(partition)
    token = _current_event.set(weakref.ref(stand_in))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


class OnePartitionGlobalTable(faust.GlobalTable):
    """A global table written outside any stream (by the poller and the watchdog).

    faust takes a table write's partition from the current event, which a timer or service
    does not have; ``use_partitioner`` instead asks the producer, which fails until the
    producer has metadata for the changelog. With one partition the answer is always 0.
    """

    def partition_for_key(self, key: object) -> int | None:
        return 0

    def __setitem__(self, key: Any, value: Any) -> None:
        with writing_to(0):
            super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        with writing_to(0):
            super().__delitem__(key)


def global_table(name: str) -> OnePartitionGlobalTable:
    """Global: whichever worker leads polls every source and must see every entry; one
    partition, as faust advises for global tables."""
    table = OnePartitionGlobalTable(
        app,
        name=name,
        key_type=bytes,
        value_type=bytes,
        partitions=1,
        recovery_buffer_size=1,
        standby_buffer_size=1,
        is_global=True,
        beacon=app.tables.beacon,
    )
    app.tables.add(table)
    return table


_topics_created = False


async def ensure_output_topics() -> None:
    """Create every topic the app writes to before the first write (once per process).

    faust creates the topics its agents read and its changelogs, not the ones we only
    write to; a write to a missing topic can wait for metadata for a very long time, and
    a broker that auto-creates would pick its own partition count.
    """
    global _topics_created
    if _topics_created:
        return
    names = [
        settings.topics.output,
        settings.topics.dlq,
        *([settings.topics.ocsf] if settings.ocsf else []),
        *settings.router.extra_topics,
    ]
    await clients.ensure_topics(
        clients.bootstrap_servers(settings.broker),
        {name: (settings.partitions, {}) for name in names},
    )
    _topics_created = True


async def durable_put(table: OnePartitionGlobalTable, key: bytes, value: bytes) -> None:
    """Write a global table entry and return once the broker acknowledged it.

    A plain ``table[key] = value`` only queues the changelog write in faust's producer
    buffer; a worker killed a moment later would lose a checkpoint it already logged.
    """
    fut = await app.producer.send(table.changelog_topic.get_topic_name(), key, value, 0, None, None)
    await fut
    with writing_to(0):
        table.data[key] = value  # the local copy; the changelog already holds it


#: source name → msgspec-encoded models.Checkpoint, written by the leader's poller
checkpoints = global_table("checkpoints")
#: source name → msgspec-encoded health.SourceHealth, written by the leader's watchdog
health = global_table("health")

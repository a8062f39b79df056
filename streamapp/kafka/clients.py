"""How our own Kafka clients (CLI commands, the gap reader) reach the cluster: the broker
list and the security settings the worker uses too (SASL, SSL).

The settings are configured once per process (``configure``) by ``streamapp.worker.app``, so every
aiokafka client built with ``client_options()`` connects like faust's own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from streamapp.config.security import KafkaSecurity
from streamapp.core.errors import StreamappError

_security = KafkaSecurity()


class BrokerUnavailable(StreamappError):
    """The Kafka broker could not be reached or refused a metadata/admin request."""


def broker_problem(bootstrap: Sequence[str], exc: BaseException) -> BrokerUnavailable:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if "Unable to bootstrap" in reason:
        reason = "connection failed"
    return BrokerUnavailable(
        f"cannot reach the Kafka broker at {','.join(bootstrap)} (KAFKA_BROKER): "
        f"{type(exc).__name__}: {reason}"
    )


def configure(security: KafkaSecurity) -> None:
    global _security
    _security = security


def bootstrap_servers(broker: str | None) -> list[str]:
    """``host:port`` list from faust's broker URL form (``kafka://h:p,kafka://h2:p``)."""
    if not broker:
        return ["127.0.0.1:9092"]
    servers = []
    for part in broker.split(","):
        part = part.strip()
        if not part:
            continue
        host = part.split("://", 1)[-1].rstrip("/")
        servers.append(host if ":" in host else f"{host}:9092")
    return servers or ["127.0.0.1:9092"]


def client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer or admin client."""
    security = security or _security
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_ssl:
        options["ssl_context"] = security.ssl_context()
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = (
            security.sasl_password.reveal() if security.sasl_password else None
        )
    return options


def faust_credentials(security: KafkaSecurity) -> Any:
    """The same settings as faust's ``broker_credentials`` (None for plaintext)."""
    import faust

    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password.reveal() if security.sasl_password else None,
            ssl_context=security.ssl_context(),
            mechanism=security.sasl_mechanism,
        )
    if security.uses_ssl:
        return faust.SSLCredentials(security.ssl_context())
    return None


async def started_reader(bootstrap: Sequence[str]) -> Any:
    """A started aiokafka consumer outside any group, reading from the earliest offset;
    an unreachable broker is one BrokerUnavailable line."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=list(bootstrap),
        **client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        raise broker_problem(bootstrap, exc) from None
    return consumer


async def read_topic_latest(
    bootstrap: Sequence[str], topic: str, *, idle_ms: int = 300, give_up_after: float = 30.0
) -> dict[bytes | None, bytes | None] | None:
    """The last value per key of every partition of ``topic``, or None when it does not exist.

    Reads to the end offsets, then once more until a fetch comes back empty: some brokers
    report a stale end offset that leaves out the rest of the newest batch. After
    ``give_up_after`` seconds what was read so far is returned (older, never wrong).
    """
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    consumer = await started_reader(bootstrap)
    try:
        if topic not in await consumer.topics():
            return None
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return None
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        latest: dict[bytes | None, bytes | None] = {}
        deadline = time.monotonic() + give_up_after
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=10000)
            for messages in batch.values():
                for message in messages:
                    latest[message.key] = message.value
            reached = all([await consumer.position(tp) >= end[tp] for tp in partitions])
            if reached and not any(batch.values()):
                break
        return latest
    except KafkaError as exc:
        raise broker_problem(bootstrap, exc) from None
    finally:
        await consumer.stop()


async def ensure_topics(
    bootstrap: Sequence[str], topics: dict[str, tuple[int, dict[str, str]]]
) -> None:
    """Create whichever of ``topics`` (name → (partitions, config)) does not exist yet.

    Topics the stream agents read must exist with their partitions before anything is
    written to them; a broker that auto-creates would pick its own partition count.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap), **client_options())
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        await admin.close()
        raise broker_problem(bootstrap, exc) from None
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=config)
            for name, (n, config) in topics.items()
            if name not in existing
        ]
        if missing:
            response: Any = await admin.create_topics(missing)
            for item in getattr(response, "topic_errors", ()) or ():
                name, code = item[0], item[1]
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (created meanwhile)
                    raise BrokerUnavailable(
                        f"the broker refused to create topic {name!r} (error code {code})"
                    )
    except KafkaError as exc:
        raise broker_problem(bootstrap, exc) from None
    finally:
        await admin.close()

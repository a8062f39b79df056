"""How our own Kafka clients reach the cluster: the broker list, the security settings, and
the few admin and read operations the worker and the CLI need.

A :class:`Cluster` is built once from the settings and handed to whoever needs a producer,
a consumer or an admin call, so every client connects the same way (SASL, SSL). Every
failure to reach the broker is one :class:`BrokerUnavailable` line naming the address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streamapp.config.security import KafkaSecurity
from streamapp.core.errors import StreamappError

#: Kafka's error code for "the topic exists already" (created meanwhile by another worker)
TOPIC_ALREADY_EXISTS = 36


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


def client_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer or admin client."""
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


@dataclass
class Cluster:
    """Where the brokers are and how to talk to them."""

    bootstrap: list[str]
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_url(cls, broker: str | None, security: KafkaSecurity | None = None) -> Cluster:
        return cls(bootstrap_servers(broker), security or KafkaSecurity())

    @property
    def options(self) -> dict[str, Any]:
        return client_options(self.security)

    def problem(self, exc: BaseException) -> BrokerUnavailable:
        return broker_problem(self.bootstrap, exc)

    async def start_client(
        self, start: Callable[[], Awaitable[object]], close: Callable[[], Awaitable[object]]
    ) -> None:
        """Start a client (producer, consumer, admin); when the broker cannot be reached,
        close it again and raise one :class:`BrokerUnavailable` line naming the address."""
        try:
            await start()
        except (KafkaError, OSError) as exc:
            await close()
            raise self.problem(exc) from None

    # --- consumers ------------------------------------------------------------------------

    def consumer(self, **settings: Any) -> AIOKafkaConsumer:
        """An unstarted consumer (outside any group unless ``group_id`` is given)."""
        settings.setdefault("group_id", None)
        settings.setdefault("enable_auto_commit", False)
        settings.setdefault("auto_offset_reset", "earliest")
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **self.options, **settings)

    async def reader(self) -> AIOKafkaConsumer:
        """A started consumer outside any group, reading from the earliest offset."""
        consumer = self.consumer()
        await self.start_client(consumer.start, consumer.stop)
        return consumer

    async def read_latest(
        self, topic: str, *, idle_ms: int = 300, give_up_after: float = 30.0
    ) -> dict[bytes | None, bytes | None] | None:
        """The last value per key of every partition of ``topic``, or None when it does not
        exist. Reads to the end offsets, then once more until a fetch comes back empty: some
        brokers report a stale end offset that leaves out the rest of the newest batch.
        After ``give_up_after`` seconds what was read so far is returned (older, not wrong).
        """
        consumer = await self.reader()
        try:
            if topic not in await consumer.topics():
                return None
            numbers = consumer.partitions_for_topic(topic) or ()
            partitions = [TopicPartition(topic, p) for p in numbers]
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
            raise self.problem(exc) from None
        finally:
            await consumer.stop()

    # --- admin ----------------------------------------------------------------------------

    async def reachable(self, within: float = 30.0) -> None:
        """BrokerUnavailable (one line naming the address) unless a broker answers."""
        try:
            async with asyncio.timeout(within):
                admin = await self._admin()
                await admin.close()
        except TimeoutError:
            raise BrokerUnavailable(
                f"cannot reach the Kafka broker at {','.join(self.bootstrap)} (KAFKA_BROKER):"
                f" no answer within {within:g}s"
            ) from None

    async def _admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.options)
        await self.start_client(admin.start, admin.close)
        return admin

    async def ensure_topics(self, topics: dict[str, tuple[int, dict[str, str]]]) -> None:
        """Create whichever of ``topics`` (name → (partitions, config)) does not exist yet.

        Topics the pipeline reads must exist with their partitions before anything is
        written to them: a broker that auto-creates would pick its own partition count.
        """
        admin = await self._admin()
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
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        raise BrokerUnavailable(
                            f"the broker refused to create topic {name!r} (error code {code})"
                        )
        except KafkaError as exc:
            raise self.problem(exc) from None
        finally:
            await admin.close()

    async def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``; empty when it does not exist."""
        admin = await self._admin()
        try:
            # listing first: asking a broker that auto-creates about a missing topic creates it
            if topic not in await admin.list_topics():
                return []
            described: Any = await admin.describe_topics([topic])
        except KafkaError as exc:
            raise self.problem(exc) from None
        finally:
            await admin.close()
        for item in described or ():
            if item.get("topic") == topic and not item.get("error_code"):
                return sorted(p["partition"] for p in item.get("partitions", ()))
        return []

    async def message_limits(self, topics: Sequence[str]) -> dict[str, int | None]:
        """Each topic's largest accepted message (``max.message.bytes``), as the broker
        reports it; None where it reports nothing (some brokers describe no configs)."""
        admin = await self._admin()
        limits: dict[str, int | None] = dict.fromkeys(topics)
        try:
            resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
            responses = await admin.describe_configs(resources)
            for response in responses:
                for resource in response.resources:
                    name, entries = resource[3], resource[4]
                    for entry in entries:
                        if entry[0] == "max.message.bytes" and str(entry[1]).isdigit():
                            limits[name] = int(entry[1])
        except KafkaError as exc:
            raise self.problem(exc) from None
        finally:
            await admin.close()
        return limits

    async def committed(self, group: str, partitions: Sequence[TopicPartition]) -> dict[int, int]:
        """A consumer group's committed offsets (partition → next offset to read)."""
        admin = await self._admin()
        try:
            answer = await admin.list_consumer_group_offsets(group, partitions=list(partitions))
        except KafkaError as exc:
            raise self.problem(exc) from None
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in answer.items() if meta.offset >= 0}

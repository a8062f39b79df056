from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_harness import Kafka, embedded_kafka, shared_broker


@pytest.fixture(scope="session")
def _shared_broker_url() -> Iterator[str | None]:
    with shared_broker() as url:
        yield url


@pytest.fixture
def kafka(_shared_broker_url: str | None, tmp_path: Path) -> Iterator[Kafka]:
    """A real Kafka-protocol broker for one test, with names of its own.

    KAFKA_BROKER or testcontainers give one broker for the session (unique group and topic
    names per test); otherwise each test gets a fresh embedded Tansu broker (it starts in
    ~0.2 s and Tansu keeps a group's first session timeout for its whole life).
    """
    if _shared_broker_url is not None:
        yield Kafka(url=_shared_broker_url, kind="shared")
        return
    broker, kafka = embedded_kafka(tmp_path)
    try:
        yield kafka
    finally:
        broker.stop()

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_harness import Kafka, kafka_broker, shared_broker


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
    with kafka_broker(_shared_broker_url, tmp_path) as kafka:
        yield kafka


@pytest.fixture(scope="module")
def module_kafka(
    _shared_broker_url: str | None,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Kafka]:
    """One broker for the tests of a module (whose fixtures run one worker for them all).

    A module that sets ``KCAT_PROXY = True`` gets Tansu behind make run's compatibility
    proxy (kcat's librdkafka 2.0.2 needs it).
    """
    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    proxy = getattr(request.module, "KCAT_PROXY", False)
    with kafka_broker(_shared_broker_url, tmp, kcat_proxy=proxy) as kafka:
        yield kafka

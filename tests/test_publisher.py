"""The publisher on a real broker: whole record batches, in the partitions send() chose."""

from __future__ import annotations

import pytest

from streamapp.core.models import Outgoing
from streamapp.kafka.clients import Cluster
from streamapp.kafka.publisher import Publisher
from tests.kafka_harness import Kafka, create_topics

pytestmark = pytest.mark.broker


async def test_a_batch_lands_in_the_partitions_send_would_choose_in_order_with_headers(
    kafka: Kafka,
):
    base = "publisher_partitions"
    topic = kafka.topic(base)
    await create_topics(kafka.bootstrap, {topic: 8})
    publisher = Publisher(Cluster.from_url(kafka.url))
    await publisher.start()
    try:
        keys: list[bytes | None] = [f"service:P{i % 150:05d}".encode() for i in range(600)]
        keys += [None] * 20
        messages = [
            Outgoing(topic, key, f"v{n}".encode(), [("source", b"prod")])
            for n, key in enumerate(keys)
        ]
        delivery = await publisher.deliver(messages)
        assert delivery.ok and not delivery.substituted
        # aiokafka's own per-message send, for the partition it picks for each key
        chosen = {}
        for key in {k for k in keys if k is not None}:
            sent = await publisher.producer.send_and_wait(topic, b"probe", key=key)
            chosen[key] = sent.partition
    finally:
        await publisher.stop()
    read = [
        m
        for m in await kafka.read(base, until_count=len(keys) + len(chosen))
        if m.value != b"probe"
    ]
    assert sorted(m.value for m in read) == sorted(m.value for m in messages)
    for message in read:
        assert list(message.headers) == [("source", b"prod")]
        if message.key is not None:
            assert message.partition == chosen[message.key], message.key
    # within a partition, the order they were given in
    for partition in range(8):
        values = [int(m.value[1:]) for m in read if m.partition == partition]
        assert values == sorted(values)

"""The output topic read by clients we did not write: librdkafka (through confluent-kafka,
plain and in a consumer group) and kcat.

One live run for the module: the simulator, a real broker, a worker with OCSF on and a
routing rule, a few hundred records spread over the partitions and one malformed record
(so the dead-letter topic has something). The worker is stopped once every output is on
the broker; the clients then read what it left there.

On the embedded Tansu broker every connection goes through the loopback proxy ``make run``
uses (``streamapp.devtools.broker.ApiVersionsProxy``): it passes everything through but
empties the tagged fields of ApiVersions (v3+) answers. Tansu 0.6.0 sends all four,
``FinalizedFeaturesEpoch = -1`` included (Apache Kafka leaves out a tagged field that holds
its default), and librdkafka before 2.2.0 skips each
tagged field one byte short (confluentinc/librdkafka#4278). Debian 12's kcat 1.7.1 links
librdkafka 2.0.2: it then reads the epoch's ``ff`` bytes as a length and drops every
connection ("ApiVersionRequest failed: Local: Read underflow"). A broker/client mismatch,
nothing the worker writes; against Apache Kafka (KAFKA_BROKER or testcontainers) the clients
connect directly.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamapp.devtools.simulator import SimulatorThread, generate_records
from tests.kafka_harness import Kafka, Worker

pytestmark = pytest.mark.broker
#: the module's broker (``module_kafka``): Tansu behind make run's proxy, for kcat
KCAT_PROXY = True

TOKEN = "outside-token-0123456789abcdef"
PARTITIONS = 4
RECORDS = 300
HEADERS = ("source_name", "action", "resource_type", "category")
#: what the README tells a user to run (the bootstrap address and topic filled in)
KCAT_FORMAT = r"%h\t%s\n"


@dataclass
class Live:
    kafka: Kafka
    output: str
    #: record id → the output document's value bytes, as the worker's own client read it
    values: dict[str, bytes]
    #: (partition, offset) of every message on the output topic
    positions: set[tuple[int, int]]


def malformed_record(template: dict) -> dict:
    """Keyed and timed, so the poller passes it on, but with no ``root_resource``: the
    pipeline cannot make an output document of it and dead-letters it."""
    bad = {k: v for k, v in template.items() if k != "root_resource"}
    bad["id"] = "OUTSIDE-MALFORMED-1"
    return bad


@pytest.fixture(scope="module")
def live(module_kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Live:
    return run_worker(module_kafka, tmp_path_factory.mktemp("outside-clients"))


def run_worker(kafka: Kafka, tmp: Path) -> Live:
    """A worker's run over generated records and a malformed one, checked as it ends."""
    output = kafka.topic("pagerduty_audit_logs")
    routes = tmp / "routes.toml"
    routes.write_text(f'[[routes]]\ntopic = "{output}.user_access"\ncategory = ["user_access"]\n')
    now = datetime.now(UTC)
    records = generate_records(
        RECORDS, start=now - timedelta(hours=5), end=now - timedelta(minutes=10), seed=21
    )
    bad = malformed_record(records[0])
    env = {
        **kafka.env(),
        "PAGERDUTY_API_TOKEN": TOKEN,
        "PAGERDUTY_SOURCE_NAME": "sim",
        "PAGERDUTY_POLL_INTERVAL": "2",
        "PAGERDUTY_LOOKBACK": "6h",
        "STREAMAPP_PARTITIONS": str(PARTITIONS),
        "STREAMAPP_OCSF": "true",
        "STREAMAPP_TOPIC_OCSF": kafka.topic("pagerduty_audit_logs.ocsf"),
        "STREAMAPP_ROUTES_FILE": str(routes),
        "STREAMAPP_HTTP_RETRY_BASE": "0.05",
    }
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim:
        sim.add_records([*records, bad])
        env["PAGERDUTY_API_URL"] = sim.base_url
        worker = Worker(env, tmp / "worker.log").start()
        try:
            out = asyncio.run(kafka.read("pagerduty_audit_logs", until_count=RECORDS, timeout=90))
            dead = asyncio.run(kafka.read("pagerduty_audit_logs_dlq", until_count=1, timeout=30))
        finally:
            worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-4000:]
    assert len(dead) == 1, "the malformed record should make exactly one dead letter"
    assert dead[0].key == bad["id"].encode()
    values = {json.loads(m.value)["id"]: m.value for m in out}
    assert len(out) == RECORDS and set(values) == {r["id"] for r in records}
    positions = {(m.partition, m.offset) for m in out}
    assert len({p for p, _ in positions}) == PARTITIONS, "the records did not spread"
    return Live(kafka=kafka, output=output, values=values, positions=positions)


# --- librdkafka through confluent-kafka ---------------------------------------------------


def consumer(live: Live, group: str | None = None, **extra: object) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": live.kafka.bootstrap,
            # a plain (assign) consumer still needs a group id; it never joins or commits
            "group.id": group or f"outside-plain-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            **extra,
        }
    )


def partitions(c: Consumer, topic: str) -> list[int]:
    # not the watermarks: Tansu's ListOffsets (latest) leaves out the rest of the newest
    # batch (broker.md); the fixture knows every (partition, offset) the worker wrote
    return sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)


def poll_until(c: Consumer, done, timeout: float, what: str) -> list:
    """Messages from ``c`` until ``done(messages)``; fails on a client error or the deadline."""
    messages: list = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        assert time.monotonic() < deadline, f"{what}: {len(messages)} messages before the deadline"
        message = c.poll(0.2)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            assert error.code() == KafkaError._PARTITION_EOF, f"{what}: {error}"
            continue
        messages.append(message)
    return messages


def drain(c: Consumer, seconds: float) -> list:
    """Whatever else arrives within ``seconds`` (to catch a message read twice)."""
    extra = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = c.poll(0.1)
        if message is not None and message.error() is None:
            extra.append(message)
    return extra


def test_librdkafka_reads_every_document_with_its_four_headers(live: Live):
    c = consumer(live)
    try:
        numbers = partitions(c, live.output)
        assert len(numbers) == PARTITIONS
        c.assign([TopicPartition(live.output, p, OFFSET_BEGINNING) for p in numbers])
        messages = poll_until(c, lambda got: len(got) >= RECORDS, 30, "librdkafka read")
        messages += drain(c, 0.5)
    finally:
        c.close()
    assert {(m.partition(), m.offset()) for m in messages} == live.positions
    assert len(messages) == RECORDS
    ids: Counter[str] = Counter()
    for message in messages:
        value = message.value()
        document = json.loads(value.decode("utf-8"))  # strict UTF-8: a bad byte fails here
        ids[document["id"]] += 1
        headers = message.headers()
        assert headers is not None, f"{document['id']}: no headers"
        names = [name for name, _ in headers]
        assert sorted(names) == sorted(HEADERS), f"{document['id']}: headers {names}"
        for name, header_value in headers:
            assert isinstance(header_value, bytes)
            assert header_value == document[name].encode("utf-8"), (name, header_value)
        key = f"{document['resource_type']}:{document['root_resource']['id']}".encode()
        assert message.key() == key
        # byte for byte what the worker's own client library (aiokafka) read
        assert value == live.values[document["id"]]
    assert set(ids.values()) == {1} and set(ids) == set(live.values)


def test_librdkafka_consumer_group_resumes_exactly_after_its_commit(live: Live):
    topic = live.output
    group = f"outside-group-{uuid.uuid4().hex[:8]}"
    everything = live.positions
    numbers = sorted({p for p, _ in everything})
    half = len(everything) // 2

    first = consumer(live, group)
    try:
        first.subscribe([topic])
        read_first = poll_until(first, lambda got: len(got) >= half, 45, "first member")
        assert first.commit(asynchronous=False), "the commit returned no offsets"
        committed = {
            tp.partition: tp.offset
            for tp in first.committed([TopicPartition(topic, p) for p in numbers], timeout=10)
        }
    finally:
        first.close()
    first_positions = {(m.partition(), m.offset()) for m in read_first}
    assert len(first_positions) == len(read_first) == half
    for p in numbers:
        offsets = [o for q, o in first_positions if q == p]
        if offsets:
            assert committed[p] == max(offsets) + 1, f"partition {p}: committed {committed[p]}"
        else:
            assert committed[p] < 0, f"partition {p}: nothing read but {committed[p]} committed"

    second = consumer(live, group)
    try:
        second.subscribe([topic])
        rest = len(everything) - half
        read_second = poll_until(second, lambda got: len(got) >= rest, 45, "second member")
        read_second += drain(second, 1.0)
    finally:
        second.close()
    second_positions = [(m.partition(), m.offset()) for m in read_second]
    twice = first_positions & set(second_positions)
    assert not twice, f"read twice: {sorted(twice)[:10]}"
    assert len(second_positions) == len(set(second_positions)), "the second member repeated"
    skipped = everything - first_positions - set(second_positions)
    assert not skipped, f"skipped: {sorted(skipped)[:10]}"
    for p in numbers:
        resumed = min((o for q, o in second_positions if q == p), default=None)
        start = min(o for q, o in everything if q == p)
        if resumed is not None:
            assert resumed == (committed[p] if committed[p] >= 0 else start), (p, resumed)
    print(
        f"\ngroup: first member read {half} and committed {committed}; the second resumed"
        f" there and read {len(second_positions)}"
    )


# --- kcat ---------------------------------------------------------------------------------


def parse_kcat_headers(text: str) -> dict[str, str]:
    """kcat's ``%h``: ``name=value`` pairs separated by commas (our values hold neither)."""
    pairs = [item.partition("=") for item in text.split(",")] if text else []
    return {name: value for name, _, value in pairs}


@pytest.mark.skipif(
    shutil.which("kcat") is None,
    reason=(
        "kcat is not installed: apt-get install -y kcat (Debian/Ubuntu), brew install kcat (macOS)"
    ),
)
def test_kcat_reads_every_document_with_its_headers(live: Live):
    kcat = shutil.which("kcat")
    assert kcat is not None
    command = [kcat, "-b", live.kafka.bootstrap, "-t", live.output, "-C", "-e", "-f", KCAT_FORMAT]
    result = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    lines = result.stdout.decode("utf-8").splitlines()
    print(f"\nkcat: {len(lines)} lines; the first: {lines[0] if lines else None}")
    assert len(lines) == RECORDS, result.stderr.decode(errors="replace")[-2000:]
    seen = Counter()
    for line in lines:
        header_text, tab, value = line.partition("\t")
        assert tab, f"no tab in kcat's line: {line[:200]}"
        document = json.loads(value)
        seen[document["id"]] += 1
        headers = parse_kcat_headers(header_text)
        assert headers == {name: document[name] for name in HEADERS}, header_text
        assert value.encode("utf-8") == live.values[document["id"]]
    assert set(seen) == set(live.values) and set(seen.values()) == {1}

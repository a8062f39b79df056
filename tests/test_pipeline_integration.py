"""Raw topic → dedupe → enrich/route → output, on a real broker with real worker processes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from streamapp.core.models import RawEnvelope
from tests.kafka_harness import REPO, Kafka, Worker, create_topics, read_topic

pytestmark = pytest.mark.broker

GOLDEN = REPO / "tests" / "golden"
PARTITIONS = 4


def pipeline_env(kafka: Kafka, **extra: str) -> dict[str, str]:
    # no source: the worker runs the stream agents only; the poller says it has nothing to poll
    env = {**kafka.env(), "STREAMAPP_PARTITIONS": str(PARTITIONS)}
    env.update(extra)
    return env


def envelope(record: bytes, source: str = "pagerduty") -> bytes:
    return msgspec.json.encode(
        RawEnvelope(source_name=source, polled_at=datetime.now(UTC), record=msgspec.Raw(record))
    )


async def produce(kafka: Kafka, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(kafka.topic("pagerduty_audit_logs_raw"), value, key=key)
            for key, value in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def prepare_raw_topic(kafka: Kafka) -> None:
    # agents' input topics must exist with their partitions before anything is produced
    await create_topics(kafka.bootstrap, {kafka.topic("pagerduty_audit_logs_raw"): PARTITIONS})


def strip_volatile(document: dict) -> dict:
    return {k: v for k, v in document.items() if k != "ingested_at"}


async def test_every_spec_example_becomes_its_golden_output_document(kafka: Kafka, tmp_path: Path):
    inputs = sorted((GOLDEN / "inputs").glob("*.json"))
    await prepare_raw_topic(kafka)
    raw_by_id = {}
    messages = []
    for path in inputs:
        record = path.read_bytes().strip()
        record_id = json.loads(record)["id"]
        raw_by_id[record_id] = (path.name, record)
        messages.append((record_id.encode(), envelope(record)))
    await produce(kafka, messages)
    worker = Worker(pipeline_env(kafka), tmp_path / "worker.log").start()
    try:
        out = await kafka.read("pagerduty_audit_logs", until_count=len(inputs), timeout=90)
    finally:
        worker.stop()
    schema = json.loads((REPO / "schemas" / "pagerduty_audit_logs.schema.json").read_text())
    assert len(out) == len(inputs)
    for message in out:
        document = json.loads(message.value)
        name, record = raw_by_id[document["id"]]
        golden = json.loads((GOLDEN / name).read_text())
        assert strip_volatile(document) == strip_volatile(golden), name
        jsonschema.validate(document, schema)
        # raw is byte-exact inside the document
        assert record in message.value
        headers = dict(message.headers)
        for header in ("source_name", "action", "resource_type", "category"):
            assert headers[header].decode() == document[header]


async def test_same_id_three_times_and_a_replayed_window_give_one_output_each(
    kafka: Kafka, tmp_path: Path
):
    await prepare_raw_topic(kafka)
    records = [p.read_bytes().strip() for p in sorted((GOLDEN / "inputs").glob("*.json"))]
    ids = [json.loads(r)["id"].encode() for r in records]
    first = [(i, envelope(r)) for i, r in zip(ids, records, strict=True)]
    await produce(kafka, first * 3)  # the same ids three times
    worker = Worker(pipeline_env(kafka), tmp_path / "worker.log").start()
    try:
        await kafka.read("pagerduty_audit_logs", until_count=len(ids), timeout=90)
        await produce(kafka, first)  # the poller repeating a window later
        await asyncio.sleep(3)
        out = await kafka.read("pagerduty_audit_logs", until_count=len(ids), timeout=30, idle=3)
    finally:
        worker.stop()
    counts = Counter(json.loads(m.value)["id"] for m in out)
    assert sorted(counts) == sorted(i.decode() for i in ids)
    assert set(counts.values()) == {1}


async def test_garbage_goes_to_the_dead_letter_topic_with_reason_and_bytes(
    kafka: Kafka, tmp_path: Path
):
    await prepare_raw_topic(kafka)
    good = (GOLDEN / "inputs" / "team_create.json").read_bytes().strip()
    garbage = [
        (b"k1", b"\xff\xfe not json at all"),
        (b"k2", b'{"source_name": "x", "polled_at": "2026-01-01T00:00:00Z", "record": {"id": 5}}'),
        (b"k3", envelope(b'{"id": "abc", "execution_time": "yesterday"}')),
        (None, envelope(good[: len(good) // 2] + b"}")),
    ]
    await produce(kafka, [*garbage, (b"PDRECORDID1_TEAM_CREATED", envelope(good))])
    worker = Worker(pipeline_env(kafka), tmp_path / "worker.log").start()
    try:
        dead = await kafka.read("pagerduty_audit_logs_dlq", until_count=len(garbage), timeout=90)
        out = await kafka.read("pagerduty_audit_logs", until_count=1, timeout=30)
    finally:
        worker.stop()
    assert len(out) == 1
    assert len(dead) == len(garbage)
    schema = json.loads((REPO / "schemas" / "pagerduty_audit_logs_dlq.schema.json").read_text())
    originals = set()
    for message in dead:
        letter = json.loads(message.value)
        jsonschema.validate(letter, schema)
        assert letter["reason"] and "\n" not in letter["reason"]
        from streamapp.core.deadletter import DeadLetter, original_bytes

        originals.add(original_bytes(msgspec.json.decode(message.value, type=DeadLetter)))
    assert originals == {value for _, value in garbage}
    assert "Traceback" not in worker.log()


async def test_numbered_backlog_survives_restart_rebalance_and_sigkill(
    kafka: Kafka, tmp_path: Path
):
    """A numbered backlog, a second worker joining (rebalance), the first SIGKILLed, then
    restarted: every raw record must reach the output. broker.md describes faust skipping
    offsets in exactly this situation; the pipeline reads skipped ranges itself."""
    total = 20000
    await prepare_raw_topic(kafka)
    template = json.loads((GOLDEN / "inputs" / "team_create.json").read_bytes())
    messages = []
    for n in range(total):
        record = dict(template, id=f"rec-{n:06d}")
        raw = json.dumps(record).encode()
        messages.append((record["id"].encode(), envelope(raw)))
    await produce(kafka, messages)
    env = pipeline_env(kafka)
    a = Worker(env, tmp_path / "a.log", name="a").start()
    b = Worker(env, tmp_path / "b.log", name="b")
    a2 = Worker(env, tmp_path / "a2.log", name="a2")
    output = kafka.topic("pagerduty_audit_logs")
    try:
        await a.await_log("worker ready", timeout=60)
        b.start()  # rebalance while a has a backlog
        await b.await_log("worker ready", timeout=60)
        await asyncio.sleep(1.0)
        a.kill()
        a2.start()  # restart: another rebalance with the killed worker's partitions pending
        out = await read_topic(kafka.bootstrap, output, until_count=total, timeout=240, idle=5)
    finally:
        for worker in (a, b, a2):
            worker.stop()
    counts = Counter(json.loads(m.value)["id"] for m in out)
    lost = total - len(counts)
    duplicates = sum(counts.values()) - len(counts)
    gap_lines = sum(w.log().count("the stream skipped offsets") for w in (a, b, a2))
    print(
        f"\nbacklog {total}: lost={lost} duplicates={duplicates} skipped-range repairs={gap_lines}"
    )
    assert lost == 0


async def test_rocksdb_store_routes_ocsf_and_expiry_keep_only_recent_ids(
    kafka: Kafka, tmp_path: Path
):
    """The production options together: RocksDB state, routing rules, the OCSF topic, and a
    short dedupe retention after which the table holds only recent ids."""
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[routes]]\ntopic = "{kafka.topic("pagerduty_audit_logs")}.user_access"\n'
        'category = ["user_access"]\n'
    )
    env = pipeline_env(
        kafka,
        STREAMAPP_STORE="rocksdb://",
        STREAMAPP_DATA_DIR=str(tmp_path / "state"),
        STREAMAPP_DEDUPE_RETENTION="10s",
        STREAMAPP_ROUTES_FILE=str(routes),
        STREAMAPP_OCSF="true",
        STREAMAPP_TOPIC_OCSF=kafka.topic("pagerduty_audit_logs.ocsf"),
    )
    await prepare_raw_topic(kafka)
    inputs = [p.read_bytes().strip() for p in sorted((GOLDEN / "inputs").glob("*.json"))]
    old = [(json.loads(r)["id"].encode(), envelope(r)) for r in inputs]
    template = json.loads(inputs[0])
    recent = []
    for n in range(5):
        record = json.dumps(dict(template, id=f"recent-{n}")).encode()
        recent.append((f"recent-{n}".encode(), envelope(record)))
    changelog = f"{kafka.app_id}-seen-changelog"
    await produce(kafka, old)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        out = await kafka.read("pagerduty_audit_logs", until_count=len(old), timeout=90)
        ocsf = await kafka.read("pagerduty_audit_logs.ocsf", until_count=len(old), timeout=30)
        routed = await read_topic(
            kafka.bootstrap, kafka.topic("pagerduty_audit_logs") + ".user_access", timeout=10
        )
        await worker.await_log("dedupe: forgot", timeout=60)
        await produce(kafka, recent)
        await kafka.read("pagerduty_audit_logs", until_count=len(old) + len(recent), timeout=30)
        await asyncio.sleep(2)
        entries = await read_topic(kafka.bootstrap, changelog, timeout=30, idle=2)
    finally:
        worker.stop()
    assert len(out) == len(old)
    assert {json.loads(m.value)["metadata"]["uid"] for m in ocsf} == {k.decode() for k, _ in old}
    user_access = [
        json.loads(m.value) for m in out if dict(m.headers)["category"] == b"user_access"
    ]
    assert routed and len(routed) == len(user_access)
    latest: dict[bytes, bytes | None] = {}
    for entry in entries:
        latest[entry.key] = entry.value
    held = {key for key, value in latest.items() if value is not None}
    assert held == {key for key, _ in recent}, "after expiry only the recent ids remain"
    assert "rocksdb" in worker.log().lower()

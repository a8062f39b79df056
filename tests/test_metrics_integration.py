"""``/metrics`` on a running worker reports what was actually produced."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamapp.devtools.broker import free_port
from streamapp.devtools.simulator import SimulatorThread, generate_records
from tests.kafka_harness import Kafka, Worker
from tests.receiver import ReceiverThread

pytestmark = pytest.mark.broker

TOKEN = "metrics-token-0123456789abcdef"


async def produce_raw(kafka: Kafka, key: bytes, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(kafka.topic("pagerduty_audit_logs_raw"), value, key=key)
    finally:
        await producer.stop()


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(streamapp_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


async def test_metrics_match_what_was_produced(kafka: Kafka, tmp_path: Path):
    now = datetime.now(UTC)
    records = generate_records(
        250, start=now - timedelta(hours=5), end=now - timedelta(minutes=10), seed=8
    )
    no_id = dict(records[1], id="")  # the client sets records without an id aside
    no_method = dict(records[0], id="no-method-record")
    del no_method["method"]
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim, ReceiverThread() as receiver:
        sim.add_records([*records, no_id, no_method])
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        sources = tmp_path / "sources.toml"
        sources.write_text(
            "[[sources]]\n"
            'name = "acme"\n'
            f'token_file = "{token_file}"\n'
            f'api_url = "{sim.base_url}"\n'
            'poll_interval = "60s"\nlookback = "6h"\nhealth_check = "70s"\n'
            "[[sources.notifications]]\n"
            'type = "webhook"\nname = "soc"\n'
            f'url = "{receiver.url("/ok/hook")}"\n'
        )
        port = free_port()
        env = {
            **kafka.env(),
            "STREAMAPP_SOURCES_FILE": str(sources),
            "STREAMAPP_PARTITIONS": "2",
            "STREAMAPP_WEB_PORT": str(port),
        }
        worker = Worker(env, tmp_path / "worker.log")
        worker.start()  # STREAMAPP_WEB_PORT set: the harness starts the web server on it
        try:
            out = await kafka.read("pagerduty_audit_logs", until_count=len(records), timeout=90)
            dead = await kafka.read("pagerduty_audit_logs_dlq", until_count=2, timeout=30)
            # a replay of one record, as a repeated window would send it
            first = next(
                m
                for m in await kafka.read(
                    "pagerduty_audit_logs_raw", until_count=2, timeout=30, idle=0
                )
                if m.key != b"no-method-record"
            )
            await produce_raw(kafka, first.key, first.value)
            await asyncio.sleep(2)
            raw = await kafka.read("pagerduty_audit_logs_raw", timeout=30, idle=1)
            for _ in range(100):  # the stale alert, delivered to the webhook
                if receiver.bodies("/ok/hook"):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)
            metrics = await asyncio.to_thread(scrape, port)
            requests = [r for r in sim.requests if r.path == "/audit/records"]
        finally:
            worker.stop()
    source = '{source="acme"}'
    assert len(out) == len(records) and len(dead) == 2
    replayed = 1
    # the record without an id travels on the raw topic too (rejected, keyed dlq:sha256:...)
    assert metrics[f"streamapp_records_polled_total{source}"] == len(raw) - replayed
    assert metrics[f"streamapp_records_emitted_total{source}"] == len(out)
    # everything on the raw topic was emitted, dead-lettered (2) or dropped as a repeat
    assert metrics[f"streamapp_records_deduplicated_total{source}"] == len(raw) - len(out) - 2
    assert metrics[f"streamapp_records_deduplicated_total{source}"] >= replayed
    assert metrics['streamapp_records_dead_lettered_total{source="acme",stage="poll"}'] == 1
    assert metrics['streamapp_records_dead_lettered_total{source="acme",stage="pipeline"}'] == 1
    assert metrics['streamapp_api_requests_total{source="acme",status="200"}'] == len(requests)
    assert metrics['streamapp_polls_total{outcome="ok",source="acme"}'] == 1
    assert metrics[f"streamapp_poll_duration_seconds_count{source}"] == 1
    assert 0 <= metrics[f"streamapp_checkpoint_lag_seconds{source}"] < 60
    assert [b["kind"] for b in receiver.bodies("/ok/hook")] == ["source_stale"]
    assert metrics['streamapp_notifications_sent_total{channel="soc"}'] == 1
    assert json.loads(dead[0].value)["reason"]

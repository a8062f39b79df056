"""Detections end to end: the simulator, a real broker, worker processes killed and restarted.

A burst of deletions split by a SIGKILL still makes exactly one finding: the rule's state
(the deletions counted so far) is durable in its changelog before the worker dies, and the
findings of one-record rules arrive with the records themselves.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamapp.devtools.simulator import SimulatorThread
from tests.kafka_harness import Kafka, Worker, read_topic

pytestmark = pytest.mark.broker

TOKEN = "detect-token-0123456789abcdef"


def deletion(n: int, at: datetime, kind: str = "team") -> dict:
    return {
        "id": f"del-{kind}-{n:03d}",
        "execution_time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "execution_context": {"request_id": f"req-{n}", "remote_address": "203.0.113.7"},
        "actors": [{"id": "PMALLORY", "type": "user_reference", "summary": "Mallory"}],
        "method": {"type": "api_token", "truncated_token": "x9z1"},
        "root_resource": {"id": f"P{kind.upper()}{n:03d}", "type": f"{kind}_reference"},
        "action": "delete",
    }


def worker_env(kafka: Kafka, url: str) -> dict[str, str]:
    return {
        **kafka.env(),
        "PAGERDUTY_API_TOKEN": TOKEN,
        "PAGERDUTY_API_URL": url,
        "PAGERDUTY_SOURCE_NAME": "acme",
        "PAGERDUTY_POLL_INTERVAL": "1",
        "PAGERDUTY_LOOKBACK": "1h",
        "PAGERDUTY_POLL_OVERLAP": "10m",
        "STREAMAPP_PARTITIONS": "2",
        "STREAMAPP_TOPIC_FINDINGS": kafka.topic("pagerduty_audit_findings"),
    }


async def findings(kafka: Kafka, rule: str, *, expect: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        messages = await kafka.read("pagerduty_audit_findings", timeout=10, idle=1.0)
        found = [json.loads(m.value) for m in messages]
        if sum(f["rule_id"] == rule for f in found) >= expect:
            break
        await asyncio.sleep(0.5)
    return [f for f in found if f["rule_id"] == rule]


async def state_written(kafka: Kafka, rule: str, timeout: float) -> None:
    """Until the rule's state for the actor is in its changelog (durable before a kill)."""
    topic = f"{kafka.app_id}-detect-state-changelog"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = await read_topic(kafka.bootstrap, topic, timeout=5, idle=0.5)
        if any(rule.encode() in (m.key or b"") and m.value for m in entries):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"no state of {rule} in {topic} within {timeout}s")


async def test_a_burst_of_deletions_split_by_a_sigkill_makes_exactly_one_finding(
    kafka: Kafka, tmp_path: Path
):
    now = datetime.now(UTC)
    first = [deletion(n, now - timedelta(minutes=5) + timedelta(seconds=n)) for n in range(6)]
    second = [deletion(n, now - timedelta(minutes=3) + timedelta(seconds=n)) for n in range(6, 12)]
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim:
        sim.add_records(first)
        env = worker_env(kafka, sim.base_url)
        worker = Worker(env, tmp_path / "worker-1.log").start()
        try:
            out = await kafka.read("pagerduty_audit_logs", until_count=6, timeout=90)
            assert len(out) == 6
            await state_written(kafka, "deletion_burst", timeout=60)
        finally:
            worker.kill()  # SIGKILL: no goodbye, no flush
        assert await findings(kafka, "deletion_burst", expect=1, timeout=3) == []

        sim.add_records(second)
        worker = Worker(env, tmp_path / "worker-2.log").start()
        try:
            burst = await findings(kafka, "deletion_burst", expect=1, timeout=120)
            await asyncio.sleep(3)  # a second finding would come now, if any
            burst = await findings(kafka, "deletion_burst", expect=2, timeout=3)
        finally:
            worker.stop()
    assert len(burst) == 1, burst
    [found] = burst
    assert found["source_name"] == "acme" and found["severity"] == "high"
    assert found["attack"]["id"] == "T1485"
    assert found["actor"]["id"] == "PMALLORY"
    assert len(found["record_ids"]) >= 10
    assert set(found["record_ids"]) <= {r["id"] for r in first + second}
    assert "Mallory" in found["summary"]

"""Source health end to end: the simulator, a real broker, worker processes, a local
HTTP receiver standing in for webhook, Slack and PagerDuty Events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamapp.devtools.simulator import SimulatorThread, generate_records
from tests.helpers import fresh_record, toml_document
from tests.kafka_harness import Kafka, Worker
from tests.receiver import ReceiverThread

pytestmark = pytest.mark.broker

TOKEN = "health-token-abcdef0123456789"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef"


def sources_file(
    tmp_path: Path, sim_url: str, channels: list[dict[str, str]], **settings: str
) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    options = {"poll_interval": "1s", "lookback": "6h", "health_check": "1h", **settings}
    source = {"name": "acme", "token_file": str(token_file), "api_url": sim_url, **options}
    path = tmp_path / "sources.toml"
    path.write_text(toml_document(sources=[{**source, "notifications": channels}]))
    return path


def channels(
    receiver: ReceiverThread, webhook: str = "/ok/hook", slack: str = "/ok/slack"
) -> list[dict[str, str]]:
    """A webhook, a Slack and a PagerDuty channel, all posting to ``receiver``."""
    return [
        {"type": "webhook", "name": "ops-hook", "url": receiver.url(webhook)},
        {"type": "slack", "name": "ops-slack", "url": receiver.url(slack)},
        {
            "type": "pagerduty",
            "name": "oncall",
            "routing_key": ROUTING_KEY,
            "events_url": receiver.url("/ok/pd"),
        },
    ]


def env_for(kafka: Kafka, path: Path) -> dict[str, str]:
    return {**kafka.env(), "STREAMAPP_SOURCES_FILE": str(path), "STREAMAPP_PARTITIONS": "2"}


async def notifications(kafka: Kafka, expect: int = 0, timeout: float = 30) -> list[dict]:
    messages = await kafka.read(
        "notifications", until_count=expect or None, timeout=timeout, idle=1.0
    )
    return [json.loads(m.value) for m in messages]


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def kinds(notes: list[dict]) -> list[str]:
    return [n["kind"] for n in notes]


async def test_revoked_token_alerts_once_across_restart_then_recovers(kafka: Kafka, tmp_path: Path):
    now = datetime.now(UTC)
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim, ReceiverThread() as receiver:
        sim.add_records(generate_records(20, start=now - timedelta(hours=1), end=now, seed=1))
        path = sources_file(tmp_path, sim.base_url, channels(receiver))
        first = Worker(env_for(kafka, path), tmp_path / "first.log", name="first").start()
        second = Worker(env_for(kafka, path), tmp_path / "second.log", name="second")
        try:
            await first.await_log("poll source=acme", timeout=60)
            polls = first.log().count("poll source=acme")
            sim.set_token_state(TOKEN, "revoked")
            # within two polls of the revocation
            await first.await_log("poll source=acme", count=polls + 2, timeout=30)
            notes = await notifications(kafka, expect=1)
            assert kinds(notes) == ["source_error"]
            assert "wrong or revoked token, or wrong region" in notes[0]["message"]
            await wait_until(lambda: len(receiver.bodies("/ok/hook")) >= 1, 30, "the webhook")
            await wait_until(lambda: len(receiver.bodies("/ok/pd")) >= 1, 30, "PagerDuty")
            # a restart while the problem persists repeats no alert
            first.stop()
            second.start()
            await second.await_log("poll source=acme", count=3, timeout=60)
            assert kinds(await notifications(kafka)) == ["source_error"]
            sim.set_token_state(TOKEN, "ok")
            notes = await notifications(kafka, expect=2)
            assert kinds(notes) == ["source_error", "source_recovered"]
            await wait_until(lambda: len(receiver.bodies("/ok/pd")) >= 2, 30, "the resolve")
        finally:
            first.stop()
            second.stop()
        logs = first.log() + second.log()
    webhook = receiver.bodies("/ok/hook")
    assert [b["kind"] for b in webhook] == ["source_error", "source_recovered"]
    slack = receiver.bodies("/ok/slack")
    assert len(slack) == 2 and all("text" in b for b in slack)
    trigger, resolve = receiver.bodies("/ok/pd")
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["routing_key"] == ROUTING_KEY
    everything = logs + json.dumps(webhook) + json.dumps(slack)
    assert TOKEN not in everything
    assert ROUTING_KEY not in logs
    assert receiver.url("/ok/hook") not in logs


async def test_paused_records_go_stale_and_recover_without_repeats_across_failover(
    kafka: Kafka, tmp_path: Path
):
    now = datetime.now(UTC)
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim, ReceiverThread() as receiver:
        sim.add_records(generate_records(5, start=now - timedelta(minutes=2), end=now, seed=2))
        path = sources_file(tmp_path, sim.base_url, channels(receiver), health_check="4s")
        env = env_for(kafka, path)
        a = Worker(env, tmp_path / "a.log", name="a").start()
        b = Worker(env, tmp_path / "b.log", name="b").start()
        try:
            # the newest record is about two minutes old: older than 4 s, so stale
            notes = await notifications(kafka, expect=1, timeout=60)
            assert kinds(notes) == ["source_stale"]
            leader = a if "poll source=acme" in a.log() else b
            other = b if leader is a else a
            leader.kill()
            await other.await_log("poll source=acme", count=3, timeout=60)
            assert kinds(await notifications(kafka)) == ["source_stale"]
            fresh = generate_records(
                1, start=datetime.now(UTC) - timedelta(seconds=1), end=datetime.now(UTC), seed=3
            )
            sim.add_records(fresh)
            notes = await notifications(kafka, expect=2, timeout=60)
            assert kinds(notes) == ["source_stale", "source_recovered"]
            assert notes[1]["resolves"] == "source_stale"
        finally:
            a.stop()
            b.stop()


async def test_failing_and_hanging_channels_do_not_slow_the_records(kafka: Kafka, tmp_path: Path):
    now = datetime.now(UTC)
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim, ReceiverThread() as receiver:
        sim.add_records(generate_records(5, start=now - timedelta(minutes=5), end=now, seed=4))
        path = sources_file(
            tmp_path,
            sim.base_url,
            channels(receiver, webhook="/fail/hook", slack="/hang/slack"),
            health_check="3s",
        )
        worker = Worker(env_for(kafka, path), tmp_path / "w.log").start()
        try:
            await notifications(kafka, expect=1, timeout=60)  # stale: the channels start failing
            delays = []
            for i in range(4):
                fresh = fresh_record(seed=10 + i)
                sim.add_records([fresh])
                added = time.monotonic()
                out = await kafka.read(
                    "pagerduty_audit_logs", until_count=6 + i, timeout=30, idle=0
                )
                assert fresh["id"] in {json.loads(m.value)["id"] for m in out}
                delays.append(time.monotonic() - added)
            await wait_until(lambda: len(receiver.bodies("/fail/hook")) >= 2, 30, "retries")
        finally:
            worker.stop()
    print(f"\nrecord delays with failing channels: {[f'{d:.2f}s' for d in delays]}")
    assert max(delays) < 1 + 5  # poll interval + slack for a loaded machine
    assert receiver.bodies("/hang/slack"), "the hanging channel was tried"

"""Delivery to a real local HTTP receiver: payloads, retries, timeouts, and no leaked secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web

from streamapp.config import Channel
from streamapp.core.health import Notification, encode_notification, notification
from streamapp.core.redact import Secret
from streamapp.notify.channels import (
    Deliverer,
    DeliveryResult,
    dedup_key,
    pagerduty_event,
    slack_payload,
    webhook_payload,
)

SLACK_PATH = "/services/T0SECRET1/B0SECRET2/xoxSecretToken123"
HOOK_PATH = "/hooks/abcdef0123456789"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
AT = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)

ERROR = Notification(
    kind="source_error",
    source_name="acme",
    message="source 'acme' cannot read audit records: PagerDuty refused the API token (401)",
    at=AT,
    severity="critical",
    error_kind="unauthorized",
    http_status=401,
    details={"consecutive_failures": 1, "last_record_at": None},
)
#: the recovery from ERROR, at the severity the health rules give it
RECOVERED = notification(
    "source_recovered",
    ERROR.source_name,
    at=AT,
    message="source 'acme' recovered from source_error: polling PagerDuty succeeds again",
    resolves=ERROR.kind,
)


@dataclass
class Receiver:
    """Records every request; answers from ``script`` (then ``default``)."""

    base_url: str = ""
    script: list[str] = field(default_factory=list)
    default: str = "200"
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    retry_after: str | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, body))
        action = self.script.pop(0) if self.script else self.default
        if action == "hang":
            # hangs until the test ends (then answers, so the server shuts down at once)
            await self.released.wait()
            return web.Response(status=200)
        status = int(action)
        headers = {"Retry-After": self.retry_after} if status == 429 and self.retry_after else {}
        # a careless receiver that echoes what it got, URL and key included
        text = f"error at {request.path} for {json.dumps(body)}" if status >= 400 else "ok"
        return web.Response(status=status, text=text, headers=headers)

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]  # the port the system chose
    recv.base_url = f"http://127.0.0.1:{port}"
    try:
        yield recv
    finally:
        recv.released.set()
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class NoSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def webhook(recv: Receiver, name: str = "ops") -> Channel:
    return Channel(kind="webhook", name=name, url=Secret(recv.url(HOOK_PATH)))


def slack(recv: Receiver) -> Channel:
    return Channel(kind="slack", name="alerts", url=Secret(recv.url(SLACK_PATH)))


def pagerduty(recv: Receiver) -> Channel:
    return Channel(
        kind="pagerduty",
        name="oncall",
        routing_key=Secret(ROUTING_KEY),
        events_url=recv.url("/v2/enqueue"),
    )


def assert_no_secret(text: str, recv: Receiver) -> None:
    for secret in (HOOK_PATH, SLACK_PATH, ROUTING_KEY, "xoxSecretToken123", "abcdef0123456789"):
        assert secret not in text


# --------------------------------------------------------------------------- payloads


def test_pagerduty_event_shapes() -> None:
    trigger = pagerduty_event(ERROR, "key")
    assert trigger == {
        "routing_key": "key",
        "event_action": "trigger",
        "dedup_key": "streamapp/acme/source_error",
        "payload": {
            "summary": ERROR.message,
            "source": "streamapp:acme",
            "severity": "critical",
            "timestamp": "2026-03-01T12:00:05.000Z",
            "component": "pagerduty-audit",
            "group": "acme",
            "class": "source_error",
            "custom_details": {
                "message": ERROR.message,
                "at": "2026-03-01T12:00:05.000Z",
                "error_kind": "unauthorized",
                "http_status": 401,
                "consecutive_failures": 1,
                "last_record_at": None,
            },
        },
    }
    resolve = pagerduty_event(RECOVERED, "key")
    assert resolve == {
        "routing_key": "key",
        "event_action": "resolve",
        "dedup_key": dedup_key("acme", "source_error"),
    }


def test_pagerduty_summary_is_capped_at_1024_characters() -> None:
    long = Notification(
        kind="source_stale", source_name="a", message="x" * 2000, at=AT, severity="warning"
    )
    assert len(pagerduty_event(long, "k")["payload"]["summary"]) == 1024


def test_slack_payload_has_text_and_one_section_with_emoji() -> None:
    payload = slack_payload(ERROR)
    assert payload["text"].startswith(":rotating_light: source 'acme'")
    (block,) = payload["blocks"]
    assert block["type"] == "section"
    assert block["text"]["type"] == "mrkdwn"
    assert "*source_error* on `acme`" in block["text"]["text"]
    assert slack_payload(RECOVERED)["text"].startswith(":white_check_mark:")
    escaped = slack_payload(
        Notification(kind="source_stale", source_name="a", message="<b>&", at=AT, severity="info")
    )
    assert "&lt;b&gt;&amp;" in escaped["text"]


# --------------------------------------------------------------------------- delivery


async def test_webhook_body_is_the_notification_document(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    deliverer = Deliverer(http)
    result = await deliverer.deliver(webhook(receiver), ERROR)
    assert result == DeliveryResult(ok=True, attempts=1, status=200)
    ((path, body),) = receiver.requests
    assert path == HOOK_PATH
    assert body == json.loads(encode_notification(ERROR)) == webhook_payload(ERROR)
    assert body["at"] == "2026-03-01T12:00:05Z"
    assert deliverer.sent["ops"] == 1
    assert deliverer.failed["ops"] == 0


async def test_slack_channel_receives_the_slack_payload(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    result = await Deliverer(http).deliver(slack(receiver), ERROR)
    assert result.ok
    ((path, body),) = receiver.requests
    assert path == SLACK_PATH
    assert body == slack_payload(ERROR)


async def test_pagerduty_trigger_then_resolve_share_the_dedup_key(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    receiver.default = "202"
    deliverer = Deliverer(http)
    channel = pagerduty(receiver)
    assert (await deliverer.deliver(channel, ERROR)).ok
    assert (await deliverer.deliver(channel, RECOVERED)).ok
    (path1, trigger), (path2, resolve) = receiver.requests
    assert path1 == path2 == "/v2/enqueue"
    assert trigger["event_action"] == "trigger"
    assert resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "streamapp/acme/source_error"
    assert trigger["routing_key"] == resolve["routing_key"] == ROUTING_KEY
    assert deliverer.sent["oncall"] == 2


async def test_500_is_retried_then_counted_failed(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    receiver.default = "500"
    sleep = NoSleep()
    deliverer = Deliverer(http, attempts=3, base_delay=1.0, max_delay=1.5, sleep=sleep)
    result = await deliverer.deliver(webhook(receiver), ERROR)
    assert not result.ok
    assert result.attempts == 3
    assert result.status == 500
    assert result.error is not None
    assert result.error.startswith("webhook 'ops' answered 500")
    assert result.error.endswith("gave up after 3 attempt(s)")
    assert len(receiver.requests) == 3
    assert len(sleep.delays) == 2
    assert all(0 <= d <= 1.5 for d in sleep.delays)  # jittered, capped
    assert deliverer.failed["ops"] == 1
    assert deliverer.sent["ops"] == 0


async def test_5xx_then_success_is_delivered(receiver: Receiver, http: httpx.AsyncClient) -> None:
    receiver.script = ["503", "502"]
    deliverer = Deliverer(http, sleep=NoSleep())
    result = await deliverer.deliver(webhook(receiver), ERROR)
    assert result == DeliveryResult(ok=True, attempts=3, status=200)
    assert deliverer.sent["ops"] == 1


async def test_4xx_other_than_429_is_final(receiver: Receiver, http: httpx.AsyncClient) -> None:
    receiver.default = "404"
    sleep = NoSleep()
    result = await Deliverer(http, sleep=sleep).deliver(slack(receiver), ERROR)
    assert not result.ok
    assert result.attempts == 1
    assert result.status == 404
    assert sleep.delays == []
    assert result.error is not None
    assert result.error.startswith("slack 'alerts' answered 404 (says: error at ****")


async def test_429_honours_retry_after(receiver: Receiver, http: httpx.AsyncClient) -> None:
    receiver.script = ["429"]
    receiver.retry_after = "7"
    sleep = NoSleep()
    result = await Deliverer(http, sleep=sleep).deliver(pagerduty(receiver), ERROR)
    assert result.ok
    assert result.attempts == 2
    assert sleep.delays == [7.0]


async def test_hanging_receiver_is_bounded_by_the_timeout(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    receiver.default = "hang"
    deliverer = Deliverer(http, attempts=2, base_delay=0.0, timeout=0.3)
    started = time.monotonic()
    result = await deliverer.deliver(webhook(receiver), ERROR)
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 * 2 + 0.5
    assert not result.ok
    assert result.attempts == 2
    assert result.status is None
    assert result.error == "webhook 'ops' did not answer within 0.3s; gave up after 2 attempt(s)"


async def test_unreachable_channel_names_the_error_class(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = Channel(kind="slack", name="x", url=Secret(f"http://127.0.0.1:{port}{SLACK_PATH}"))
    result = await Deliverer(http, attempts=2, sleep=NoSleep()).deliver(channel, ERROR)
    assert not result.ok
    assert result.error == "slack 'x' unreachable (ConnectError); gave up after 2 attempt(s)"


async def test_channel_without_url_or_key_is_a_failure_not_an_exception(
    http: httpx.AsyncClient,
) -> None:
    deliverer = Deliverer(http)
    result = await deliverer.deliver(Channel(kind="pagerduty", name="pd"), ERROR)
    assert result == DeliveryResult(ok=False, attempts=0, error="pagerduty 'pd' has no routing_key")
    assert deliverer.failed["pd"] == 1


async def test_url_and_routing_key_never_in_errors_or_logs(
    receiver: Receiver, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sleep = NoSleep()
    deliverer = Deliverer(http, attempts=2, timeout=0.3, sleep=sleep)
    results: list[DeliveryResult] = []
    for script in (["200"], ["500", "500"], ["403"], ["429", "hang"], ["hang", "404"]):
        for make in (webhook, slack, pagerduty):
            receiver.script = list(script)
            results.append(await deliverer.deliver(make(receiver), ERROR))
    assert any(r.ok for r in results)
    assert any(not r.ok for r in results)
    # the careless receiver echoed the path and key; the quote of its body masks them
    assert any(r.error and "(says: error at ****" in r.error for r in results)
    for result in results:
        assert_no_secret(repr(result), receiver)
    assert caplog.records, "expected httpx and delivery log lines"
    assert any(r.name == "httpx" for r in caplog.records)
    assert_no_secret(caplog.text, receiver)
    for record in caplog.records:
        assert_no_secret(record.getMessage(), receiver)

"""The watchdog: per-source health state, alerts on the notifications topic, and delivery.

Thin faust shell around the pure rules of ``streamapp.core.health``:

- the poller reports each poll's outcome (``poll_succeeded`` / ``poll_failed``); a ticker on
  the leader checks staleness; every change of state is one notification;
- state lives in the global ``health`` table (a changelog), so a restart or failover
  neither forgets an open problem nor repeats its alert;
- the ``deliver`` agent sends each notification to the source's channels (webhook, Slack,
  PagerDuty Events v2) with retries; channels are independent of the record pipeline, so a
  failing or hanging one delays nothing but its own deliveries.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import faust
import httpx
from mode import Service

from streamapp.config import SourceConfig
from streamapp.core.health import (
    Notification,
    SourceHealth,
    decode_notification,
    decode_state,
    encode_notification,
    encode_state,
    new_state,
    on_poll_failure,
    on_poll_success,
    on_tick,
)
from streamapp.notify.channels import Deliverer
from streamapp.worker import metrics
from streamapp.worker.app import app, durable_put, health, notifications_topic, settings

log = logging.getLogger("streamapp.worker.watchdog")

#: consecutive failed polls before a transient problem is reported
DEGRADED_AFTER = 3
SOURCES = {source.name: source for source in settings.sources}
STARTED_AT = datetime.now(UTC)
#: one state change at a time, so concurrent polls of different sources cannot interleave
_lock = asyncio.Lock()


def state_of(source_name: str) -> SourceHealth:
    value = health.get(source_name.encode())
    if value is not None:
        try:
            return decode_state(value)
        except Exception:
            log.error("health state of %r is unreadable; starting it afresh", source_name)
    return new_state(source_name, now=datetime.now(UTC))


async def _commit(state: SourceHealth, notes: list[Notification]) -> None:
    """Publish the notifications (awaiting the broker), then store the state.

    A crash between the two repeats an alert rather than losing it."""
    for note in notes:
        log.warning("health %s: %s", note.kind, note.message)
        fut = await app.producer.send(
            notifications_topic.get_topic_name(),
            note.source_name.encode(),
            encode_notification(note),
            None,
            None,
            [("kind", note.kind.encode()), ("source_name", note.source_name.encode())],
        )
        await fut
    await durable_put(health, state.source_name.encode(), encode_state(state))


async def poll_succeeded(source: SourceConfig, newest_record_at: datetime | None) -> None:
    async with _lock:
        state, notes = on_poll_success(
            state_of(source.name),
            now=datetime.now(UTC),
            newest_record_at=newest_record_at,
            health_check=source.health_check,
        )
        await _commit(state, notes)


async def poll_failed(source: SourceConfig, kind: str, status: int | None, message: str) -> None:
    async with _lock:
        state, notes = on_poll_failure(
            state_of(source.name),
            now=datetime.now(UTC),
            error_kind=kind,
            http_status=status,
            message=message,
            degraded_after=DEGRADED_AFTER,
        )
        await _commit(state, notes)


async def check_staleness() -> None:
    async with _lock:
        for source in settings.sources:
            state, notes = on_tick(
                state_of(source.name),
                now=datetime.now(UTC),
                health_check=source.health_check,
                started_at=STARTED_AT,
            )
            if notes or health.get(source.name.encode()) is None:
                await _commit(state, notes)


def tick_interval(sources: list[SourceConfig]) -> float:
    """Often enough to notice staleness within a tenth of the shortest health check."""
    shortest = min((s.health_check for s in sources), default=timedelta(days=1))
    return max(1.0, min(60.0, shortest.total_seconds() / 10))


@app.service
class Watchdog(Service):
    """On the leader: checks every source for staleness."""

    @Service.task
    async def _ticker(self) -> None:
        interval = tick_interval(list(settings.sources))
        while not self.should_stop:
            await self.sleep(interval)
            if app.is_leader() and not app.rebalancing and not app.in_recovery:
                try:
                    await check_staleness()
                except Exception as exc:  # the next tick tries again
                    log.warning("watchdog tick failed: %s: %s", type(exc).__name__, exc)


_deliverer: Deliverer | None = None


def deliverer() -> Deliverer:
    global _deliverer
    if _deliverer is None:
        _deliverer = Deliverer(httpx.AsyncClient(follow_redirects=False))
    return _deliverer


@app.agent(notifications_topic)
async def deliver(stream: faust.StreamT) -> None:
    async for value in stream:
        try:
            note = decode_notification(value)
        except Exception as exc:
            log.error("unreadable notification skipped: %s", type(exc).__name__)
            continue
        source = SOURCES.get(note.source_name)
        if source is None or not source.channels:
            continue
        results = await asyncio.gather(
            *(deliverer().deliver(channel, note) for channel in source.channels)
        )
        for channel, result in zip(source.channels, results, strict=True):
            if result.ok:
                metrics.NOTIFICATIONS_SENT.labels(channel.name).inc()
            else:
                metrics.NOTIFICATIONS_FAILED.labels(channel.name).inc()
                log.warning(
                    "notification %s for %s not delivered to %s %r after %d attempt(s): %s",
                    note.kind,
                    note.source_name,
                    channel.kind,
                    channel.name,
                    result.attempts,
                    result.error,
                )

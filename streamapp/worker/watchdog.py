"""The watchdog: per-source health state, alerts on the notifications topic, and delivery.

A plain class around the pure rules of ``streamapp.core.health`` (no faust):

- the poller reports each poll's outcome; a tick on the leader checks staleness and polls
  that make no progress; every change of state is one notification;
- state lives in the health state topic, so a restart or failover neither forgets an open
  problem nor repeats its alert;
- on every worker, a pipeline whose outputs wait for the broker longer than
  ``STREAMAPP_STALL_AFTER`` raises ``pipeline_stalled`` for every source (and recovers);
  when the broker refuses even the alert, it goes straight to the channels;
- ``deliver`` sends a notification to the source's channels (webhook, Slack, PagerDuty
  Events v2) with retries; channels are independent of the record pipeline, so a failing
  or hanging one delays nothing but its own deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streamapp.config import Settings, SourceConfig
from streamapp.core.health import (
    Notification,
    SourceHealth,
    decode_notification,
    decode_state,
    encode_notification,
    encode_state,
    health_summary,
    new_state,
    on_poll_failure,
    on_poll_stalled,
    on_poll_success,
    on_tick,
    pipeline_recovered,
    pipeline_stalled,
)
from streamapp.core.ingest import PollReport
from streamapp.core.models import Outgoing
from streamapp.kafka.pipeline_loop import Loops
from streamapp.kafka.publisher import Publisher
from streamapp.kafka.statetopic import StateTopic
from streamapp.notify.channels import Deliverer, DeliveryResult
from streamapp.worker.poller import SourcePoll

log = logging.getLogger("streamapp.watchdog")

#: consecutive failed polls before a transient problem is reported
DEGRADED_AFTER = 3


def tick_interval(sources: Sequence[SourceConfig]) -> float:
    """Often enough to notice staleness within a tenth of the shortest health check."""
    shortest = min((s.health_check for s in sources), default=timedelta(days=1))
    return max(1.0, min(60.0, shortest.total_seconds() / 10))


@dataclass(eq=False, repr=False)
class Watchdog:
    settings: Settings
    _: KW_ONLY
    table: StateTopic
    publisher: Publisher
    deliverer: Deliverer
    is_leader: Callable[[], bool]
    running_polls: Callable[[], Sequence[SourcePoll]] = lambda: ()
    pipeline: Loops | None = None
    on_delivery: Callable[[str, bool], None] | None = None
    sources: dict[str, SourceConfig] = field(init=False)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC), init=False)
    #: one state change at a time, so polls of different sources cannot interleave
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    #: when this worker raised pipeline_stalled (None: not raised)
    pipeline_alerted: float | None = field(default=None, init=False)
    recent: list[Notification] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.sources = {source.name: source for source in self.settings.sources}

    # --- state ----------------------------------------------------------------------------

    def state_of(self, source_name: str) -> SourceHealth:
        value = self.table.get(source_name.encode())
        if value is not None:
            try:
                return decode_state(value)
            except Exception:
                log.error("health state of %r is unreadable; starting it afresh", source_name)
        return new_state(source_name, now=datetime.now(UTC))

    def summary(self, source: SourceConfig) -> dict[str, Any]:
        return health_summary(
            self.state_of(source.name), now=datetime.now(UTC), health_check=source.health_check
        )

    async def _commit(self, state: SourceHealth, notes: list[Notification]) -> None:
        """Publish the notifications (awaiting the broker), then store the state.

        A crash between the two repeats an alert rather than losing it."""
        for note in notes:
            await self.notify(note)
        await self.table.put(state.source_name.encode(), encode_state(state))

    async def notify(self, note: Notification, *, direct_if_refused: bool = False) -> None:
        log.warning("health %s: %s", note.kind, note.message)
        self.recent = [*self.recent[-49:], note]
        message = Outgoing(
            self.settings.topics.notifications,
            note.source_name.encode(),
            encode_notification(note),
            [("kind", note.kind.encode()), ("source_name", note.source_name.encode())],
        )
        try:
            await self.publisher.send_one(message)
        except Exception as exc:
            if not direct_if_refused:
                raise
            log.warning("notification not published (%s); delivering it directly", exc)
            await self.deliver_note(note)

    # --- poll outcomes --------------------------------------------------------------------

    async def poll_succeeded(self, source: SourceConfig, report: PollReport) -> None:
        async with self._lock:
            state, notes = on_poll_success(
                self.state_of(source.name),
                now=datetime.now(UTC),
                newest_record_at=report.newest_record_at,
                health_check=source.health_check,
            )
            await self._commit(state, notes)

    async def poll_failed(
        self, source: SourceConfig, kind: str, status: int | None, message: str
    ) -> None:
        async with self._lock:
            state, notes = on_poll_failure(
                self.state_of(source.name),
                now=datetime.now(UTC),
                error_kind=kind,
                http_status=status,
                message=message,
                degraded_after=DEGRADED_AFTER,
            )
            await self._commit(state, notes)

    # --- ticks ----------------------------------------------------------------------------

    async def run(self) -> None:
        interval = min(tick_interval(list(self.sources.values())), 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception as exc:  # the next tick tries again
                log.warning("watchdog tick failed: %s: %s", type(exc).__name__, exc)

    async def tick(self) -> None:
        await self.check_pipeline()
        if self.is_leader():
            await self.check_polls()
            await self.check_staleness()

    async def check_staleness(self) -> None:
        async with self._lock:
            for source in self.sources.values():
                state, notes = on_tick(
                    self.state_of(source.name),
                    now=datetime.now(UTC),
                    health_check=source.health_check,
                    started_at=self.started_at,
                )
                if notes or self.table.get(source.name.encode()) is None:
                    await self._commit(state, notes)

    def poll_stall_after(self, source: SourceConfig) -> float:
        return max(
            self.settings.stall_after.total_seconds(), 3 * source.poll_interval.total_seconds()
        )

    async def check_polls(self) -> None:
        now = time.monotonic()
        for poll in self.running_polls():
            report = poll.report
            if report is None:
                continue
            idle = now - report.last_progress
            if idle < self.poll_stall_after(poll.source):
                continue
            async with self._lock:
                state, notes = on_poll_stalled(
                    self.state_of(poll.source.name),
                    now=datetime.now(UTC),
                    running_for=now - report.started,
                    idle_for=idle,
                )
                if notes:
                    await self._commit(state, notes)

    async def check_pipeline(self) -> None:
        if self.pipeline is None:
            return
        stalled = self.pipeline.stalled_for()
        now = datetime.now(UTC)
        if stalled >= self.settings.stall_after.total_seconds() and self.pipeline_alerted is None:
            self.pipeline_alerted = time.monotonic() - stalled
            for name in self.sources:
                note = pipeline_stalled(
                    name, now=now, seconds=stalled, error=self.pipeline.last_error
                )
                await self.notify(note, direct_if_refused=True)
        elif stalled == 0 and self.pipeline_alerted is not None:
            seconds = time.monotonic() - self.pipeline_alerted
            self.pipeline_alerted = None
            for name in self.sources:
                await self.notify(pipeline_recovered(name, now=now, seconds=seconds))

    # --- delivery -------------------------------------------------------------------------

    async def deliver(self, value: bytes) -> None:
        """A notification read back from the topic, sent to its source's channels."""
        try:
            note = decode_notification(value)
        except Exception as exc:
            log.error("unreadable notification skipped: %s", type(exc).__name__)
            return
        await self.deliver_note(note)

    async def deliver_note(self, note: Notification) -> list[DeliveryResult]:
        source = self.sources.get(note.source_name)
        if source is None or not source.channels:
            return []
        results = await asyncio.gather(
            *(self.deliverer.deliver(channel, note) for channel in source.channels)
        )
        for channel, result in zip(source.channels, results, strict=True):
            if self.on_delivery is not None:
                self.on_delivery(channel.name, result.ok)
            if not result.ok:
                log.warning(
                    "notification %s for %s not delivered to %s %r after %d attempt(s): %s",
                    note.kind,
                    note.source_name,
                    channel.kind,
                    channel.name,
                    result.attempts,
                    result.error,
                )
        return list(results)

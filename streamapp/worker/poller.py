"""The poller: every source polled by exactly one worker, the leader, at its interval.

A plain class (no faust): ``is_leader`` and ``ready`` are handed in. ``tick`` runs every
half second on every worker: on the leader it starts a poll task per source when one is
due, and anywhere else it cancels whatever polls this worker still runs, so after a
failover exactly one worker polls. Sources start spread over their interval, so a
thousand sources do not all poll at the same second. A new leader first reads the
progress topic to its end, so it resumes every source where the last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from streamapp.config import Settings, SourceConfig
from streamapp.core.durations import format_duration
from streamapp.core.errors import PagerDutyError, PublishError
from streamapp.core.ingest import PollInterrupted, PollReport, RecordSink, poll_source
from streamapp.core.lateness import LateTracker
from streamapp.core.redact import REDACTOR
from streamapp.kafka.progress import ProgressTable
from streamapp.pagerduty.client import PagerDutyClient
from streamapp.pagerduty.factory import ClientFactory

log = logging.getLogger("streamapp.poller")

TICK = 0.5


class HealthReporter(Protocol):
    async def poll_succeeded(self, source: SourceConfig, report: PollReport) -> None: ...
    async def poll_failed(
        self, source: SourceConfig, kind: str, status: int | None, message: str
    ) -> None: ...


@dataclass
class SourcePoll:
    """One source's polling on this worker."""

    source: SourceConfig
    client: PagerDutyClient
    #: how late records arrive for this source, and so how far each poll reaches back
    late: LateTracker
    next_due: float = 0.0
    task: asyncio.Task[None] | None = None
    #: the poll in progress (or the last one)
    report: PollReport | None = None
    consecutive_failures: int = 0
    last_outcome: str | None = None
    polls: int = field(default=0)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass(eq=False, repr=False)
class Poller:
    settings: Settings
    _: KW_ONLY
    factory: ClientFactory
    sink: RecordSink
    progress: ProgressTable
    health: HealthReporter
    is_leader: Callable[[], bool]
    ready: Callable[[], bool] = lambda: True
    on_poll: Callable[[str, str, float], None] | None = None
    clock: Callable[[], float] = time.monotonic
    polls: dict[str, SourcePoll] = field(init=False)
    #: whether this worker, since it became the leader, has read the progress topic
    caught_up: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.polls = {
            source.name: SourcePoll(
                source,
                self.factory.client(source, max_wait=source.poll_interval.total_seconds()),
                LateTracker(configured=source.overlap),
            )
            for source in self.settings.sources
        }
        self.spread(self.clock())

    def spread(self, now: float) -> None:
        """First polls spread over each source's interval (no thundering herd)."""
        count = len(self.polls)
        for index, poll in enumerate(self.polls.values()):
            interval = poll.source.poll_interval.total_seconds()
            poll.next_due = now + interval * index / count if count > 1 else now

    # --- the ticker -----------------------------------------------------------------------

    async def run(self) -> None:
        if not self.polls:
            log.error(
                "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"
            )
        try:
            while True:
                await self.tick()
                await asyncio.sleep(TICK)
        finally:
            await self.cancel_all()

    async def tick(self) -> None:
        if not self.is_leader():
            if self.caught_up:
                log.info("this worker no longer leads: it stops polling")
            self.caught_up = False
            if any(p.running for p in self.polls.values()):
                await self.cancel_all()
            return
        if not self.ready():
            return
        if not self.caught_up:
            if not await self.progress.table.caught_up():
                log.warning("progress topic not read to its end yet; polling waits")
                return
            self.caught_up = True
            self.resume_pauses()
            self.spread(self.clock())
            log.info("this worker leads: it polls %d source(s)", len(self.polls))
        now = self.clock()
        for poll in self.polls.values():
            if not poll.running and now >= poll.next_due:
                poll.task = asyncio.ensure_future(self.poll(poll))

    def resume_pauses(self) -> None:
        """Pauses PagerDuty asked an earlier leader for still hold: no request before their end."""
        for fingerprint, until in self.progress.pauses():
            left = until - time.time()
            if left > 0:
                self.factory.pause(fingerprint, left)
                log.info("a token stays paused for %.0f s more (PagerDuty's ratelimit-reset)", left)

    async def cancel_all(self) -> None:
        tasks = [p.task for p in self.polls.values() if p.task is not None and p.running]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def running(self) -> Sequence[SourcePoll]:
        return [p for p in self.polls.values() if p.running]

    # --- one poll -------------------------------------------------------------------------

    async def poll(self, poll: SourcePoll) -> None:
        source = poll.source
        started = self.clock()
        poll.report = report = PollReport(source.name)
        outcome = "failed"
        failure: tuple[str, int | None, str] | None = None
        now = datetime.now(UTC)
        overlap = poll.late.overlap(now)
        before = self.progress.checkpoint(source.name)
        seen: list[tuple[str, datetime]] = []
        try:
            await poll_source(
                source.name,
                poll.client,
                self.sink,
                self.progress,
                lookback=source.lookback,
                overlap=overlap,
                now=now,
                keep_going=self.is_leader,
                max_pages=self.settings.max_pages_per_window,
                concurrency=self.settings.backfill_concurrency,
                report=report,
                on_page=lambda page: seen.extend((r.id, r.execution_time) for r in page.records),
            )
            outcome = "ok"
            late = poll.late.observe(
                seen, previous_until=before.until if before else None, now=now, overlap=overlap
            )
            if late:
                log.info(
                    "source=%s: %d record(s) arrived late (behind the checkpoint); overlap %s",
                    source.name,
                    late,
                    format_duration(poll.late.learned(now)),
                )
        except PollInterrupted:
            outcome = "interrupted"
            log.info("poll source=%s stopped: this worker no longer leads", source.name)
            return
        except PagerDutyError as exc:
            failure = (exc.kind, getattr(exc, "status", None), str(exc))
        except PublishError as exc:
            failure = ("publish", None, str(exc))
        except Exception as exc:
            text = REDACTOR.scrub(f"{type(exc).__name__}: {exc}")
            failure = ("internal", None, f"internal error ({text}); this is a bug")
        finally:
            poll.next_due = started + source.poll_interval.total_seconds()
            poll.last_outcome = outcome
            poll.polls += 1
            if self.on_poll is not None:
                self.on_poll(source.name, outcome, self.clock() - started)
        if failure is not None:
            await self._failed(poll, *failure)
            return
        poll.consecutive_failures = 0
        log.info(report.summary())
        await self._report(source, self.health.poll_succeeded(source, report))

    async def _failed(self, poll: SourcePoll, kind: str, status: int | None, message: str) -> None:
        poll.consecutive_failures += 1
        log.warning(
            "poll source=%s failed (%s, %d in a row): %s; checkpoint unchanged",
            poll.source.name,
            kind,
            poll.consecutive_failures,
            message,
        )
        await self._report(poll.source, self.health.poll_failed(poll.source, kind, status, message))

    async def _report(self, source: SourceConfig, update: Awaitable[None]) -> None:
        # health bookkeeping must never stop polling; the next poll reports again
        try:
            await update
        except Exception as exc:
            log.warning(
                "health update for source=%s failed: %s: %s", source.name, type(exc).__name__, exc
            )

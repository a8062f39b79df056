"""The one ingestion loop: a source's windows → pages → the raw topic → progress.

Polls and backfills are the same walk with a different record of progress:

- :func:`walk_window` walks one window's pages, hands each page to the sink as it arrives
  and returns only once the broker acknowledged every record of the window; on any failure
  it waits for (or cancels) what it started, so nothing is left half-awaited;
- :func:`walk_in_order` walks several windows, a few at a time, and reports them in window
  order: progress moves only over the contiguous prefix of windows whose records were all
  acknowledged (windows 1, 2 and 4 done, 3 failed: progress stops after 2);
- :func:`poll_source` plans the windows from the source's checkpoint and moves it;
  :func:`backfill_source` plans them from the windows already done and records each.

Pure orchestration: the PagerDuty client, the sink and the progress store are passed in,
so this runs the same under faust, in a CLI command or in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from streamapp.core.backfill import BackfillPlan, plan_backfill
from streamapp.core.errors import StreamappError
from streamapp.core.models import Checkpoint, Page, WindowDone, as_utc
from streamapp.core.windows import EDGE, Window, advance, plan_windows

log = logging.getLogger("streamapp.ingest")

T = TypeVar("T")
R = TypeVar("R")


class PageSource(Protocol):
    def pages(
        self, *, since: datetime, until: datetime, limit: int = 100, max_pages: int | None = None
    ) -> AsyncIterator[Page]: ...


class RecordSink(Protocol):
    def publish(self, source_name: str, page: Page) -> Awaitable[None]:
        """Start writing a page's records; the awaitable completes once the broker
        acknowledged all of them and raises PublishError if it did not."""
        ...


class ProgressStore(Protocol):
    def checkpoint(self, source_name: str) -> Checkpoint | None: ...
    async def save_checkpoint(self, source_name: str, checkpoint: Checkpoint) -> None: ...
    def done_windows(self, source_name: str) -> list[WindowDone]: ...
    async def mark_done(self, done: WindowDone) -> None: ...


class PollInterrupted(StreamappError):
    """This worker stopped being the one that polls (it lost leadership or is stopping)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- one window


@dataclass
class WindowResult:
    window: Window
    pages: int = 0
    records: int = 0
    malformed: int = 0
    requests: int = 0
    #: execution_time of the newest record of the window
    newest: datetime | None = None


async def walk_window(
    source_name: str,
    window: Window,
    client: PageSource,
    sink: RecordSink,
    *,
    page_limit: int = 100,
    max_pages: int | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    on_page: Callable[[Page], None] | None = None,
) -> WindowResult:
    """Every page of ``window`` written and acknowledged; raises what stopped it."""
    result = WindowResult(window)
    pending: list[asyncio.Future[None]] = []
    try:
        async for page in client.pages(
            since=window.since, until=window.until, limit=page_limit, max_pages=max_pages
        ):
            result.pages += 1
            result.requests += page.request_count
            result.records += len(page.records)
            result.malformed += len(page.malformed)
            newest = _newest(page, window.until)
            if newest is not None and (result.newest is None or newest > result.newest):
                result.newest = newest
            pending.append(asyncio.ensure_future(sink.publish(source_name, page)))
            if on_page is not None:
                on_page(page)
            if not keep_going():
                raise PollInterrupted(f"walk of {source_name!r} interrupted")
        await asyncio.gather(*pending)
    except BaseException:
        await _settle(pending)
        raise
    return result


def _newest(page: Page, until: datetime) -> datetime | None:
    """The newest record time of a page, leaving out records dated after the window: an
    answer that keeps carrying a record from the future would otherwise keep the source
    looking fresh for ever (the record itself still goes on, flagged)."""
    return max(
        (t for r in page.records if (t := as_utc(r.execution_time)) <= until + EDGE),
        default=None,
    )


async def _settle(pending: Sequence[asyncio.Future[Any]]) -> None:
    """Let what was started finish or stop, and collect every outcome (no stray warnings)."""
    for future in pending:
        if not future.done():
            future.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*pending, return_exceptions=True)


# --------------------------------------------------------------------------- many windows


async def walk_in_order(
    items: Sequence[T],
    work: Callable[[T], Awaitable[R]],
    done: Callable[[R], Awaitable[None]],
    *,
    concurrency: int = 1,
) -> None:
    """Run ``work`` on up to ``concurrency`` items at once; call ``done`` in item order.

    ``done`` is called for an item only after it and every item before it succeeded. When an
    item fails, the items after it are cancelled, the items before it are still finished
    and reported, and then the failure is raised: progress covers exactly the prefix.
    """
    if not items:
        return
    gate = asyncio.Semaphore(max(1, concurrency))
    tasks: list[asyncio.Future[R]] = []

    async def run(item: T) -> R:
        async with gate:
            return await work(item)

    tasks = [asyncio.ensure_future(run(item)) for item in items]
    try:
        for index, task in enumerate(tasks):
            try:
                value = await task
            except BaseException:
                for later in tasks[index + 1 :]:
                    later.cancel()
                raise
            await done(value)
    finally:
        await _settle(tasks)


# --------------------------------------------------------------------------- polls


@dataclass
class PollReport:
    source_name: str
    windows: list[Window] = field(default_factory=list)
    windows_done: int = 0
    pages: int = 0
    records: int = 0
    malformed: int = 0
    requests: int = 0
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0
    checkpoint: datetime | None = None
    #: execution_time of the newest record this poll saw (never later than the poll)
    newest_record_at: datetime | None = None
    #: monotonic time of the last page or window finished (progress, for stall checks)
    last_progress: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        span = (
            f"{self.windows[0].since.isoformat()}..{self.windows[-1].until.isoformat()}"
            if self.windows
            else "-"
        )
        return (
            f"poll source={self.source_name} window={span} windows={self.windows_done}/"
            f"{len(self.windows)} pages={self.pages} records={self.records} "
            f"malformed={self.malformed} requests={self.requests} "
            f"duration={self.duration:.3f}s ok"
        )

    def count(self, result: WindowResult) -> None:
        self.pages += result.pages
        self.requests += result.requests
        self.records += result.records
        self.malformed += result.malformed
        self.windows_done += 1
        self.last_progress = time.monotonic()


def capped(moment: datetime | None, now: datetime) -> datetime | None:
    """A record time for lag and health: never later than ``now`` (a record dated in the
    future would otherwise hide staleness for ever)."""
    return None if moment is None else min(as_utc(moment), as_utc(now))


def next_checkpoint(
    previous: Checkpoint | None,
    result: WindowResult,
    *,
    newest: datetime | None,
    polled_at: datetime,
    at: datetime,
) -> Checkpoint:
    """The checkpoint once ``result``'s window is acknowledged: ``until`` advanced over it,
    records counted, and the newest record time kept (``newest``, already capped at now; a
    stored time later than ``polled_at`` came from an older version and is capped too)."""
    last_seen = previous.last_record_at if previous else None
    if last_seen is not None and last_seen > polled_at:
        last_seen = capped(last_seen, polled_at)
    if newest is not None and (last_seen is None or newest > last_seen):
        last_seen = newest
    return Checkpoint(
        until=advance(previous.until if previous else None, result.window),
        updated_at=at,
        records=(previous.records if previous else 0) + result.records,
        last_record_at=last_seen,
    )


async def poll_source(
    source_name: str,
    client: PageSource,
    sink: RecordSink,
    progress: ProgressStore,
    *,
    lookback: timedelta,
    overlap: timedelta,
    max_window: timedelta = timedelta(days=1),
    now: datetime | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    page_limit: int = 100,
    max_pages: int | None = None,
    concurrency: int = 1,
    clock: Callable[[], datetime] = utcnow,
    report: PollReport | None = None,
    on_page: Callable[[Page], None] | None = None,
) -> PollReport:
    """Walk ``[checkpoint - overlap, now)`` window by window, moving the checkpoint over
    each acknowledged prefix; return what was done (errors are raised after it is filled)."""
    report = report or PollReport(source_name)
    current = progress.checkpoint(source_name)
    moment = as_utc(now or clock())
    report.windows = plan_windows(
        current.until if current else None,
        now=moment,
        lookback=lookback,
        overlap=overlap,
        max_window=max_window,
    )

    def touch(page: Page) -> None:
        report.last_progress = time.monotonic()
        if on_page is not None:
            on_page(page)

    async def walk(window: Window) -> WindowResult:
        return await walk_window(
            source_name,
            window,
            client,
            sink,
            page_limit=page_limit,
            max_pages=max_pages,
            keep_going=keep_going,
            on_page=touch,
        )

    async def acknowledged(result: WindowResult) -> None:
        newest = capped(result.newest, clock())
        updated = next_checkpoint(
            progress.checkpoint(source_name), result, newest=newest, polled_at=moment, at=clock()
        )
        await progress.save_checkpoint(source_name, updated)
        report.count(result)
        report.checkpoint = updated.until
        if newest is not None and (
            report.newest_record_at is None or newest > report.newest_record_at
        ):
            report.newest_record_at = newest
        log.info(
            "checkpoint source=%s until=%s window=%d/%d records=%d",
            source_name,
            updated.until.isoformat(),
            report.windows_done,
            len(report.windows),
            result.records,
        )

    try:
        await walk_in_order(report.windows, walk, acknowledged, concurrency=concurrency)
    finally:
        report.duration = time.monotonic() - report.started
    return report


# --------------------------------------------------------------------------- backfills


async def backfill_source(
    source_name: str,
    client: PageSource,
    sink: RecordSink,
    progress: ProgressStore,
    *,
    since: datetime,
    until: datetime,
    max_window: timedelta = timedelta(days=1),
    fresh: bool = False,
    page_limit: int = 100,
    concurrency: int = 1,
    clock: Callable[[], datetime] = utcnow,
    on_plan: Callable[[BackfillPlan], None] | None = None,
    on_page: Callable[[Page], None] | None = None,
    on_window: Callable[[WindowResult], None] | None = None,
) -> BackfillPlan:
    """Walk the windows of ``[since, until)`` no earlier backfill finished; record each
    once the broker acknowledged its records (in window order). Raises what stopped it."""
    done = [] if fresh else progress.done_windows(source_name)
    plan = plan_backfill(
        since, until, done=[(d.since, d.until) for d in done], max_window=max_window
    )
    if on_plan is not None:
        on_plan(plan)

    async def walk(window: Window) -> WindowResult:
        return await walk_window(
            source_name, window, client, sink, page_limit=page_limit, on_page=on_page
        )

    async def acknowledged(result: WindowResult) -> None:
        await progress.mark_done(
            WindowDone(
                source_name=source_name,
                since=result.window.since,
                until=result.window.until,
                records=result.records,
                pages=result.pages,
                malformed=result.malformed,
                done_at=clock(),
                backfill_since=plan.since,
                backfill_until=plan.until,
            )
        )
        if on_window is not None:
            on_window(result)

    await walk_in_order(plan.windows, walk, acknowledged, concurrency=concurrency)
    return plan

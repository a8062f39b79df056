"""The one ingestion loop, in-process: a fake client and sink, no broker, no server."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from streamapp.core.errors import PublishError
from streamapp.core.ingest import (
    WindowResult,
    backfill_source,
    next_checkpoint,
    poll_source,
    walk_in_order,
    walk_window,
)
from streamapp.core.models import Checkpoint, Page, PolledRecord, WindowDone
from streamapp.core.windows import Window

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def page(*times: datetime, cursor: str | None = None) -> Page:
    records = [
        PolledRecord(id=f"r{t.timestamp():.0f}", execution_time=t, raw=msgspec.Raw(b"{}"))
        for t in times
    ]
    return Page(
        records=records, malformed=[], next_cursor=cursor, limit=100, status=200, request_count=1
    )


class Client:
    """Pages per window (by since); a window whose since is in ``fail`` raises on page 2."""

    def __init__(self, fail: set[datetime] = frozenset(), delays: dict | None = None) -> None:
        self.fail = fail
        self.delays = delays or {}
        self.walked: list[Window] = []

    async def pages(self, *, since, until, limit=100, max_pages=None) -> AsyncIterator[Page]:
        self.walked.append(Window(since, until))
        await asyncio.sleep(self.delays.get(since, 0))
        yield page(until - timedelta(seconds=1), cursor="c2")
        if since in self.fail:
            raise PublishError("page 2 failed")
        yield page(since + timedelta(seconds=1))


class Sink:
    def __init__(self, refuse: bool = False) -> None:
        self.pages: list[tuple[str, Page]] = []
        self.refuse = refuse

    def publish(self, source_name: str, page: Page):
        self.pages.append((source_name, page))
        return self._ack()

    async def _ack(self) -> None:
        await asyncio.sleep(0.01)
        if self.refuse:
            raise PublishError("refused")


class Progress:
    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        self.saved: list[Checkpoint] = [checkpoint] if checkpoint else []
        self.done: list[WindowDone] = []

    def checkpoint(self, source_name):
        return self.saved[-1] if self.saved else None

    async def save_checkpoint(self, source_name, checkpoint):
        self.saved.append(checkpoint)

    def done_windows(self, source_name):
        return list(self.done)

    async def mark_done(self, done):
        self.done.append(done)


async def test_progress_moves_only_over_the_prefix_of_windows_that_succeeded():
    reported: list[int] = []

    async def work(item: int) -> int:
        await asyncio.sleep({1: 0.03, 2: 0.01, 3: 0.02, 4: 0.0}[item])
        if item == 3:
            raise PublishError("window 3 failed")
        return item

    async def done(item: int) -> None:
        reported.append(item)

    with pytest.raises(PublishError):
        await walk_in_order([1, 2, 3, 4], work, done, concurrency=4)
    # 4 finished first and 3 failed before 1: progress covers 1 and 2, and 4 is walked again
    assert reported == [1, 2]


async def test_a_poll_over_several_days_checkpoints_in_order_with_concurrency():
    checkpoint = Checkpoint(until=NOW - timedelta(days=3), updated_at=NOW)
    progress = Progress(checkpoint)
    windows_since = [NOW - timedelta(days=3, minutes=5)]
    client = Client(delays={windows_since[0]: 0.05})
    report = await poll_source(
        "s",
        client,
        Sink(),
        progress,
        lookback=timedelta(days=1),
        overlap=timedelta(minutes=5),
        now=NOW,
        concurrency=3,
        clock=lambda: NOW,
    )
    untils = [c.until for c in progress.saved[1:]]
    assert untils == sorted(untils) and untils[-1] == NOW
    assert report.windows_done == len(report.windows) == 4
    assert len(client.walked) == 4


async def test_a_window_that_fails_part_way_leaves_no_unawaited_acknowledgement():
    since = NOW - timedelta(hours=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would raise
        with pytest.raises(PublishError):
            await walk_window("s", Window(since, NOW), Client(fail={since}), Sink())
        import gc

        gc.collect()


async def test_a_refused_write_keeps_the_checkpoint_where_it_was():
    progress = Progress(Checkpoint(until=NOW - timedelta(minutes=1), updated_at=NOW))
    with pytest.raises(PublishError):
        await poll_source(
            "s",
            Client(),
            Sink(refuse=True),
            progress,
            lookback=timedelta(days=1),
            overlap=timedelta(0),
            now=NOW,
            clock=lambda: NOW,
        )
    assert len(progress.saved) == 1


async def test_a_record_dated_in_the_future_does_not_count_as_a_fresh_record():
    class Future(Client):
        async def pages(self, *, since, until, limit=100, max_pages=None):
            yield page(datetime(2999, 1, 1, tzinfo=UTC))

    progress = Progress()
    report = await poll_source(
        "s",
        Future(),
        Sink(),
        progress,
        lookback=timedelta(minutes=10),
        overlap=timedelta(0),
        now=NOW,
        clock=lambda: NOW,
    )
    # it is passed on (flagged downstream), but it cannot keep the source looking fresh
    assert report.records == 1
    assert report.newest_record_at is None
    assert progress.saved[-1].last_record_at is None


async def test_a_backfill_records_each_window_once_acknowledged_and_resumes_after_a_failure():
    since, until = NOW - timedelta(days=4), NOW
    progress = Progress()
    failing = NOW - timedelta(days=2) - timedelta(seconds=2)  # the third window's since
    with pytest.raises(PublishError):
        await backfill_source(
            "s",
            Client(fail={failing}),
            Sink(),
            progress,
            since=since,
            until=until,
            concurrency=4,
            clock=lambda: NOW,
        )
    assert [d.since for d in progress.done] == [
        since,
        since + timedelta(days=1) - timedelta(seconds=1),
    ]
    client = Client()
    plan = await backfill_source(
        "s", client, Sink(), progress, since=since, until=until, concurrency=4, clock=lambda: NOW
    )
    assert len(plan.windows) == 2
    assert min(w.since for w in client.walked) >= NOW - timedelta(days=2, seconds=3)


def test_next_checkpoint_advances_counts_and_keeps_the_newest_record_time() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    window = Window(t0, t0 + timedelta(hours=1))
    first = next_checkpoint(
        None,
        WindowResult(window, records=3, newest=t0 + timedelta(minutes=30)),
        newest=t0 + timedelta(minutes=30),
        polled_at=t0 + timedelta(hours=2),
        at=t0 + timedelta(hours=2),
    )
    assert first.until == window.until and first.records == 3
    assert first.last_record_at == t0 + timedelta(minutes=30)
    # an older window (a backfill behind the checkpoint) moves nothing back
    older = Window(t0 - timedelta(hours=1), t0)
    second = next_checkpoint(
        first,
        WindowResult(older, records=2, newest=t0 - timedelta(minutes=5)),
        newest=t0 - timedelta(minutes=5),
        polled_at=t0 + timedelta(hours=2),
        at=t0 + timedelta(hours=3),
    )
    assert second.until == window.until and second.records == 5
    assert second.last_record_at == first.last_record_at
    assert second.updated_at == t0 + timedelta(hours=3)


def test_next_checkpoint_caps_a_future_record_time_an_older_version_stored() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    stored = Checkpoint(until=t0, updated_at=t0, records=1, last_record_at=t0 + timedelta(days=400))
    window = Window(t0, t0 + timedelta(minutes=1))
    polled = t0 + timedelta(minutes=2)
    updated = next_checkpoint(
        stored, WindowResult(window), newest=None, polled_at=polled, at=polled
    )
    assert updated.last_record_at == polled and updated.records == 1

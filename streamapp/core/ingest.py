"""One poll of one source: walk its windows, publish every record, then move its checkpoint.

Pure orchestration: the PagerDuty client, the publisher and the checkpoint store are passed
in, so this runs the same under faust, in a CLI command or in a test. The rule that makes
it lose nothing: the checkpoint moves to a window's ``until`` only after the broker has
acknowledged every record of that window. Any failure (an API error after retries, a
refused write) ends the poll with the checkpoint where the last whole window left it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec

from streamapp.core.deadletter import dead_letter
from streamapp.core.errors import PublishError, StreamappError
from streamapp.core.models import Checkpoint, Outgoing, RawEnvelope, as_utc
from streamapp.core.windows import Window, advance, plan_windows
from streamapp.pagerduty.client import Page

log = logging.getLogger("streamapp.core.ingest")


class PageSource(Protocol):
    def pages(
        self, *, since: datetime, until: datetime, limit: int = 100
    ) -> AsyncIterator[Page]: ...


class Publisher(Protocol):
    async def publish(self, source_name: str, page: Page) -> Awaitable[None]:
        """Hand a page's records (and malformed ones) to the broker; the returned awaitable
        completes when the broker acknowledged all of them and raises PublishError if not."""
        ...


class CheckpointStore(Protocol):
    def get(self, source_name: str) -> Checkpoint | None: ...
    async def put(self, source_name: str, checkpoint: Checkpoint) -> None:
        """Store durably: returns once the broker acknowledged the checkpoint."""
        ...


_encode = msgspec.json.Encoder().encode


def page_messages(
    source_name: str, page: Page, *, raw_topic: str, dlq_topic: str, now: datetime
) -> list[Outgoing]:
    """A page as messages: each record in its envelope keyed by id on the raw topic, each
    malformed one as a dead letter."""
    headers = [("source_name", source_name.encode())]
    messages = [
        Outgoing(
            raw_topic,
            record.id.encode(),
            _encode(RawEnvelope(source_name=source_name, polled_at=now, record=record.raw)),
            headers,
        )
        for record in page.records
    ]
    for bad in page.malformed:
        letter = dead_letter(
            bytes(bad.raw), reason=bad.reason, stage="poll", source_name=source_name, at=now
        )
        messages.append(Outgoing(dlq_topic, None, _encode(letter), None))
    return messages


async def send_all(
    messages: list[Outgoing], send: Callable[[Outgoing], Awaitable[Awaitable[object]]]
) -> Awaitable[None]:
    """Hand every message to ``send``; the result completes once all are acknowledged and
    raises PublishError if any is not."""
    futures: list[Awaitable[object]] = []
    try:
        for message in messages:
            futures.append(await send(message))
    except Exception as exc:
        raise PublishError(f"the broker refused a write: {type(exc).__name__}") from None
    return _all_acknowledged(futures)


async def _all_acknowledged(futures: list[Awaitable[object]]) -> None:
    results = await asyncio.gather(*futures, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise PublishError(
            f"the broker did not acknowledge {len(failures)} of {len(results)} records: "
            f"{type(failures[0]).__name__}"
        )


class PollInterrupted(StreamappError):
    """This worker stopped being the one that polls (it lost leadership or is stopping)."""


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
    #: execution_time of the newest record this poll saw
    newest_record_at: datetime | None = None
    error: BaseException | None = None

    def summary(self) -> str:
        span = (
            f"{self.windows[0].since.isoformat()}..{self.windows[-1].until.isoformat()}"
            if self.windows
            else "-"
        )
        outcome = "ok" if self.error is None else f"failed ({type(self.error).__name__})"
        return (
            f"poll source={self.source_name} window={span} windows={self.windows_done}/"
            f"{len(self.windows)} pages={self.pages} records={self.records} "
            f"malformed={self.malformed} requests={self.requests} "
            f"duration={self.duration:.3f}s {outcome}"
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


async def poll_once(
    source_name: str,
    client: PageSource,
    publisher: Publisher,
    checkpoints: CheckpointStore,
    *,
    lookback: timedelta,
    overlap: timedelta,
    max_window: timedelta = timedelta(days=1),
    now: datetime | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    page_limit: int = 100,
    clock: Callable[[], datetime] = utcnow,
) -> PollReport:
    """Walk ``[checkpoint - overlap, now)`` window by window; return what was done.

    Errors are recorded in the report and re-raised, after the report is complete.
    """
    report = PollReport(source_name)
    current = checkpoints.get(source_name)
    moment = as_utc(now or clock())
    report.windows = plan_windows(
        current.until if current else None,
        now=moment,
        lookback=lookback,
        overlap=overlap,
        max_window=max_window,
    )
    try:
        for window in report.windows:
            pending: list[Awaitable[None]] = []
            window_records = 0
            newest: datetime | None = None
            async for page in client.pages(
                since=window.since, until=window.until, limit=page_limit
            ):
                report.pages += 1
                report.requests += page.request_count
                window_records += len(page.records)
                report.malformed += len(page.malformed)
                if page.records:
                    first = as_utc(page.records[0].execution_time)  # newest first
                    newest = first if newest is None else max(newest, first)
                pending.append(await publisher.publish(source_name, page))
                if not keep_going():
                    raise PollInterrupted(f"poll of {source_name!r} interrupted")
            for acknowledged in pending:
                await acknowledged
            previous = checkpoints.get(source_name)
            last_seen = previous.last_record_at if previous else None
            if newest is not None and (last_seen is None or newest > last_seen):
                last_seen = newest
            updated = Checkpoint(
                until=advance(previous.until if previous else None, window),
                updated_at=clock(),
                records=(previous.records if previous else 0) + window_records,
                last_record_at=last_seen,
            )
            await checkpoints.put(source_name, updated)
            report.records += window_records
            if newest is not None and (
                report.newest_record_at is None or newest > report.newest_record_at
            ):
                report.newest_record_at = newest
            report.windows_done += 1
            report.checkpoint = updated.until
            log.info(
                "checkpoint source=%s until=%s window=%d/%d records=%d",
                source_name,
                updated.until.isoformat(),
                report.windows_done,
                len(report.windows),
                window_records,
            )
    except BaseException as exc:
        report.error = exc
        raise
    finally:
        report.duration = time.monotonic() - report.started
    return report

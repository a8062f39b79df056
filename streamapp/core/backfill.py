"""Backfill: walk a past range of one source into the raw topic, resumable, with progress.

    faust -A streamapp.worker.app backfill --source NAME --since 30d [--until WHEN]

Three layers, in this order in the file:

- pure: reading ``--since``/``--until`` (:func:`resolve_range`), planning the windows that
  are still to do given the windows already done (:func:`plan_backfill`), and the progress
  meter (:class:`ProgressMeter`: records, pages, rate, ETA by windows remaining);
- orchestration: :func:`run_backfill` walks the planned windows oldest first with an
  injected client, publisher and progress store, like ``collector.poll_once``;
- Kafka: :class:`RawTopicPublisher` writes records exactly as the poller does (the
  ``RawEnvelope`` JSON, keyed by record id, ``source_name`` header, malformed records to the
  dead-letter topic), so downstream dedupe treats a backfilled record like a polled one;
  :class:`KafkaProgressStore` keeps the acknowledged windows in a compacted topic.

Resumption. A window is *done* when the broker has acknowledged every record of it; only
then is one message written to ``<app_id>-backfills`` (one partition, compacted), keyed
``source|window since|window until`` with a :class:`WindowDone` value. At start every done
window of the source is read back, and the part of the requested range they cover is not
asked for again; the rest is cut into windows (adjacent to a covered part, a new window
reaches back ``EDGE`` into it, as the poller's windows do). Because coverage, not the exact
command line, decides, ``--since 30d`` run again an hour later skips what the first run
finished and walks only what is new. ``--fresh`` ignores the saved windows. A stale read
(the broker reporting an old end offset) can only hide a done window, which means the
window is walked again and its records are dropped downstream by id: never a loss. The
poller's checkpoint is neither read nor moved.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TextIO, cast

import msgspec

from streamapp.core.durations import parse_duration
from streamapp.core.errors import ConfigError, PublishError
from streamapp.core.ingest import PageSource, page_messages, send_all
from streamapp.core.models import Outgoing, as_utc, rfc3339
from streamapp.core.windows import API_MAX_WINDOW, EDGE, MAX_LOOKBACK, Window, plan_windows
from streamapp.kafka.clients import read_topic_latest
from streamapp.pagerduty.client import Page

__all__ = [
    "KafkaProgressStore",
    "ProgressMeter",
    "RawTopicPublisher",
    "WindowDone",
    "plan_backfill",
    "resolve_range",
    "run_backfill",
]

DEFAULT_WINDOW = timedelta(days=1)
_encode = msgspec.json.Encoder().encode
_RELATIVE_RE = re.compile(r"^\s*\d+(?:\.\d+)?\s*[smhd]\s*$")


# =========================================================================== pure: range


def parse_when(text: str, *, now: datetime, what: str) -> datetime:
    """``now``, a duration ago (``30d``, ``12h``, ``90m``, ``45s``) or ISO 8601 (naive = UTC).

    ConfigError naming ``what`` otherwise.
    """
    value = text.strip()
    if value.lower() == "now":
        return as_utc(now)
    if _RELATIVE_RE.match(value):
        try:
            ago = parse_duration(value, what=what)
        except ConfigError:
            raise
        try:
            return as_utc(now) - ago
        except OverflowError:
            raise ConfigError(f"{what}: {text!r} reaches before year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{what}: expected ISO 8601 (2024-05-01, 2024-05-01T12:00:00Z), 'now' or a"
            f" duration ago such as 30d, 12h or 90m, got {text!r}"
        ) from None
    return as_utc(moment)


def _to_millisecond(moment: datetime) -> datetime:
    # PagerDuty takes milliseconds; windows and progress keys use what is actually sent
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def resolve_range(since: str, until: str | None, *, now: datetime) -> tuple[datetime, datetime]:
    """The absolute ``[since, until)`` of a backfill; ConfigError on a range PagerDuty lacks.

    ``until`` defaults to ``now`` and is capped at ``now``; ``since`` must be before it and
    no older than 365 days (PagerDuty keeps audit records for 12 months).
    """
    now = as_utc(now)
    start = _to_millisecond(parse_when(since, now=now, what="--since"))
    end = _to_millisecond(min(parse_when(until, now=now, what="--until"), now) if until else now)
    if start >= end:
        raise ConfigError(f"--since ({rfc3339(start)}) must be before --until ({rfc3339(end)})")
    if start < _to_millisecond(now - MAX_LOOKBACK):
        raise ConfigError(
            f"--since ({rfc3339(start)}) is older than 365 days: PagerDuty keeps audit"
            " records for 12 months"
        )
    return start, end


def window_size(text: str) -> timedelta:
    """``--window``: a duration from 1 minute to 31 days."""
    size = parse_duration(text, what="--window")
    if size < timedelta(minutes=1) or size > API_MAX_WINDOW:
        raise ConfigError(f"--window: must be between 1m and 31d, got {text!r}")
    return size


# =========================================================================== pure: plan


class WindowDone(msgspec.Struct, kw_only=True, frozen=True):
    """A message on ``<app_id>-backfills``: every record of this window was acknowledged."""

    source_name: str
    since: datetime
    until: datetime
    records: int = 0
    pages: int = 0
    malformed: int = 0
    done_at: datetime
    #: the backfill range the window belonged to (information only)
    backfill_since: datetime | None = None
    backfill_until: datetime | None = None


_decode_done = msgspec.json.Decoder(WindowDone).decode


def progress_key(source_name: str, window: Window) -> bytes:
    return f"{source_name}|{rfc3339(window.since)}|{rfc3339(window.until)}".encode()


def merge(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching spans joined; sorted."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class BackfillPlan:
    since: datetime
    until: datetime
    #: windows still to walk, oldest first
    windows: list[Window]
    #: parts of the range already done (merged, clipped to the range)
    covered: list[tuple[datetime, datetime]]

    @property
    def covered_span(self) -> timedelta:
        return sum((end - start for start, end in self.covered), timedelta(0))


def plan_backfill(
    since: datetime,
    until: datetime,
    *,
    done: Iterable[tuple[datetime, datetime]] = (),
    max_window: timedelta = DEFAULT_WINDOW,
) -> BackfillPlan:
    """The windows of ``[since, until)`` not covered by ``done``, oldest first.

    A part adjacent to a covered span starts ``EDGE`` inside it, so a record exactly on the
    boundary is asked for whichever way PagerDuty treats ``since``/``until``.
    """
    since, until = as_utc(since), as_utc(until)
    covered = [
        (max(start, since), min(end, until))
        for start, end in merge((as_utc(a), as_utc(b)) for a, b in done)
        if end > since and start < until
    ]
    gaps: list[tuple[datetime, datetime]] = []
    cursor = since
    for start, end in covered:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < until:
        gaps.append((cursor, until))
    windows: list[Window] = []
    for start, end in gaps:
        start = max(since, start - EDGE) if start > since else start
        end = min(until, end + EDGE) if end < until else end
        windows.extend(
            plan_windows(
                None, now=end, lookback=end - start, overlap=timedelta(0), max_window=max_window
            )
        )
    return BackfillPlan(since=since, until=until, windows=windows, covered=covered)


# =========================================================================== pure: meter


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


@dataclass
class ProgressMeter:
    """What a backfill has done so far and how long the rest should take."""

    source_name: str
    windows_total: int
    windows_skipped: int = 0
    windows_done: int = 0
    records: int = 0
    pages: int = 0
    malformed: int = 0
    started: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if not self.started:
            self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self.started, 1e-9)

    @property
    def remaining(self) -> int:
        return self.windows_total - self.windows_done

    @property
    def rate(self) -> float:
        """Records per second in this run."""
        return self.records / self.elapsed

    @property
    def eta(self) -> float | None:
        """Seconds left, from the mean time of this run's finished windows."""
        if self.remaining == 0:
            return 0.0
        if self.windows_done == 0:
            return None
        return self.elapsed / self.windows_done * self.remaining

    def page(self, records: int, malformed: int = 0) -> None:
        self.pages += 1
        self.records += records
        self.malformed += malformed

    def window_done(self) -> None:
        self.windows_done += 1

    def bar(self, width: int = 80) -> str:
        """One redrawable line for a terminal."""
        stats = (
            f" {self.windows_done}/{self.windows_total} windows  {self.records:,} records"
            f"  {self.pages:,} pages  {self.rate:,.0f}/s  ETA {format_eta(self.eta)}"
        )
        room = max(10, min(40, width - len(stats) - 3))
        filled = room if not self.windows_total else room * self.windows_done // self.windows_total
        return f"[{'#' * filled}{'.' * (room - filled)}]{stats}"

    def window_line(self, window: Window, records: int, pages: int) -> str:
        """One line per finished window, for a pipe or a log."""
        return (
            f"backfill source={self.source_name} window {self.windows_done}/{self.windows_total}"
            f" {rfc3339(window.since)}..{rfc3339(window.until)} records={records} pages={pages}"
            f" total={self.records} rate={self.rate:.0f}/s eta={format_eta(self.eta)}"
        )


class ProgressView:
    """Shows a meter on a stream: a redrawn bar on a terminal, a line per window otherwise."""

    def __init__(self, meter: ProgressMeter, stream: TextIO, *, tty: bool | None = None) -> None:
        self.meter = meter
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._last_draw = 0.0
        self._drawn = False

    def say(self, line: str) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def on_page(self) -> None:
        if self.tty and time.monotonic() - self._last_draw >= 0.1:
            self._draw()

    def on_window(self, window: Window, records: int, pages: int) -> None:
        if self.tty:
            self._draw()
        else:
            self.say(self.meter.window_line(window, records, pages))

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self.stream.write("\r\x1b[K" + self.meter.bar())
        self.stream.flush()
        self._drawn = True


# =========================================================================== orchestration


class Publisher(Protocol):
    async def publish(self, source_name: str, page: Page) -> Awaitable[None]: ...


class ProgressStore(Protocol):
    async def done_windows(self, source_name: str) -> list[WindowDone]: ...
    async def mark_done(self, done: WindowDone) -> None: ...


@dataclass
class BackfillResult:
    plan: BackfillPlan
    meter: ProgressMeter
    error: BaseException | None = None


async def run_backfill(
    source_name: str,
    client: PageSource,
    publisher: Publisher,
    store: ProgressStore,
    view: Callable[[ProgressMeter], ProgressView],
    *,
    since: datetime,
    until: datetime,
    max_window: timedelta = DEFAULT_WINDOW,
    fresh: bool = False,
    page_limit: int = 100,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackfillResult:
    """Walk the windows of ``[since, until)`` not yet done; raise what stopped it.

    A window is recorded as done only after the broker acknowledged each of its records.
    """
    done = [] if fresh else await store.done_windows(source_name)
    plan = plan_backfill(
        since, until, done=[(d.since, d.until) for d in done], max_window=max_window
    )
    meter = ProgressMeter(source_name, windows_total=len(plan.windows))
    show = view(meter)
    result = BackfillResult(plan=plan, meter=meter)
    pending: list[Awaitable[None]] = []
    show.say(_start_line(plan, source_name, fresh=fresh))
    try:
        for window in plan.windows:
            pending = []
            records = pages = malformed = 0
            async for page in client.pages(
                since=window.since, until=window.until, limit=page_limit
            ):
                pages += 1
                records += len(page.records)
                malformed += len(page.malformed)
                meter.page(len(page.records), len(page.malformed))
                pending.append(await publisher.publish(source_name, page))
                show.on_page()
            for acknowledged in pending:
                await acknowledged
            await store.mark_done(
                WindowDone(
                    source_name=source_name,
                    since=window.since,
                    until=window.until,
                    records=records,
                    pages=pages,
                    malformed=malformed,
                    done_at=clock(),
                    backfill_since=plan.since,
                    backfill_until=plan.until,
                )
            )
            meter.window_done()
            show.on_window(window, records, pages)
    except BaseException as exc:
        result.error = exc
        for waiting in pending:  # never awaited now: no "coroutine was never awaited" noise
            if inspect.iscoroutine(waiting):
                waiting.close()
        raise
    finally:
        show.close()
    return result


def _start_line(plan: BackfillPlan, source_name: str, *, fresh: bool) -> str:
    span = f"{rfc3339(plan.since)}..{rfc3339(plan.until)}"
    head = f"backfill source={source_name} range={span}"
    if fresh:
        return f"{head}: {len(plan.windows)} windows (--fresh: saved progress ignored)"
    if not plan.covered:
        return f"{head}: {len(plan.windows)} windows"
    parts = ", ".join(f"{rfc3339(a)}..{rfc3339(b)}" for a, b in plan.covered[:3])
    more = f" and {len(plan.covered) - 3} more" if len(plan.covered) > 3 else ""
    if not plan.windows:
        return f"{head}: already done by an earlier backfill ({parts}{more}); nothing to walk"
    return (
        f"{head}: resuming, skipping {_span_text(plan.covered_span)} already done by an"
        f" earlier run ({parts}{more}); {len(plan.windows)} windows to walk"
    )


def _span_text(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{seconds}s"


def summary_line(result: BackfillResult) -> str:
    meter = result.meter
    return (
        f"backfill source={meter.source_name} done: {meter.records} records"
        f" ({meter.malformed} malformed) in {meter.pages} pages, {meter.windows_done} windows"
        f" in {meter.elapsed:.1f}s ({meter.rate:.0f} records/s)"
    )


# =========================================================================== Kafka


class RawTopicPublisher:
    """The poller's encoding on an aiokafka producer: RawEnvelope keyed by record id."""

    def __init__(self, producer: Any, *, raw_topic: str, dlq_topic: str) -> None:
        self.producer = producer
        self.raw_topic = raw_topic
        self.dlq_topic = dlq_topic

    async def publish(self, source_name: str, page: Page) -> Awaitable[None]:
        messages = page_messages(
            source_name,
            page,
            raw_topic=self.raw_topic,
            dlq_topic=self.dlq_topic,
            now=datetime.now(UTC),
        )

        async def send(m: Outgoing) -> Awaitable[object]:
            return cast(
                Awaitable[object],
                await self.producer.send(m.topic, m.value, key=m.key, headers=m.headers),
            )

        return await send_all(messages, send)


class KafkaProgressStore:
    """Done windows as messages on a one-partition compacted topic, keyed by window."""

    def __init__(self, producer: Any, bootstrap: Sequence[str], topic: str) -> None:
        self.producer = producer
        self.bootstrap = list(bootstrap)
        self.topic = topic

    async def done_windows(self, source_name: str) -> list[WindowDone]:
        latest = await read_topic_latest(self.bootstrap, self.topic) or {}
        prefix = f"{source_name}|".encode()
        done = []
        for key, value in latest.items():
            if key is None or value is None or not key.startswith(prefix):
                continue
            try:
                item = _decode_done(value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # unreadable progress only means walking that window again
            if item.source_name == source_name and item.since < item.until:
                done.append(item)
        return done

    async def mark_done(self, done: WindowDone) -> None:
        key = progress_key(done.source_name, Window(done.since, done.until))
        try:
            await (await self.producer.send(self.topic, _encode(done), key=key, partition=0))
        except Exception as exc:
            raise PublishError(
                f"the broker did not acknowledge the progress of a window: {type(exc).__name__}"
            ) from None

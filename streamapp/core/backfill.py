"""Backfill planning and progress display: pure, no I/O.

    faust -A streamapp.app backfill --source NAME --since 30d [--until WHEN]

- reading ``--since``/``--until`` (:func:`resolve_range`);
- planning the windows still to do, given the windows already done (:func:`plan_backfill`):
  coverage, not the exact command line, decides, so ``--since 30d`` run again an hour later
  skips what the first run finished and walks only what is new; adjacent to a covered part
  a new window reaches back ``EDGE`` into it, as the poller's windows do;
- the progress meter (:class:`ProgressMeter`: records, pages, rate, ETA by windows left)
  and how it is shown (:class:`ProgressView`).

The walk itself is the one ingestion loop (``streamapp.core.ingest.backfill_source``); done
windows are recorded in the progress store once the broker acknowledged their records. A
stale read of that store can only hide a done window, which means walking it again and
dropping its records downstream by id: never a loss.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TextIO

from streamapp.core.durations import parse_duration
from streamapp.core.errors import ConfigError
from streamapp.core.models import as_utc, rfc3339
from streamapp.core.windows import API_MAX_WINDOW, EDGE, MAX_LOOKBACK, Window, plan_windows

__all__ = [
    "BackfillPlan",
    "ProgressMeter",
    "ProgressView",
    "plan_backfill",
    "resolve_range",
    "start_line",
    "summary_line",
    "window_size",
]

DEFAULT_WINDOW = timedelta(days=1)
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


# =========================================================================== lines


def start_line(plan: BackfillPlan, source_name: str, *, fresh: bool) -> str:
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


def summary_line(meter: ProgressMeter) -> str:
    return (
        f"backfill source={meter.source_name} done: {meter.records} records"
        f" ({meter.malformed} malformed) in {meter.pages} pages, {meter.windows_done} windows"
        f" in {meter.elapsed:.1f}s ({meter.rate:.0f} records/s)"
    )

"""Which time windows a poll walks: pure arithmetic on checkpoints, no I/O.

A source's checkpoint is the ``until`` of the newest window whose every record the broker
has acknowledged. A poll walks ``[checkpoint - overlap, now)``; a new source starts at
``now - lookback``. Long spans are cut into windows of at most ``max_window`` (PagerDuty
refuses more than 31 days), walked oldest first so each acknowledged window can move the
checkpoint and a restart resumes where it stopped.

PagerDuty does not document whether ``since`` and ``until`` are inclusive. Adjacent
windows therefore overlap by ``EDGE`` so a record exactly on a boundary is inside at least
one of them whichever way the API behaves; the duplicates this makes are removed by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from streamapp.core.models import as_utc

#: PagerDuty's limit on until - since
API_MAX_WINDOW = timedelta(days=31)
#: how far adjacent windows overlap at their shared edge
EDGE = timedelta(seconds=1)
#: a last window this short is folded into the one before it
SLIVER = timedelta(minutes=1)
#: PagerDuty keeps audit records for 12 months
MAX_LOOKBACK = timedelta(days=365)


@dataclass(frozen=True, order=True)
class Window:
    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if not self.since < self.until:
            raise ValueError(f"empty window: since {self.since} is not before until {self.until}")
        if self.until - self.since > API_MAX_WINDOW:
            raise ValueError("a window may span at most 31 days")

    @property
    def span(self) -> timedelta:
        return self.until - self.since


def poll_start(
    checkpoint: datetime | None, *, now: datetime, lookback: timedelta, overlap: timedelta
) -> datetime:
    """Where a poll starts: before the checkpoint by ``overlap``, or ``lookback`` ago for a new
    source; never before ``now - 365 days`` (PagerDuty has nothing older)."""
    now = as_utc(now)
    oldest = now - min(lookback, MAX_LOOKBACK)
    if checkpoint is None:
        return oldest
    return max(as_utc(checkpoint) - overlap, now - MAX_LOOKBACK)


def plan_windows(
    checkpoint: datetime | None,
    *,
    now: datetime,
    lookback: timedelta,
    overlap: timedelta,
    max_window: timedelta = timedelta(days=1),
) -> list[Window]:
    """The windows one poll walks, oldest first; empty when there is nothing to ask for."""
    if max_window <= EDGE or max_window > API_MAX_WINDOW:
        raise ValueError("max_window must be longer than 1 s and at most 31 days")
    now = as_utc(now)
    since = poll_start(checkpoint, now=now, lookback=lookback, overlap=overlap)
    windows: list[Window] = []
    while since < now:
        until = min(since + max_window, now)
        if now - until <= SLIVER and now - since <= API_MAX_WINDOW:
            until = now  # no separate request for the few seconds the edges added up to
        windows.append(Window(since, until))
        if until >= now:
            break
        since = until - EDGE
    return windows


def advance(checkpoint: datetime | None, acknowledged: Window) -> datetime:
    """The checkpoint after ``acknowledged`` was fully written: it never moves backwards."""
    if checkpoint is None:
        return acknowledged.until
    return max(as_utc(checkpoint), acknowledged.until)

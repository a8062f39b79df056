"""How far back each poll reaches: an overlap sized from what actually arrived late.

PagerDuty can make a record visible after its ``execution_time`` (how long after is not
documented). A poll that reaches back ``PAGERDUTY_POLL_OVERLAP`` (5 minutes by default)
behind its checkpoint catches such records, but on a busy account it reads those minutes
again on every poll: six times the records a 60 s poll needs.

:class:`LateTracker` keeps, per source, the ids it has seen in the recent past and the
lateness of every record it saw for the first time behind the previous checkpoint. The
overlap a poll uses is then:

- the configured overlap while learning (the first ``learn_for`` of watching a source,
  and again for ``learn_for`` after any record arrived later than the learned overlap),
  and on every ``probe_every``-th poll, which keeps measuring;
- otherwise one and a half times the largest lateness seen in the last ``remember_for``,
  never less than ``floor`` (clock skew and the time a request takes) nor more than the
  configured overlap. A late record's lateness is how far behind the previous checkpoint
  it was found: the overlap a poll needs to catch it, never more than how long after its
  ``execution_time`` it became visible.

What it guarantees: a record is caught if it becomes visible within the learned overlap,
or within the configured overlap while learning or on a probe poll; a record later than
the learned overlap switches the source back to learning. Pure: no clock of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from streamapp.core.windows import EDGE


@dataclass
class LateTracker:
    configured: timedelta
    floor: timedelta = timedelta(seconds=15)
    learn_for: timedelta = timedelta(hours=1)
    probe_every: int = 30
    remember_for: timedelta = timedelta(hours=24)
    #: record id → execution_time, of records seen within the configured overlap
    recent: dict[str, datetime] = field(default_factory=dict)
    #: (when seen, lateness) of records that arrived behind the previous checkpoint
    lateness: deque[tuple[datetime, timedelta]] = field(default_factory=deque)
    learning_since: datetime | None = None
    polls: int = 0
    late_records: int = 0

    def learned(self, now: datetime) -> timedelta:
        """One and a half times the largest recent lateness, within [floor, configured]."""
        while self.lateness and now - self.lateness[0][0] > self.remember_for:
            self.lateness.popleft()
        largest = max((late for _, late in self.lateness), default=timedelta(0))
        return min(self.configured, max(self.floor, largest * 3 / 2))

    def learning(self, now: datetime) -> bool:
        return self.learning_since is None or now - self.learning_since < self.learn_for

    def overlap(self, now: datetime) -> timedelta:
        """The overlap of the next poll."""
        if self.configured <= self.floor:
            return self.configured
        if self.learning_since is None:
            self.learning_since = now
        if self.learning(now) or self.polls % self.probe_every == 0:
            return self.configured
        return self.learned(now)

    def observe(
        self,
        records: Iterable[tuple[str, datetime]],
        *,
        previous_until: datetime | None,
        now: datetime,
        overlap: timedelta,
    ) -> int:
        """Records (id, execution_time) a poll with ``overlap`` saw; returns how many were
        late (first seen behind the checkpoint the poll started from)."""
        measuring = self.polls > 0 and previous_until is not None
        late = 0
        learned = self.learned(now)
        for record_id, executed in records:
            if record_id in self.recent:
                continue
            self.recent[record_id] = executed
            if measuring and previous_until is not None and executed < previous_until - EDGE:
                # what it took to catch it: how far behind the previous checkpoint it lay.
                # It was not visible when that poll ran, so this is under its true lateness;
                # ``now - executed`` also counted the wait for this poll (up to an interval),
                # and the overlap it taught was a whole interval too long.
                lateness = previous_until - executed
                self.lateness.append((now, lateness))
                late += 1
                if lateness > learned and not self.learning(now):
                    self.learning_since = now  # later than we planned for: learn again
        self.polls += 1
        self.late_records += late
        horizon = now - self.configured - timedelta(minutes=1)
        if len(self.recent) > 1000 or self.polls % 10 == 0:
            self.recent = {i: t for i, t in self.recent.items() if t >= horizon}
        return late

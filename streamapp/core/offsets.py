"""Offset bookkeeping that catches records a consumer skipped: pure, no Kafka.

faust has been seen to skip ranges of offsets on a partition when a worker starts or
rebalances with a backlog (faust-streaming #216, #221, #312, #606). Whatever the cause, we do
not trust the stream to be contiguous: the tracker knows the next offset it expects on each
partition and reports every range it was not given, so the agent reads that range itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gap:
    partition: int
    start: int  # first missing offset
    end: int  # first offset after the gap (exclusive)

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class OffsetTracker:
    """Expected next offset per partition; ``observe`` returns the gap an offset reveals."""

    _expected: dict[int, int] = field(default_factory=dict)

    def expect(self, partition: int, offset: int) -> None:
        """Where a partition's stream should resume (the committed offset)."""
        self._expected[partition] = offset

    def expected(self, partition: int) -> int | None:
        return self._expected.get(partition)

    def forget(self, partition: int) -> None:
        self._expected.pop(partition, None)

    def reset(self) -> None:
        self._expected.clear()

    def observe(self, partition: int, offset: int) -> Gap | None:
        """Record that ``offset`` was delivered. A jump forward is a gap; a step back (a replay
        after a rebalance) just moves the expectation back, since replays are deduplicated."""
        expected = self._expected.get(partition)
        self._expected[partition] = offset + 1
        if expected is not None and offset > expected:
            return Gap(partition, expected, offset)
        return None

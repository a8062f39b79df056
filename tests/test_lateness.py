"""The learned overlap: full while learning and on probes, else sized from late records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamapp.core.lateness import LateTracker

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def polled(tracker: LateTracker, now: datetime, records, checkpoint: datetime | None):
    overlap = tracker.overlap(now)
    late = tracker.observe(records, previous_until=checkpoint, now=now, overlap=overlap)
    return overlap, late


def test_a_new_source_uses_the_configured_overlap_while_it_learns():
    tracker = LateTracker(configured=FIVE_MIN)
    for minute in range(59):
        now = T0 + timedelta(minutes=minute)
        assert tracker.overlap(now) == FIVE_MIN
        tracker.observe([], previous_until=now, now=now, overlap=FIVE_MIN)


def test_after_learning_the_overlap_is_one_and_a_half_times_the_lateness_seen():
    tracker = LateTracker(configured=FIVE_MIN, probe_every=1000)
    now = T0
    polled(tracker, now, [("a", now - timedelta(seconds=5))], None)
    # a record executed 40 s before the previous checkpoint, seen only now: an overlap of
    # 40 s caught it (the minute it waited for this poll is no part of what a poll needs)
    now = T0 + timedelta(minutes=1)
    _, late = polled(tracker, now, [("b", T0 - timedelta(seconds=40))], checkpoint=T0)
    assert late == 1
    now = T0 + timedelta(hours=1, minutes=1)
    overlap = tracker.overlap(now)
    assert overlap == timedelta(seconds=40 * 1.5)
    # nothing late: the floor holds
    quiet = LateTracker(configured=FIVE_MIN, probe_every=1000)
    polled(quiet, T0, [], None)
    assert quiet.overlap(T0 + timedelta(hours=2)) == quiet.floor


def test_every_probe_poll_reaches_back_the_whole_configured_overlap():
    tracker = LateTracker(configured=FIVE_MIN, probe_every=3, learn_for=timedelta(0))
    overlaps = []
    for minute in range(7):
        now = T0 + timedelta(minutes=minute)
        overlaps.append(polled(tracker, now, [], now)[0])
    assert overlaps.count(FIVE_MIN) == 3 and overlaps[0] == overlaps[3] == overlaps[6] == FIVE_MIN


def test_a_record_later_than_the_learned_overlap_starts_learning_again():
    tracker = LateTracker(configured=FIVE_MIN, learn_for=timedelta(minutes=10), probe_every=1000)
    polled(tracker, T0, [], None)
    now = T0 + timedelta(minutes=20)
    assert tracker.overlap(now) == tracker.floor
    # caught by a probe (or the configured overlap): 3 minutes late
    tracker.observe(
        [("late", now - timedelta(minutes=3))], previous_until=now, now=now, overlap=FIVE_MIN
    )
    assert tracker.overlap(now + timedelta(minutes=1)) == FIVE_MIN


def test_the_first_poll_measures_nothing_and_repeats_are_not_late():
    tracker = LateTracker(configured=FIVE_MIN)
    _, late = polled(tracker, T0, [("a", T0 - timedelta(minutes=4))], checkpoint=T0)
    assert late == 0  # no earlier poll of ours: nothing to compare with
    now = T0 + timedelta(minutes=1)
    _, late = polled(tracker, now, [("a", T0 - timedelta(minutes=4))], checkpoint=T0)
    assert late == 0  # seen before

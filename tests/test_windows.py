import itertools
from datetime import UTC, datetime, timedelta

import pytest

from streamapp.core.windows import API_MAX_WINDOW, EDGE, Window, advance, plan_windows

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_new_source_reaches_back_lookback_oldest_window_first():
    windows = plan_windows(None, now=NOW, lookback=timedelta(days=3), overlap=timedelta(minutes=5))
    assert windows[0].since == NOW - timedelta(days=3)
    assert windows[-1].until == NOW
    assert windows == sorted(windows)
    assert len(windows) == 3


def test_adjacent_windows_overlap_by_edge_so_boundary_records_are_never_skipped():
    windows = plan_windows(None, now=NOW, lookback=timedelta(days=3), overlap=timedelta(0))
    for older, newer in itertools.pairwise(windows):
        assert newer.since == older.until - EDGE


def test_poll_after_checkpoint_starts_overlap_before_it():
    checkpoint = NOW - timedelta(seconds=60)
    windows = plan_windows(
        checkpoint, now=NOW, lookback=timedelta(days=1), overlap=timedelta(minutes=5)
    )
    assert windows == [Window(checkpoint - timedelta(minutes=5), NOW)]


def test_no_window_spans_more_than_31_days_even_when_asked():
    windows = plan_windows(
        None, now=NOW, lookback=timedelta(days=365), overlap=timedelta(0), max_window=API_MAX_WINDOW
    )
    assert all(w.span <= API_MAX_WINDOW for w in windows)
    assert windows[0].since == NOW - timedelta(days=365)
    assert windows[-1].until == NOW


def test_lookback_is_capped_at_365_days():
    windows = plan_windows(None, now=NOW, lookback=timedelta(days=900), overlap=timedelta(0))
    assert windows[0].since == NOW - timedelta(days=365)


def test_stale_checkpoint_older_than_retention_starts_at_retention():
    windows = plan_windows(
        NOW - timedelta(days=500), now=NOW, lookback=timedelta(days=1), overlap=timedelta(0)
    )
    assert windows[0].since == NOW - timedelta(days=365)


def test_checkpoint_in_future_gives_no_window():
    assert (
        plan_windows(
            NOW + timedelta(hours=1), now=NOW, lookback=timedelta(days=1), overlap=timedelta(0)
        )
        == []
    )


def test_window_rejects_empty_and_oversized_spans():
    with pytest.raises(ValueError):
        Window(NOW, NOW)
    with pytest.raises(ValueError):
        Window(NOW - timedelta(days=32), NOW)


def test_advance_never_moves_backwards():
    window = Window(NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    assert advance(None, window) == window.until
    assert advance(NOW, window) == NOW


def test_naive_checkpoint_is_taken_as_utc():
    naive = datetime(2026, 11, 26, 11, 0)
    windows = plan_windows(naive, now=NOW, lookback=timedelta(days=1), overlap=timedelta(0))
    assert windows[0].since == naive.replace(tzinfo=UTC)

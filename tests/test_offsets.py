from streamapp.core.offsets import Gap, OffsetTracker


def test_contiguous_offsets_reveal_no_gap():
    tracker = OffsetTracker()
    tracker.expect(0, 10)
    assert [tracker.observe(0, o) for o in range(10, 15)] == [None] * 5
    assert tracker.expected(0) == 15


def test_skipped_range_is_reported_exactly():
    tracker = OffsetTracker()
    tracker.expect(3, 500)
    assert tracker.observe(3, 500) is None
    assert tracker.observe(3, 506) == Gap(3, 501, 506)
    assert tracker.observe(3, 507) is None


def test_skip_right_after_assignment_is_caught_from_the_committed_offset():
    tracker = OffsetTracker()
    tracker.expect(1, 537)
    assert tracker.observe(1, 548) == Gap(1, 537, 548)


def test_replay_moves_expectation_back_without_a_gap():
    tracker = OffsetTracker()
    tracker.expect(0, 100)
    tracker.observe(0, 100)
    assert tracker.observe(0, 50) is None
    assert tracker.expected(0) == 51


def test_unknown_partition_learns_from_first_offset():
    tracker = OffsetTracker()
    assert tracker.observe(7, 42) is None
    assert tracker.observe(7, 44) == Gap(7, 43, 44)
    assert Gap(7, 43, 44).size == 1

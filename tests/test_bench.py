"""The benchmark suite runs and reports, at a tiny size. Never asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.busy import Account, _poll_costs, _ratio, iso_ms
from bench.common import Result, Row, max_in_window, percentile, print_table
from bench.fleet import write_sources
from bench.memory import _slope_kb_per_id, agent_crash
from streamapp.config import load_settings
from tests.kafka_harness import REPO


def test_percentile_interpolates_between_ranks():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert percentile([5.0], 99) == 5.0


def test_row_ratio_is_value_over_baseline_and_absent_without_one():
    assert Row("b", "m", 50.0, "x", 200.0).ratio == 0.25
    assert Row("b", "m", 50.0, "x").ratio is None


def test_memory_growth_is_a_least_squares_slope():
    samples = [(n, 1000 + n // 10) for n in range(0, 100_001, 10_000)]
    assert _slope_kb_per_id(samples) == pytest.approx(0.1)
    assert _slope_kb_per_id(samples[:2]) is None


def test_agent_crash_names_the_exception_and_our_frame():
    log = (
        "[x] [ERROR] [^Agent]: Crashed reason=AssertionError()\n"
        "Traceback (most recent call last):\n"
        '  File "/r/streamapp/agents.py", line 64, in set_in\n'
        '  File "/v/faust/stores/rocksdb.py", line 476, in _set\n'
        "AssertionError\n"
    )
    crash = agent_crash(log)
    assert crash is not None
    assert "AssertionError()" in crash and "rocksdb.py" in crash and "agents.py" in crash
    assert agent_crash("[x] [INFO] Ready\n") is None


def test_max_in_window_counts_a_half_open_span():
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 3.0], 1.0) == 3
    assert max_in_window([5.0, 1.0, 1.2], 1.0) == 2  # any order
    assert max_in_window([], 60.0) == 0


def test_busy_poll_costs_group_requests_by_until_and_count_the_least():
    import random
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    account = Account(random.Random(1), [{"action": "create"}], scale=1.0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records = list(account.make(start, start + timedelta(seconds=120)))
    assert len(records) == 1200 and len({r["id"] for r in records}) == 1200

    def request(at: float, since: datetime, until: datetime) -> SimpleNamespace:
        query = {"since": iso_ms(since), "until": iso_ms(until)}
        return SimpleNamespace(path="/audit/records", query=query, monotonic=at, status=200)

    first, second = start + timedelta(seconds=60), start + timedelta(seconds=120)
    log = [request(0.0, start, first)] * 7 + [request(1.0, first, second)] * 9
    costs = _poll_costs(log, account)
    owed = [len(account.owed(first)), len(account.owed(second)) - len(account.owed(first))]
    assert [c["requests"] for c in costs] == [7, 9]
    assert [c["new_records"] for c in costs] == owed
    assert [c["least"] for c in costs] == [-(-n // 100) for n in owed]
    assert _ratio(costs) == 16 / sum(c["least"] for c in costs)


def test_fleet_sources_file_is_accepted_by_the_config(tmp_path: Path):
    names = write_sources(tmp_path / "sources.toml", 3)
    settings = load_settings(
        {"STREAMAPP_SOURCES_FILE": str(tmp_path / "sources.toml"), "PAGERDUTY_POLL_INTERVAL": "7"}
    )
    assert sorted(s.name for s in settings.sources) == sorted(names.values())
    assert all(s.poll_interval.total_seconds() == 7 for s in settings.sources)


def test_table_prints_every_row(capsys: pytest.CaptureFixture[str]):
    result = Result("pipeline", rows=[Row("pipeline", "records/s", 10.0, "rec/s", 20.0, "fwd")])
    print_table([result])
    out = capsys.readouterr().out
    assert "records/s" in out and "0.50" in out


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_quick_pipeline_and_backfill_write_positive_numbers(tmp_path: Path):
    """The pipeline (two workers, forward loop) and the backfill command (simulator, CLI) at
    a tiny size: every row present, the numbers positive, every record accounted for."""
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "pipeline,backfill",
            "--size",
            "pipeline=3000",
            "--size",
            "backfill=1500",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads(out.read_text())
    assert document["errors"] == {}
    assert set(document["benchmarks"]) == {"pipeline", "backfill"}
    pipeline = document["benchmarks"]["pipeline"]["metrics"]
    for key in ("records_per_s", "records_per_s_from_worker_start", "forward_records_per_s"):
        assert pipeline[key] > 0, key
    assert set(pipeline["runs"]) == {"pipeline only", "with detections"}
    for label, info in pipeline["runs"].items():
        assert info["output_distinct_ids"] == 3000, label
        assert info["output_messages"] == 3000, label
        assert info["detections"] == (label == "with detections")
    backfill = document["benchmarks"]["backfill"]["metrics"]
    assert backfill["status_429"] == 0
    assert backfill["pages"] >= 30  # a 30-day backfill walks 30 one-day windows
    assert backfill["records_per_s"] > 0 and backfill["requests_per_minute"] > 0
    assert document["benchmarks"]["backfill"]["params"]["backfill_concurrency"] >= 1
    for bench in document["benchmarks"].values():
        assert bench["rows"] and all("ratio" in row for row in bench["rows"])
    assert "records/s" in run.stdout and "429 answers" in run.stdout  # the table

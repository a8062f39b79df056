"""The benchmark suite runs and reports, at a tiny size. Never asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import Result, Row, percentile, print_table
from bench.memory import _slope_kb_per_id, agent_crash
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


def test_table_prints_every_row(capsys: pytest.CaptureFixture[str]):
    result = Result("pipeline", rows=[Row("pipeline", "records/s", 10.0, "rec/s", 20.0, "fwd")])
    print_table([result])
    out = capsys.readouterr().out
    assert "records/s" in out and "0.50" in out


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_quick_pipeline_and_idle_write_positive_numbers(tmp_path: Path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "pipeline,idle",
            "--size",
            "pipeline=12000",
            "--size",
            "idle=2",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads(out.read_text())
    assert document["errors"] == {}
    assert set(document["benchmarks"]) == {"pipeline", "idle"}
    pipeline = document["benchmarks"]["pipeline"]["metrics"]
    for key in ("records_per_s", "records_per_s_from_worker_start", "forward_records_per_s"):
        assert pipeline[key] > 0, key
    assert pipeline["output_distinct_ids"] == 12000
    idle = document["benchmarks"]["idle"]["metrics"]
    assert idle["polls"] >= 2
    assert idle["requests_per_poll"] > 0
    assert idle["cpu_percent"] >= 0 and idle["baseline_cpu_percent"] >= 0
    for bench in document["benchmarks"].values():
        assert bench["rows"] and all("ratio" in row for row in bench["rows"])
    assert "records/s" in run.stdout  # the table

"""Backfill: ``faust -A streamapp.app backfill --source bench --since 30d`` against the
simulator with realistic latency (100-200 ms) and PagerDuty's rate limit (960 requests a
minute per token).

Ceiling: 960 requests/min x 100 records = 1,600 records/s per token (the latency does not
bound it: ``STREAMAPP_BACKFILL_CONCURRENCY`` windows, default 4, are walked at once, and
4 / 150 ms = 27 requests/s > 16). The client's gate is a sliding window (at most 960 starts
in any 60 s), so a short run may go faster than the ceiling at first: 960 requests as fast
as they are answered, then nothing until the minute is over. The target rows are therefore
measured over the whole minutes of the run (from the first request): records that reached
the raw topic and requests started in those minutes. The rate over the whole run (first
request to the last record on the raw topic) is given too, for information.
"""

from __future__ import annotations

import itertools
import math
import os
from datetime import UTC, datetime, timedelta

from bench.common import (
    DLQ,
    OUTPUT,
    RAW,
    TOKEN,
    Command,
    Context,
    Result,
    Row,
    TopicTail,
    create_topics,
    kafka_broker,
    max_in_window,
    realistic_records,
)
from streamapp.devtools.simulator import SimulatorThread

NAME = "backfill"
LATENCY = (0.1, 0.2)
RATE_LIMIT = 960
PAGE = 100
DAYS = 30
TARGET_RATIO = 0.9
CEILING = RATE_LIMIT / 60 * PAGE  # records/s per token


async def run(ctx: Context) -> Result:
    # full: ~1,600 requests (30 windows of ~53 pages): one whole minute at the ceiling,
    # ~85 s in all; quick: ~60 requests
    count = ctx.size(NAME, 160_000, 6_000)
    concurrency = os.environ.get("STREAMAPP_BACKFILL_CONCURRENCY", "4")
    workdir = ctx.dir(NAME)
    result = Result(
        NAME,
        params={
            "days": DAYS,
            "records": count,
            "latency_s": list(LATENCY),
            "rate_limit_per_minute": RATE_LIMIT,
            "backfill_concurrency": int(concurrency),
            "window": "1d",
        },
    )
    now = datetime.now(UTC)
    records = realistic_records(count, days=DAYS - 0.01, seed=11)
    oldest = min(r["execution_time"] for r in records)
    assert datetime.fromisoformat(oldest.replace("Z", "+00:00")) > now - timedelta(days=DAYS)
    arrivals: list[float] = []
    async with kafka_broker(workdir) as kafka:
        raw = kafka.topic(RAW)
        await create_topics(kafka.bootstrap, [raw, kafka.topic(OUTPUT), kafka.topic(DLQ)])
        tail = await TopicTail(
            kafka.bootstrap, raw, on_new=lambda ident, at: arrivals.append(at)
        ).start()
        sim = SimulatorThread(
            tokens={TOKEN: "ok"}, latency=LATENCY, rate_limit_per_minute=RATE_LIMIT
        )
        command = None
        try:
            sim.start()
            sim.add_records(records)
            del records
            env = {
                **kafka.env("backfill"),
                "PAGERDUTY_API_TOKEN": TOKEN,
                "PAGERDUTY_API_URL": sim.base_url,
                "PAGERDUTY_SOURCE_NAME": "bench",
                "STREAMAPP_BACKFILL_CONCURRENCY": concurrency,
            }
            command = Command(
                ["backfill", "--source", "bench", "--since", f"{DAYS}d"],
                env,
                workdir / "backfill.log",
            ).start()
            code = await command.wait(60 + 3 * count / CEILING)
            if code != 0:
                raise RuntimeError(f"backfill exited {code}: {command.log()[-2000:]}")
            done_at = await tail.wait_for(count, wait_s=30)
            if done_at is None:
                raise TimeoutError(f"backfill delivered {tail.count} of {count} records")
            log = [r for r in sim.requests if r.path == "/audit/records"]
        finally:
            if command is not None:
                command.stop()
            sim.stop()
            await tail.stop()
    first = log[0].monotonic
    elapsed = done_at - first
    rate = count / elapsed
    pages = [r for r in log if r.status == 200]
    limited = sum(1 for r in log if r.status == 429)
    starts = [r.monotonic for r in log]
    # the whole minutes of the run (at least one: a tiny run is measured over its length)
    minutes = max(1, math.floor((starts[-1] - first) / 60))
    span = 60.0 * minutes if starts[-1] - first >= 60 else max(1e-9, elapsed)
    in_span = sum(1 for t in starts if t < first + span)
    delivered = sum(1 for t in arrivals if t < first + span)
    per_minute = in_span / (span / 60)
    steady_rate = delivered / span
    busiest = max_in_window(starts, 60.0)
    api_time = sum(r.duration for r in log)
    gaps = [b.monotonic - (a.monotonic + a.duration) for a, b in itertools.pairwise(log)]
    result.metrics = {
        "records_per_s": steady_rate,
        "ceiling_records_per_s": CEILING,
        "ratio": steady_rate / CEILING,
        "measured_over_s": span,
        "records_per_s_whole_run": rate,
        "whole_run_s": elapsed,
        "command_start_to_last_s": done_at - command.started_at,
        "requests": len(log),
        "pages": len(pages),
        "requests_per_minute": per_minute,
        "max_requests_in_any_60s": busiest,
        "records_per_page": count / max(1, len(pages)),
        "status_429": limited,
        "mean_request_s": api_time / max(1, len(log)),
        "mean_client_gap_s": sum(gaps) / len(gaps) if gaps else 0.0,
        "api_busy_fraction": api_time / elapsed,
    }
    target = f"ratio ≥ {TARGET_RATIO}"
    whole = starts[-1] - first >= 60
    result.rows = [
        Row(
            NAME,
            f"records/s, {DAYS}-day backfill, c={concurrency}" + ("" if whole else " (<1 min)"),
            steady_rate,
            "rec/s",
            CEILING,
            "960/min x 100",
            target,
            steady_rate / CEILING >= TARGET_RATIO,
        ),
        Row(
            NAME,
            "requests/min",
            per_minute,
            "req/min",
            float(RATE_LIMIT),
            "rate limit",
            target,
            per_minute / RATE_LIMIT >= TARGET_RATIO,
        ),
        Row(
            NAME,
            "most requests in any 60 s",
            float(busiest),
            "req",
            float(RATE_LIMIT),
            "rate limit",
            "≤ 1.0",
            busiest <= RATE_LIMIT,
        ),
        Row(NAME, "429 answers", float(limited), "count", target="= 0", ok=limited == 0),
        Row(
            NAME,
            "records/s, first request → last record",
            rate,
            "rec/s",
            CEILING,
            "960/min x 100",
        ),
    ]
    result.notes.append(
        f"{len(log)} requests for {count:,} records in {elapsed:.0f} s, "
        f"STREAMAPP_BACKFILL_CONCURRENCY={concurrency}; target rows over the first "
        f"{span:.0f} s (whole minutes); mean answer {api_time / max(1, len(log)) * 1000:.0f} ms"
    )
    return result

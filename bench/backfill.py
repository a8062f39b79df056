"""Backfill: a long history pulled from the simulator with realistic latency and rate limit.

Records/s from the first API request to the last record on the raw topic, against the
ceiling serial requests allow: ``min(rate_limit/60, 1/mean latency)`` pages/s x 100
records/page. The simulator's request log gives pages, 429s and the client's own time
between one answer and the next request.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from bench.common import (
    DLQ,
    OUTPUT,
    RAW,
    TOKEN,
    Context,
    Result,
    Row,
    TopicTail,
    Worker,
    create_topics,
    kafka_broker,
)
from streamapp.devtools.simulator import SimulatorThread, generate_records

NAME = "backfill"
LATENCY = (0.1, 0.2)
RATE_LIMIT = 960
PAGE = 100
TARGET_RATIO = 0.9


def ceiling_pages_per_s(
    latency: tuple[float, float] = LATENCY, per_minute: int = RATE_LIMIT
) -> float:
    return min(per_minute / 60.0, 1.0 / (sum(latency) / 2))


async def run(ctx: Context) -> Result:
    # full: ~1,400 records a day for 30 days (~14-15 pages per 1-day window, ~440 pages,
    # ~70 s at the ceiling); quick: 3 days, ~10 pages
    days = 3 if ctx.quick else 30
    count = ctx.size(NAME, 42_000, 900)
    workdir = ctx.dir(NAME)
    result = Result(
        NAME,
        params={
            "days": days,
            "records": count,
            "latency_s": list(LATENCY),
            "rate_limit_per_minute": RATE_LIMIT,
        },
    )
    now = datetime.now(UTC)
    records = generate_records(
        count, start=now - timedelta(days=days) + timedelta(minutes=2), end=now, seed=11
    )
    ceiling_pages = ceiling_pages_per_s()
    ceiling = ceiling_pages * PAGE
    async with kafka_broker(workdir) as kafka:
        raw = kafka.topic(RAW)
        await create_topics(kafka.bootstrap, [raw, kafka.topic(OUTPUT), kafka.topic(DLQ)])
        tail = await TopicTail(kafka.bootstrap, raw).start()
        sim = SimulatorThread(
            tokens={TOKEN: "ok"}, latency=LATENCY, rate_limit_per_minute=RATE_LIMIT
        )
        worker = None
        try:
            sim.start()
            sim.add_records(records)
            env = {
                **kafka.env("backfill"),
                "PAGERDUTY_API_TOKEN": TOKEN,
                "PAGERDUTY_API_URL": sim.base_url,
                "PAGERDUTY_SOURCE_NAME": "bench",
                "PAGERDUTY_LOOKBACK": f"{days}d",
                # one poll walks the whole history; no second poll inside the measurement
                "PAGERDUTY_POLL_INTERVAL": "600",
            }
            worker = Worker(env, workdir / "worker.log", workdir / "data").start()
            done_at = await tail.wait_for(
                count, wait_s=30 + 3 * count / ceiling, check=worker.check_alive
            )
            if done_at is None:
                raise TimeoutError(f"backfill delivered {tail.count} of {count} records in time")
            log = [r for r in sim.requests if r.path == "/audit/records"]
        finally:
            if worker is not None:
                worker.stop()
            sim.stop()
            await tail.stop()
    first = log[0].monotonic
    elapsed = done_at - first
    rate = count / elapsed
    pages = [r for r in log if r.status == 200]
    limited = sum(1 for r in log if r.status == 429)
    api_time = sum(r.duration for r in log)
    gaps = [b.monotonic - (a.monotonic + a.duration) for a, b in itertools.pairwise(log)]
    mean_gap = sum(gaps) / len(gaps) if gaps else 0.0
    page_rate = len(log) / elapsed
    result.metrics = {
        "records_per_s": rate,
        "ceiling_records_per_s": ceiling,
        "ratio": rate / ceiling,
        "elapsed_s": elapsed,
        "worker_start_to_last_s": done_at - worker.started_at,
        "requests": len(log),
        "pages": len(pages),
        "requests_per_s": page_rate,
        "ceiling_pages_per_s": ceiling_pages,
        "page_ratio": page_rate / ceiling_pages,
        "records_per_page": count / max(1, len(pages)),
        "status_429": limited,
        "mean_request_s": api_time / max(1, len(log)),
        "mean_client_gap_s": mean_gap,
        "max_client_gap_s": max(gaps, default=0.0),
        "api_busy_fraction": api_time / elapsed,
    }
    result.rows = [
        Row(
            NAME,
            f"records/s, {days}-day backfill",
            rate,
            "rec/s",
            ceiling,
            "latency/rate-limit ceiling",
            f"ratio ≥ {TARGET_RATIO}",
            rate / ceiling >= TARGET_RATIO,
        ),
        Row(NAME, "requests/s", page_rate, "req/s", ceiling_pages, "ceiling"),
        Row(NAME, "429 answers", float(limited), "count", target="= 0", ok=limited == 0),
    ]
    result.notes.append(
        f"{len(log)} requests for {count} records ({count / max(1, len(pages)):.0f} per page); "
        f"mean answer {api_time / max(1, len(log)) * 1000:.0f} ms, mean client gap between "
        f"answer and next request {mean_gap * 1000:.0f} ms (max {max(gaps, default=0) * 1000:.0f})"
    )
    return result

"""Idle cost: API requests per poll when there is nothing new, and worker CPU while idle.

Two workers on one broker: one polling a source that has nothing new, and a baseline worker
with no source (stream agents only). Requests are counted from the simulator's log over
whole polls; CPU is utime+stime from /proc/<pid>/stat over the same span.
"""

from __future__ import annotations

import asyncio
import time
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
    polling_env,
    proc_cpu_seconds,
)
from streamapp.devtools.simulator import SimulatorThread, generate_records

NAME = "idle"
POLL_INTERVAL = 2.0
POLL_LINE = "poll source=bench"


async def run(ctx: Context) -> Result:
    polls = ctx.size(NAME, 10, 3)
    min_seconds = 2.0 * polls
    workdir = ctx.dir(NAME)
    result = Result(
        NAME,
        params={"polls": polls, "min_cpu_window_s": min_seconds, "poll_interval_s": POLL_INTERVAL},
    )
    async with kafka_broker(workdir) as kafka:
        base_topics = {
            "raw": "bench_idle_raw",
            "output": "bench_idle_out",
            "dlq": "bench_idle_dlq",
            "notifications": "bench_idle_notifications",
        }
        await create_topics(
            kafka.bootstrap,
            [kafka.topic(t) for t in (RAW, OUTPUT, DLQ)]
            + [kafka.topic(base_topics[k]) for k in ("raw", "output", "dlq")],
        )
        tail = await TopicTail(kafka.bootstrap, kafka.topic(RAW)).start()
        sim = SimulatorThread(tokens={TOKEN: "ok"}, latency=(0.1, 0.2))
        polling = baseline = None
        try:
            sim.start()
            now = datetime.now(UTC)
            sim.add_records(
                generate_records(20, start=now - timedelta(minutes=30), end=now, seed=31)
            )
            env = polling_env(kafka, "idle", sim.base_url, lookback="1h", interval=POLL_INTERVAL)
            polling = Worker(env, workdir / "polling.log", workdir / "data-polling").start()
            baseline = Worker(
                kafka.env("idle-base", **base_topics),
                workdir / "baseline.log",
                workdir / "data-baseline",
            ).start()
            if await tail.wait_for(20, wait_s=90, check=polling.check_alive) is None:
                raise TimeoutError("the history did not reach the raw topic")
            await baseline.wait_ready(wait_s=60)
            # settled: the history polled and one idle poll done
            done = polling.log().count(POLL_LINE)
            await polling.wait_for_log(POLL_LINE, count=done + 1, wait_s=30)
            sim.clear_requests()  # just after a poll ended: the next starts >= 1.5 s later
            done += 1
            cpu = {
                "polling": proc_cpu_seconds(polling.pid),
                "baseline": proc_cpu_seconds(baseline.pid),
            }
            started = time.monotonic()
            await polling.wait_for_log(POLL_LINE, count=done + polls, wait_s=polls * 5 + 30)
            requests = [r for r in sim.requests if r.path == "/audit/records"]
            counted = polling.log().count(POLL_LINE) - done
            remaining = min_seconds - (time.monotonic() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
            elapsed = time.monotonic() - started
            cpu = {
                "polling": 100 * (proc_cpu_seconds(polling.pid) - cpu["polling"]) / elapsed,
                "baseline": 100 * (proc_cpu_seconds(baseline.pid) - cpu["baseline"]) / elapsed,
            }
            polling.check_alive()
            baseline.check_alive()
        finally:
            for worker in (polling, baseline):
                if worker is not None:
                    worker.stop()
            sim.stop()
            await tail.stop()
    per_poll = len(requests) / counted
    statuses = sorted({r.status for r in requests}, key=str)
    result.metrics = {
        "requests_per_poll": per_poll,
        "requests": len(requests),
        "polls": counted,
        "statuses": statuses,
        "records_served": sum(r.records or 0 for r in requests),
        "cpu_percent": cpu["polling"],
        "baseline_cpu_percent": cpu["baseline"],
        "cpu_window_s": elapsed,
    }
    result.rows = [
        Row(
            NAME,
            "API requests per idle poll",
            per_poll,
            "req",
            1.0,
            "one request",
            "= 1",
            abs(per_poll - 1.0) < 1e-9,
        ),
        Row(
            NAME,
            "worker CPU while idle",
            cpu["polling"],
            "% core",
            cpu["baseline"],
            "worker without source",
        ),
    ]
    return result

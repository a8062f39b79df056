"""Many sources on one worker: 1,000 idle sources (a sources file, one token each) polled at
a 60 s interval against the simulator (100-200 ms latency, 960 requests/min per token).

Rows: time from the worker's start to the first poll of every source (vs the interval);
the busiest second of requests (vs the ideal even spread, sources / interval: a
thundering herd would be many times it); requests per source per interval (1: one request
per idle poll, one poll per interval) and how many sources kept that cadence (every gap
between two requests of a token within interval ± 1 s); the worker's CPU over one whole
interval after every source had its first poll, and its RSS, against a worker without
sources started alongside (same broker, own topics).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import defaultdict
from pathlib import Path

from bench.common import (
    DLQ,
    OUTPUT,
    RAW,
    Context,
    Result,
    Row,
    Worker,
    create_topics,
    kafka_broker,
    max_in_window,
)
from streamapp.devtools.simulator import SimulatorThread, fingerprint

NAME = "fleet"
LATENCY = (0.1, 0.2)
CPU_TARGET = 10.0
RSS_TARGET_MB = 400.0
STARTUP_TARGET = 2.0
SPREAD_TARGET = 2.0
#: a gap between two requests of one token further than this from the interval breaks the
#: cadence (the poller ticks every 0.5 s, so a poll starts up to ~0.5 s after it is due)
CADENCE_SLACK = 1.0


def token_for(index: int) -> str:
    return f"bench-fleet-{index:05d}-0123456789abcdef"


def write_sources(path: Path, count: int) -> dict[str, str]:
    """The sources file; fingerprint of each token → source name."""
    lines = []
    names = {}
    for index in range(count):
        name = f"src{index:05d}"
        token = token_for(index)
        names[fingerprint(token)] = name
        lines += ["[[sources]]", f'name = "{name}"', f'token = "{token}"', ""]
    path.write_text("\n".join(lines))
    return names


async def run(ctx: Context) -> Result:
    count = ctx.size(NAME, 1000, 100)
    interval = 10.0 if ctx.quick else 60.0
    workdir = ctx.dir(NAME)
    result = Result(
        NAME,
        params={
            "sources": count,
            "tokens": count,
            "poll_interval_s": interval,
            "latency_s": list(LATENCY),
            "lookback": "1h",
        },
    )
    sources = write_sources(workdir / "sources.toml", count)
    async with kafka_broker(workdir) as kafka:
        base_topics = {
            "raw": "bench_fleet_base_raw",
            "output": "bench_fleet_base_out",
            "dlq": "bench_fleet_base_dlq",
            "notifications": "bench_fleet_base_notifications",
        }
        await create_topics(
            kafka.bootstrap,
            [kafka.topic(t) for t in (RAW, OUTPUT, DLQ)]
            + [kafka.topic(base_topics[k]) for k in ("raw", "output", "dlq")],
        )
        sim = SimulatorThread(tokens={token_for(i): "ok" for i in range(count)}, latency=LATENCY)
        polling = baseline = None
        try:
            sim.start()
            env = {
                **kafka.env("fleet"),
                "STREAMAPP_SOURCES_FILE": str(workdir / "sources.toml"),
                "PAGERDUTY_API_URL": sim.base_url,
                "PAGERDUTY_POLL_INTERVAL": f"{interval:g}",
                "PAGERDUTY_LOOKBACK": "1h",
            }
            polling = Worker(env, workdir / "polling.log", workdir / "data-polling").start()
            baseline = Worker(
                kafka.env("fleet-base", **base_topics),
                workdir / "baseline.log",
                workdir / "data-baseline",
            ).start()
            # every source's first poll
            deadline = polling.started_at + 3 * interval + 60
            first: dict[str, float] = {}
            while len(first) < count:
                polling.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{count - len(first)} sources never polled")
                await asyncio.sleep(0.5)
                for entry in sim.requests:
                    if entry.token_fingerprint is not None:
                        first.setdefault(entry.token_fingerprint, entry.monotonic)
            all_first = max(first.values())
            await baseline.wait_ready(wait_s=30)
            # one whole interval from there: CPU of both workers
            window_start = time.monotonic()
            cpu = {"polling": polling.cpu_seconds(), "baseline": baseline.cpu_seconds()}
            await asyncio.sleep(interval)
            window_s = time.monotonic() - window_start
            cpu = {
                "polling": 100 * (polling.cpu_seconds() - cpu["polling"]) / window_s,
                "baseline": 100 * (baseline.cpu_seconds() - cpu["baseline"]) / window_s,
            }
            rss = {"polling": polling.rss_kb(), "baseline": baseline.rss_kb()}
            polling.check_alive()
            baseline.check_alive()
            # a request is logged when answered: let those of the window's end be answered
            await asyncio.sleep(1.0)
            log = [r for r in sim.requests if r.path == "/audit/records"]
        finally:
            for worker in (polling, baseline):
                if worker is not None:
                    worker.stop()
            sim.stop()
    assert polling is not None
    startup_s = all_first - polling.started_at
    first_request = min(first.values())
    times = [r.monotonic for r in log]
    ideal = count / interval
    busiest = max_in_window(times, 1.0)
    # busiest second of the first round (start-up) and of the interval measured
    busiest_start = max_in_window([t for t in times if t <= all_first], 1.0)
    in_window = [r for r in log if window_start <= r.monotonic < window_start + window_s]
    per_interval = len(in_window) / count / (window_s / interval)
    by_token: dict[str, list[float]] = defaultdict(list)
    for entry in log:
        if entry.token_fingerprint is not None:
            by_token[entry.token_fingerprint].append(entry.monotonic)
    gaps = [b - a for stamps in by_token.values() for a, b in itertools.pairwise(sorted(stamps))]
    kept = sum(
        1
        for stamps in by_token.values()
        if len(stamps) >= 2
        and all(
            abs(b - a - interval) <= CADENCE_SLACK for a, b in itertools.pairwise(sorted(stamps))
        )
    )
    statuses = sorted({str(r.status) for r in log})
    unknown = sorted(set(by_token) - set(sources))
    rss_mb = rss["polling"]["VmRSS"] / 1024
    peak_mb = rss["polling"]["VmHWM"] / 1024
    base_mb = rss["baseline"]["VmRSS"] / 1024
    result.metrics = {
        "startup_to_every_first_poll_s": startup_s,
        "first_request_after_start_s": first_request - polling.started_at,
        "first_round_s": all_first - first_request,
        "ideal_requests_per_s": ideal,
        "busiest_second": busiest,
        "busiest_second_first_round": busiest_start,
        "requests_in_window": len(in_window),
        "window_s": window_s,
        "requests_per_source_per_interval": per_interval,
        "sources_keeping_cadence": kept,
        "mean_gap_s": sum(gaps) / len(gaps) if gaps else None,
        "max_gap_s": max(gaps, default=None),
        "min_gap_s": min(gaps, default=None),
        "statuses": statuses,
        "unknown_tokens": unknown,
        "cpu_percent": cpu["polling"],
        "baseline_cpu_percent": cpu["baseline"],
        "rss_mb": rss_mb,
        "peak_rss_mb": peak_mb,
        "baseline_rss_mb": base_mb,
    }
    result.rows = [
        Row(
            NAME,
            f"start → first poll of all {count} sources",
            startup_s,
            "s",
            interval,
            "poll interval",
            f"ratio ≤ {STARTUP_TARGET:g}",
            startup_s <= STARTUP_TARGET * interval,
        ),
        Row(
            NAME,
            "busiest second of requests",
            float(busiest),
            "req",
            ideal,
            "sources/interval",
            f"ratio ≤ {SPREAD_TARGET:g}",
            busiest <= SPREAD_TARGET * max(1.0, ideal),
        ),
        Row(
            NAME,
            "requests per idle source per interval",
            per_interval,
            "req",
            1.0,
            "one",
            "= 1 (±2 %)",
            abs(per_interval - 1.0) <= 0.02,
        ),
        Row(
            NAME,
            f"  sources polled once per interval ±{CADENCE_SLACK:g} s",
            float(kept),
            "sources",
            float(count),
            "all sources",
            "all",
            kept == count,
        ),
        Row(
            NAME,
            f"worker CPU, {count} idle sources",
            cpu["polling"],
            "% core",
            cpu["baseline"],
            "worker without source",
            f"≤ {CPU_TARGET:g} %",
            cpu["polling"] <= CPU_TARGET,
        ),
        Row(
            NAME,
            f"worker RSS, {count} sources (peak {peak_mb:.0f} MB)",
            rss_mb,
            "MB",
            base_mb,
            "worker without source",
            f"≤ {RSS_TARGET_MB:g} MB",
            rss_mb <= RSS_TARGET_MB,
        ),
    ]
    if interval != 60.0:
        result.notes.append(
            f"poll interval {interval:g} s (not 60 s): {count / interval:.0f} polls/s, so the "
            f"CPU is that of {math.ceil(count * 60 / interval)} sources at 60 s"
        )
    if statuses != ["200"]:
        result.notes.append(f"answers other than 200: {statuses}")
    return result

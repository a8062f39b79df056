"""Freshness: delay from a record becoming visible in the simulator to its arrival on the
output topic, with a short poll interval. Baseline: the poll interval itself.

Records are added one at a time at random moments (so at random phases of the poll cycle),
each with ``visible_at`` = now and an execution time just before it.
"""

from __future__ import annotations

import asyncio
import random
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
    output_id,
    percentile,
    polling_env,
)
from streamapp.devtools.simulator import SimulatorThread, generate_records

NAME = "freshness"
POLL_INTERVAL = 2.0
LATENCY = (0.1, 0.2)
SLACK = 1.0


async def run(ctx: Context) -> Result:
    samples = ctx.size(NAME, 30, 5)
    workdir = ctx.dir(NAME)
    result = Result(
        NAME,
        params={"samples": samples, "poll_interval_s": POLL_INTERVAL, "latency_s": list(LATENCY)},
    )
    rng = random.Random(5)
    added: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def on_new(ident: str, at: float) -> None:
        arrived.setdefault(ident, at)

    async with kafka_broker(workdir) as kafka:
        out = kafka.topic(OUTPUT)
        await create_topics(kafka.bootstrap, [kafka.topic(RAW), out, kafka.topic(DLQ)])
        tail = await TopicTail(
            kafka.bootstrap, out, key_of=lambda m: output_id(m.value), on_new=on_new
        ).start()
        sim = SimulatorThread(tokens={TOKEN: "ok"}, latency=LATENCY)
        worker = None
        try:
            sim.start()
            now = datetime.now(UTC)
            sim.add_records(
                generate_records(20, start=now - timedelta(minutes=30), end=now, seed=21)
            )
            env = polling_env(
                kafka, "freshness", sim.base_url, lookback="1h", interval=POLL_INTERVAL
            )
            worker = Worker(env, workdir / "worker.log", workdir / "data").start()
            # the history is through the whole pipeline and polls run at their interval
            if await tail.wait_for(20, wait_s=90, check=worker.check_alive) is None:
                raise TimeoutError("the initial history did not reach the output topic")
            await worker.wait_for_log("poll source=bench", count=2, wait_s=30)
            for index in range(samples):
                await asyncio.sleep(rng.uniform(0.3, 1.0))
                moment = datetime.now(UTC)
                [record] = generate_records(
                    1, start=moment - timedelta(milliseconds=500), end=moment, seed=1000 + index
                )
                sim.add_records([record], visible_at=moment)
                added[record["id"]] = time.monotonic()
            if await tail.wait_for(20 + samples, wait_s=30, check=worker.check_alive) is None:
                raise TimeoutError(f"{20 + samples - tail.count} fresh records never arrived")
        finally:
            if worker is not None:
                worker.stop()
            sim.stop()
            await tail.stop()
    delays = [arrived[i] - t for i, t in added.items()]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    target = POLL_INTERVAL + SLACK
    result.metrics = {
        "p50_s": p50,
        "p99_s": p99,
        "max_s": max(delays),
        "min_s": min(delays),
        "mean_s": sum(delays) / len(delays),
        "poll_interval_s": POLL_INTERVAL,
        "delays_s": [round(d, 3) for d in delays],
    }
    result.rows = [
        Row(NAME, "visible→output p50", p50, "s", POLL_INTERVAL, "poll interval"),
        Row(
            NAME,
            "visible→output p99",
            p99,
            "s",
            POLL_INTERVAL,
            "poll interval",
            f"≤ {target:g} s",
            p99 <= target,
        ),
    ]
    return result

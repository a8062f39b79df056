"""Memory: worker RSS after N distinct ids through dedupe, memory store and RocksDB store.

Baseline: the RSS of an idle worker (no source, empty input). The two loaded workers run
side by side on one broker (own consumer groups, own output topics, one shared raw topic);
records are produced as they go, a bounded distance ahead of the slower worker, so nothing
is produced that the time budget does not let them reach. RSS is sampled on the way, which
gives the growth per id and an extrapolation to the nominal size when the budget stops the
run early (reported as such).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from bench.common import (
    DLQ,
    OUTPUT,
    RAW,
    Context,
    Result,
    Row,
    TopicTail,
    Worker,
    create_topics,
    envelopes,
    kafka_broker,
    output_id,
    produce,
    realistic_records,
)

NAME = "memory"
NOMINAL = 1_000_000
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}
TARGET_MB = 300.0
AHEAD = 40_000
CHUNK = 10_000


def _chunks(total: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """Raw-topic messages with distinct ids, ``CHUNK`` at a time."""
    pool = realistic_records(min(total, 20_000), seed=41)
    produced = 0
    batch = 0
    while produced < total:
        size = min(CHUNK, total - produced)
        if produced + size <= len(pool):
            records = pool[produced : produced + size]
        else:
            records = [_fresh(pool[(produced + i) % len(pool)], batch, i) for i in range(size)]
        yield list(envelopes(records))
        produced += size
        batch += 1


def _fresh(template: dict[str, Any], batch: int, index: int) -> dict[str, Any]:
    # a 43-character id like PagerDuty's, distinct per (batch, index)
    return {**template, "id": f"bench{batch:07d}{index:06d}".ljust(43, "x")}


def agent_crash(log: str) -> str | None:
    """The first agent crash in a worker log: the exception and the frame that raised it."""
    marker = "Crashed reason="
    at = log.find(marker)
    if at < 0:
        return None
    reason = log[at + len(marker) :].split("\n", 1)[0].strip()
    trace = log[at:].split("Traceback (most recent call last):", 1)
    frames = [line.strip() for line in trace[1].splitlines() if line.strip().startswith("File ")]
    where = frames[-1] if frames else ""
    ours = [f for f in frames if "/streamapp/" in f]
    return f"{reason} at {where}" + (f" (from {ours[-1]})" if ours else "")


def _slope_kb_per_id(samples: list[tuple[int, int]]) -> float | None:
    """Least-squares kB per id over the samples past 10 % of the run."""
    if not samples:
        return None
    last = samples[-1][0]
    points = [(n, kb) for n, kb in samples if n >= last * 0.1]
    if len(points) < 3:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_kb = sum(kb for _, kb in points) / len(points)
    var = sum((n - mean_n) ** 2 for n, _ in points)
    if var == 0:
        return None
    return sum((n - mean_n) * (kb - mean_kb) for n, kb in points) / var


async def run(ctx: Context) -> Result:
    target = ctx.size(NAME, NOMINAL, 20_000)
    # what is left of the run's time budget, less starting and stopping (~25 s)
    budget = max(20.0, min(60.0 if ctx.quick else 480.0, ctx.remaining() - 25))
    workdir = ctx.dir(NAME)
    result = Result(NAME, params={"ids": target, "time_budget_s": budget, "stores": STORES})
    async with kafka_broker(workdir) as kafka:
        raw = kafka.topic(RAW)
        outs = {name: kafka.topic(f"{OUTPUT}.{name}") for name in STORES}
        idle_topics = {
            "raw": "bench_mem_idle_raw",
            "output": "bench_mem_idle_out",
            "dlq": "bench_mem_idle_dlq",
            "notifications": "bench_mem_idle_notes",
        }
        await create_topics(
            kafka.bootstrap,
            [raw, kafka.topic(DLQ), *outs.values()]
            + [kafka.topic(idle_topics[k]) for k in ("raw", "output", "dlq")],
        )

        # baseline: an idle worker, settled a few seconds after it is ready
        idle = Worker(
            {**kafka.env("mem-idle", **idle_topics), "STREAMAPP_STORE": "memory://"},
            workdir / "idle.log",
            workdir / "data-idle",
        )
        try:
            idle.start()
            await idle.wait_ready(wait_s=60)
            await asyncio.sleep(3)
            idle_rss = idle.rss_kb()
        finally:
            idle.stop()

        tails: dict[str, TopicTail] = {}
        workers: dict[str, Worker] = {}
        samples: dict[str, list[tuple[int, int]]] = {name: [] for name in STORES}
        final: dict[str, dict[str, int]] = {}
        reached_at: dict[str, float] = {}
        failed: dict[str, str] = {}
        feeder: asyncio.Task[None] | None = None
        try:
            for name, store in STORES.items():
                tails[name] = await TopicTail(
                    kafka.bootstrap, outs[name], key_of=lambda m: output_id(m.value)
                ).start()
                env = {
                    **kafka.env(f"mem-{name}", output=f"{OUTPUT}.{name}"),
                    "STREAMAPP_STORE": store,
                }
                workers[name] = Worker(
                    env, workdir / f"{name}.log", workdir / f"data-{name}"
                ).start()

            def slowest() -> int:
                live = [tails[n].count for n in STORES if n not in final and n not in failed]
                return min(live, default=target)

            async def feed() -> None:
                produced = 0
                for chunk in _chunks(target):
                    while True:  # stay a bounded distance ahead of the slower worker
                        if produced - slowest() <= AHEAD:
                            break
                        await asyncio.sleep(0.5)
                    produced += await produce(kafka.bootstrap, raw, chunk)

            feeder = asyncio.ensure_future(feed())
            started = time.monotonic()
            deadline = started + budget
            while len(final) < len(STORES) and time.monotonic() < deadline:
                await asyncio.sleep(2.0)
                if feeder.done():
                    feeder.result()
                for name, worker in workers.items():
                    if name in final or name in failed:
                        continue
                    worker.check_alive()
                    crash = agent_crash(worker.log())
                    if crash is not None:
                        failed[name] = crash
                        final[name] = {**worker.rss_kb(), "ids": tails[name].count}
                        worker.stop()  # its agent is dead: free the CPU for the others
                        continue
                    count = tails[name].count
                    status = worker.rss_kb()
                    samples[name].append((count, status["VmRSS"]))
                    if count >= target:
                        final[name] = {**status, "ids": count}
                        reached_at[name] = time.monotonic() - started
            for name, worker in workers.items():
                if name not in final:  # stopped by the time budget
                    final[name] = {**worker.rss_kb(), "ids": tails[name].count}
        finally:
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feeder
            for worker in workers.values():
                worker.stop()
            for tail in tails.values():
                await tail.stop()
    idle_mb = idle_rss["VmRSS"] / 1024
    result.metrics = {"idle_rss_mb": idle_mb, "nominal_ids": target}
    truncated = []
    for name in STORES:
        info = final[name]
        rss_mb = info["VmRSS"] / 1024
        slope = _slope_kb_per_id(samples[name])
        at_target = (rss_mb + slope * (target - info["ids"]) / 1024) if slope is not None else None
        result.metrics[name] = {
            "ids": info["ids"],
            "rss_mb": rss_mb,
            "peak_rss_mb": info["VmHWM"] / 1024,
            "growth_bytes_per_id": slope * 1024 if slope is not None else None,
            "rss_mb_extrapolated_to_nominal": at_target,
            "seconds_to_target": reached_at.get(name),
            "samples": samples[name],
        }
        ids = info["ids"]
        label = f"RSS, {name} store, {ids:,} ids"
        rocks = name == "rocksdb"
        if name in failed:
            result.metrics[name]["agent_crash"] = failed[name]
            result.rows.append(
                Row(
                    NAME,
                    label + " (agent crashed)",
                    rss_mb,
                    "MB",
                    idle_mb,
                    "idle worker",
                    f"≤ {TARGET_MB:g} MB" if rocks else "",
                    False,
                )
            )
            result.notes.append(
                f"{name} store: the pipeline agent crashed after {ids:,} ids: {failed[name]}"
            )
            continue
        result.rows.append(
            Row(
                NAME,
                label,
                rss_mb,
                "MB",
                idle_mb,
                "idle worker",
                f"≤ {TARGET_MB:g} MB" if rocks else "",
                rss_mb <= TARGET_MB if rocks else None,
            )
        )
        if ids < target:
            truncated.append(name)
            result.rows.append(
                Row(
                    NAME,
                    f"  extrapolated to {target:,} ids",
                    at_target,
                    "MB",
                    idle_mb,
                    "idle worker",
                    f"≤ {TARGET_MB:g} MB" if rocks else "",
                    (at_target <= TARGET_MB) if rocks and at_target else None,
                )
            )
    if truncated:
        result.notes.append(
            f"the {budget:.0f} s budget stopped {', '.join(truncated)} before {target:,} ids "
            f"(the pipeline's throughput sets the largest size that fits); RSS at the size "
            f"reached is measured, the {target:,}-id figure is a linear extrapolation of the "
            f"growth per id"
        )
    result.metrics["truncated"] = truncated
    result.metrics["failed"] = failed
    return result

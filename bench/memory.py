"""Memory: worker RSS after N distinct ids through dedupe, RocksDB store then memory store.

Baseline: the RSS of an idle worker (no source, empty input). The loaded workers run one
after the other (each alone on the CPU; own consumer group and output topic, one shared raw
topic), in the default configuration (detections on): first ``STREAMAPP_STORE=rocksdb://``
(the target), then ``memory://`` with what is left of the time budget. Records are produced
as they go, a bounded distance ahead of the worker, so nothing is produced that the budget
does not let it reach; progress is the worker's committed offsets (no reader of its output
competes for the CPU). RSS is sampled on the way; when the budget stops a run early, the
size reached is what the row says, and a linear extrapolation is given for information.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    DLQ,
    OUTPUT,
    PARTITIONS,
    RAW,
    Context,
    GroupProgress,
    Kafka,
    Result,
    Row,
    Worker,
    bulk_producer,
    create_topics,
    envelopes,
    kafka_broker,
    realistic_records,
)

NAME = "memory"
NOMINAL = 1_000_000
#: in the order they run: the target's store first, the other with the budget left
STORES = {"rocksdb": "rocksdb://", "memory": "memory://"}
TARGET_MB = 300.0
AHEAD = 40_000
CHUNK = 10_000
#: the least time worth starting a worker for
MIN_RUN_S = 30.0


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


async def run_store(
    kafka: Kafka,
    workdir: Path,
    name: str,
    target: int,
    budget: float,
    feed: Feeder,
) -> dict[str, Any]:
    """One worker with ``STREAMAPP_STORE`` = the store, until ``target`` ids or ``budget`` s.

    Progress is its pipeline's committed offsets on the raw topic (every record there has a
    distinct id): no reader of its output competes with it for the CPU.
    """
    env = {
        **kafka.env(f"mem-{name}", output=f"{OUTPUT}.{name}"),
        "STREAMAPP_STORE": STORES[name],
    }
    worker = Worker(env, workdir / f"{name}.log", workdir / f"data-{name}")
    samples: list[tuple[int, int]] = []
    info: dict[str, Any] = {}
    started = time.monotonic()
    try:
        async with GroupProgress(
            kafka.bootstrap, f"{env['STREAMAPP_APP_ID']}-pipeline", feed.topic, PARTITIONS
        ) as progress:
            worker.start()
            deadline = started + budget
            count = 0
            while time.monotonic() < deadline:
                await feed.ahead_of(count, target)
                await asyncio.sleep(1.0)
                worker.check_alive()
                crash = agent_crash(worker.log())
                if crash is not None:
                    info["crash"] = crash
                    break
                count = await progress.committed()
                status = worker.rss_kb()
                samples.append((count, status["VmRSS"]))
                if count >= target:
                    info["seconds_to_target"] = time.monotonic() - started
                    break
            info.update(worker.rss_kb())
            info["ids"] = await progress.committed()
            info["cpu_s"] = worker.cpu_seconds()
    finally:
        worker.stop()
    info["elapsed_s"] = time.monotonic() - started
    info["samples"] = samples
    return info


class Feeder:
    """Produces the raw topic's records a bounded distance ahead of the worker reading it."""

    def __init__(self, bootstrap: str, topic: str, total: int) -> None:
        self.topic = topic
        self.produced = 0
        self._chunks = _chunks(total)
        self._producer = bulk_producer(bootstrap)

    async def __aenter__(self) -> Feeder:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def ahead_of(self, done: int, target: int) -> None:
        while self.produced - done < AHEAD and self.produced < target:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            futures = [await self._producer.send(self.topic, v, key=k) for k, v in chunk]
            await asyncio.gather(*futures)
            self.produced += len(chunk)


async def run(ctx: Context) -> Result:
    target = ctx.size(NAME, NOMINAL, 10_000)
    # what is left of the run's time budget, less starting and stopping (~25 s)
    budget = max(20.0, min(60.0 if ctx.quick else 480.0, ctx.remaining() - 25))
    workdir = ctx.dir(NAME)
    result = Result(
        NAME,
        params={"ids": target, "time_budget_s": budget, "stores": STORES, "order": list(STORES)},
    )
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    async with kafka_broker(workdir) as kafka:
        raw = kafka.topic(RAW)
        idle_topics = {
            "raw": "bench_mem_idle_raw",
            "output": "bench_mem_idle_out",
            "dlq": "bench_mem_idle_dlq",
            "notifications": "bench_mem_idle_notes",
        }
        await create_topics(
            kafka.bootstrap,
            [raw, kafka.topic(DLQ)]
            + [kafka.topic(f"{OUTPUT}.{name}") for name in STORES]
            + [kafka.topic(idle_topics[k]) for k in ("raw", "output", "dlq")],
        )
        async with Feeder(kafka.bootstrap, raw, target) as feed:
            # baseline: an idle worker, alongside the first loaded one (which is starting
            # meanwhile), measured a few seconds after it is ready
            idle = Worker(
                {**kafka.env("mem-idle", **idle_topics), "STREAMAPP_STORE": "memory://"},
                workdir / "idle.log",
                workdir / "data-idle",
            )
            idle_rss: dict[str, int] = {}

            async def measure_idle() -> None:
                try:
                    idle.start()
                    await idle.wait_ready(wait_s=60)
                    await asyncio.sleep(3)
                    idle_rss.update(idle.rss_kb())
                finally:
                    idle.stop()

            idle_task = asyncio.ensure_future(measure_idle())
            try:
                for name in STORES:  # RocksDB (the target) first, the memory store with the rest
                    left = budget - (time.monotonic() - started)
                    if ctx.quick and name != "rocksdb":
                        result.notes.append(f"{name} store not run (--quick)")
                        continue
                    if left < MIN_RUN_S and runs:
                        result.notes.append(
                            f"{name} store not run: {left:.0f} s of the budget left"
                        )
                        continue
                    runs[name] = await run_store(
                        kafka, workdir, name, target, max(left, MIN_RUN_S), feed
                    )
                await idle_task
            finally:
                idle_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await idle_task
            produced = feed.produced
    idle_mb = idle_rss["VmRSS"] / 1024
    result.metrics = {"idle_rss_mb": idle_mb, "nominal_ids": target, "produced": produced}
    truncated = []
    for name, info in runs.items():
        rss_mb = info["VmRSS"] / 1024
        slope = _slope_kb_per_id(info["samples"])
        ids = info["ids"]
        at_target = (rss_mb + slope * (target - ids) / 1024) if slope is not None else None
        result.metrics[name] = {
            "ids": ids,
            "rss_mb": rss_mb,
            "peak_rss_mb": info["VmHWM"] / 1024,
            "growth_bytes_per_id": slope * 1024 if slope is not None else None,
            "rss_mb_extrapolated_to_nominal": at_target,
            "seconds_to_target": info.get("seconds_to_target"),
            "ids_per_s": ids / info["elapsed_s"],
            "worker_cpu_s": info["cpu_s"],
            "samples": info["samples"],
        }
        rocks = name == "rocksdb"
        target_text = f"≤ {TARGET_MB:g} MB" if rocks else ""
        label = f"RSS, {name} store, {ids:,} ids (peak {info['VmHWM'] / 1024:.0f} MB)"
        if "crash" in info:
            result.metrics[name]["agent_crash"] = info["crash"]
            result.rows.append(
                Row(
                    NAME,
                    label + " (crashed)",
                    rss_mb,
                    "MB",
                    idle_mb,
                    "idle worker",
                    target_text,
                    False if rocks else None,
                )
            )
            result.notes.append(
                f"{name} store: the pipeline crashed after {ids:,} ids: {info['crash']}"
            )
            continue
        reached = ids >= target
        result.rows.append(
            Row(
                NAME,
                label if reached else label + f" of {target:,}",
                rss_mb,
                "MB",
                idle_mb,
                "idle worker",
                target_text,
                (rss_mb <= TARGET_MB and reached) if rocks else None,
            )
        )
        if not reached:
            truncated.append(f"{name} at {ids:,} ids")
            result.rows.append(
                Row(
                    NAME,
                    f"  extrapolated to {target:,} ids (not measured)",
                    at_target,
                    "MB",
                    idle_mb,
                    "idle worker",
                )
            )
    if truncated:
        result.notes.append(
            f"the time budget ({budget:.0f} s) stopped {', '.join(truncated)} before "
            f"{target:,} ids (the pipeline's throughput sets the largest size that fits); the "
            f"extrapolation is a linear fit of the growth per id, for information"
        )
    result.metrics["truncated"] = truncated
    return result

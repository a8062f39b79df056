"""Pipeline throughput: raw topic → one worker → ``pagerduty_audit_logs``, in records/s.

N realistic records (distinct ids) are produced to the raw topic before anything reads it.
Baseline: a plain aiokafka consume → produce loop forwarding the same N messages on the
same broker (what the broker and client allow without faust or our per-record work).

The worker runs twice over the same raw topic (own consumer group and output topic each):
with ``STREAMAPP_DETECTIONS=false`` (the pipeline alone: the row the target applies to) and
with the detections on (the default configuration; information). The worker's and the
broker's CPU (utime + stime from /proc) are recorded over each run: on a 2-core machine
the broker and the worker share the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

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
    TopicTail,
    Worker,
    broker_pid,
    bulk_producer,
    create_topics,
    envelopes,
    kafka_broker,
    output_id,
    proc_cpu_seconds,
    produce,
    realistic_records,
)

NAME = "pipeline"
TARGET_RATIO = 0.5
#: (label, STREAMAPP_DETECTIONS): the first is the one the target applies to
RUNS = (("pipeline only", "false"), ("with detections", "true"))


async def forward_loop(bootstrap: str, source: str, sink: str, count: int) -> float:
    """Forward ``count`` messages from ``source`` to ``sink``; seconds from first fetch to
    the last acknowledgement."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    producer = bulk_producer(bootstrap)
    await consumer.start()
    await producer.start()
    try:
        partitions = consumer.partitions_for_topic(source) or set()
        consumer.assign([TopicPartition(source, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        started = time.monotonic()
        forwarded = 0
        futures: list[asyncio.Future[object]] = []
        while forwarded < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for messages in batch.values():
                for message in messages:
                    futures.append(await producer.send(sink, message.value, key=message.key))
                    forwarded += 1
            if time.monotonic() - started > 600:
                raise TimeoutError(f"forwarded only {forwarded} of {count}")
        await asyncio.gather(*futures)
        return time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


def _cpu(pid: int | None) -> float | None:
    try:
        return proc_cpu_seconds(pid) if pid is not None else None
    except OSError:
        return None


async def run_worker(
    kafka: Kafka, ctx: Context, n: int, label: str, detections: str
) -> dict[str, Any]:
    """One worker over the whole raw topic; its rates and CPU.

    Timed by the pipeline's committed offsets (a batch commits after its outputs were
    acknowledged); the output topic is read afterwards, to check every record is on it
    once, so no reader competes with the worker for the CPU meanwhile (the forward loop has
    none either).
    """
    slug = "nodetect" if detections == "false" else "detect"
    workdir = ctx.dir(f"{NAME}-{slug}")
    out = kafka.topic(f"{OUTPUT}.{slug}")
    await create_topics(kafka.bootstrap, [out])
    env = {
        **kafka.env(f"pipeline-{slug}", output=f"{OUTPUT}.{slug}"),
        "STREAMAPP_DETECTIONS": detections,
    }
    app_id = env["STREAMAPP_APP_ID"]
    worker = Worker(env, workdir / "worker.log", workdir / "data")
    broker = broker_pid()
    cpu: dict[str, list[tuple[float, float | None, float | None]]] = {"samples": []}
    try:
        async with GroupProgress(
            kafka.bootstrap, f"{app_id}-pipeline", env["STREAMAPP_TOPIC_RAW"], PARTITIONS
        ) as progress:
            worker.start()

            def sample() -> None:
                worker.check_alive()
                cpu["samples"].append((time.monotonic(), _cpu(worker.pid), _cpu(broker)))

            done_at = await progress.wait_for(n, wait_s=max(120.0, n / 500), check=sample)
            sample()
            detect_done_s = None
            if detections == "true":
                async with GroupProgress(
                    kafka.bootstrap, f"{app_id}-detect", f"{app_id}-detect", PARTITIONS
                ) as detect:
                    # the keyed topic holds one message per record (each record has an actor)
                    with contextlib.suppress(TimeoutError):
                        detect_done_s = (
                            await detect.wait_for(n, wait_s=120, check=worker.check_alive) - done_at
                        )
        rss = worker.rss_kb()
        ready_s = await worker.wait_ready(wait_s=5)
        samples = progress.samples
    finally:
        worker.stop()
    tail = await TopicTail(kafka.bootstrap, out, key_of=lambda m: output_id(m.value)).start()
    try:
        await tail.wait_for(n, wait_s=120)
        await asyncio.sleep(0.5)  # any duplicate right behind
    finally:
        await tail.stop()
    first_at, first_value = next((t, v) for t, v in samples if v > 0)
    total_s = done_at - worker.started_at
    total_rate = n / total_s
    steady_s = done_at - first_at
    # all in one commit (a tiny run): the rate from the worker's start
    steady_rate = (n - first_value) / steady_s if first_value < n and steady_s > 0 else total_rate
    metrics: dict[str, Any] = {
        "detections": detections == "true",
        "records_per_s": steady_rate,
        "records_per_s_from_worker_start": total_rate,
        "first_commit_to_last_s": steady_s,
        "first_commit_records": first_value,
        "worker_start_to_last_s": total_s,
        "worker_ready_s": ready_s,
        "detections_done_after_s": detect_done_s,
        "commits": [(round(t - worker.started_at, 2), v) for t, v in samples],
        "output_messages": tail.messages,
        "output_distinct_ids": tail.count,
        "worker_rss_mb": rss["VmRSS"] / 1024,
        "worker_peak_rss_mb": rss["VmHWM"] / 1024,
    }
    # CPU between the samples around the first commit and the last one
    points = cpu["samples"]
    before = max((p for p in points if p[0] <= first_at), key=lambda p: p[0], default=None)
    after = points[-1]
    # a run all in one commit (tiny) has no span to measure the CPU over
    if (
        n - first_value >= n // 10
        and before is not None
        and before[1] is not None
        and after[1] is not None
    ):
        span = after[0] - before[0]
        used = after[1] - before[1]
        if span > 0:
            metrics["worker_cpu_percent"] = 100 * used / span
            metrics["worker_cpu_ms_per_1k_records"] = 1000 * used / max(1, n - first_value) * 1000
        if before[2] is not None and after[2] is not None and span > 0:
            metrics["broker_cpu_percent"] = 100 * (after[2] - before[2]) / span
    return metrics


async def run(ctx: Context) -> Result:
    n = ctx.size(NAME, 200_000, 20_000)
    workdir = ctx.dir(NAME)
    result = Result(NAME, params={"records": n, "partitions": PARTITIONS})
    messages = list(envelopes(realistic_records(n)))
    result.params["mean_value_bytes"] = round(sum(len(v) for _, v in messages) / n)
    runs: dict[str, dict[str, Any]] = {}
    async with kafka_broker(workdir) as kafka:
        raw, forward = kafka.topic(RAW), kafka.topic("bench_forward")
        await create_topics(kafka.bootstrap, [raw, kafka.topic(DLQ), forward])
        started = time.monotonic()
        await produce(kafka.bootstrap, raw, messages)
        produce_s = time.monotonic() - started
        del messages

        broker = broker_pid()
        broker_before = _cpu(broker)
        own_before = time.process_time()
        forward_s = await forward_loop(kafka.bootstrap, raw, forward, n)
        forward_cpu = time.process_time() - own_before
        broker_after = _cpu(broker)
        forward_rate = n / forward_s
        for label, detections in RUNS:
            runs[label] = await run_worker(kafka, ctx, n, label, detections)
    alone = runs[RUNS[0][0]]
    result.metrics = {
        # the target's figures at the top level (what tests and older readers look at)
        "records_per_s": alone["records_per_s"],
        "records_per_s_from_worker_start": alone["records_per_s_from_worker_start"],
        "output_distinct_ids": alone["output_distinct_ids"],
        "forward_records_per_s": forward_rate,
        "forward_s": forward_s,
        "forward_cpu_percent": 100 * forward_cpu / forward_s,
        "forward_cpu_ms_per_1k_records": 1000 * forward_cpu / (n / 1000),
        "produce_records_per_s": n / produce_s,
        "ratio": alone["records_per_s"] / forward_rate,
        "runs": runs,
    }
    if broker_before is not None and broker_after is not None:
        result.metrics["forward_broker_cpu_percent"] = (
            100 * (broker_after - broker_before) / (forward_s)
        )
    forward_ms = result.metrics["forward_cpu_ms_per_1k_records"]
    for label, detections in RUNS:
        info = runs[label]
        target = detections == "false"
        ratio = info["records_per_s"] / forward_rate
        result.rows.append(
            Row(
                NAME,
                f"records/s raw → output, {label}",
                info["records_per_s"],
                "rec/s",
                forward_rate,
                "aiokafka forward",
                f"ratio ≥ {TARGET_RATIO}" if target else "(information)",
                ratio >= TARGET_RATIO if target else None,
            )
        )
        if "worker_cpu_percent" in info:
            result.rows.append(
                Row(
                    NAME,
                    f"  worker CPU per 1k records (at {info['worker_cpu_percent']:.0f} % core)",
                    info["worker_cpu_ms_per_1k_records"],
                    "ms",
                    forward_ms,
                    "forward loop's",
                )
            )
        if info["output_messages"] != info["output_distinct_ids"]:
            result.notes.append(
                f"{label}: {info['output_messages'] - info['output_distinct_ids']} duplicate "
                "output messages"
            )
    result.rows.append(
        Row(
            NAME,
            "records/s from worker start, pipeline only",
            alone["records_per_s_from_worker_start"],
            "rec/s",
            forward_rate,
            "aiokafka forward",
        )
    )
    cpu_notes = [
        f"{label}: broker {info['broker_cpu_percent']:.0f} % core"
        for label, info in runs.items()
        if "broker_cpu_percent" in info
    ]
    if "forward_broker_cpu_percent" in result.metrics:
        cpu_notes.append(
            f"forward loop: broker {result.metrics['forward_broker_cpu_percent']:.0f} % core"
        )
    if cpu_notes:
        result.notes.append("broker CPU while it ran (2 cores shared): " + "; ".join(cpu_notes))
    return result

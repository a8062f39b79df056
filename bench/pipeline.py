"""Pipeline throughput: raw topic → one worker → ``pagerduty_audit_logs``, in records/s.

N realistic records (distinct ids) are produced to the raw topic before anything reads it.
Baseline: a plain aiokafka consume → produce loop forwarding the same N messages on the
same broker (what the broker and client allow without faust or our per-record work).
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import (
    DLQ,
    OUTPUT,
    PARTITIONS,
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

NAME = "pipeline"
TARGET_RATIO = 0.5


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
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
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


async def run(ctx: Context) -> Result:
    n = ctx.size(NAME, 200_000, 5_000)
    workdir = ctx.dir(NAME)
    result = Result(NAME, params={"records": n, "partitions": PARTITIONS})
    messages = list(envelopes(realistic_records(n)))
    result.params["mean_value_bytes"] = round(sum(len(v) for _, v in messages) / n)
    async with kafka_broker(workdir) as kafka:
        raw, out, forward = kafka.topic(RAW), kafka.topic(OUTPUT), kafka.topic("bench_forward")
        await create_topics(kafka.bootstrap, [raw, out, kafka.topic(DLQ), forward])
        started = time.monotonic()
        await produce(kafka.bootstrap, raw, messages)
        produce_s = time.monotonic() - started
        del messages

        forward_s = await forward_loop(kafka.bootstrap, raw, forward, n)
        forward_rate = n / forward_s

        tail = await TopicTail(kafka.bootstrap, out, key_of=lambda m: output_id(m.value)).start()
        worker = Worker(kafka.env("pipeline"), workdir / "worker.log", workdir / "data")
        try:
            worker.start()
            done_at = await tail.wait_for(n, wait_s=max(120.0, n / 500), check=worker.check_alive)
            if done_at is None:
                raise TimeoutError(f"the pipeline emitted {tail.count} of {n} records in time")
            ready_s = await worker.wait_ready(wait_s=5)
            assert tail.first_at is not None
            steady_s = done_at - tail.first_at
            total_s = done_at - worker.started_at
        finally:
            worker.stop()
            await tail.stop()
    total_rate = n / total_s
    # all in one batch (a tiny run): first and last arrive together, so the from-start rate
    steady_rate = (n - 1) / steady_s if steady_s > 0 else total_rate
    result.metrics = {
        "records_per_s": steady_rate,
        "records_per_s_from_worker_start": total_rate,
        "first_to_last_s": steady_s,
        "worker_start_to_last_s": total_s,
        "worker_ready_s": ready_s,
        "forward_records_per_s": forward_rate,
        "forward_s": forward_s,
        "produce_records_per_s": n / produce_s,
        "ratio": steady_rate / forward_rate,
        "output_messages": tail.messages,
        "output_distinct_ids": tail.count,
    }
    result.rows = [
        Row(
            NAME,
            "records/s first→N-th output",
            steady_rate,
            "rec/s",
            forward_rate,
            "aiokafka forward",
            f"ratio ≥ {TARGET_RATIO}",
            steady_rate / forward_rate >= TARGET_RATIO,
        ),
        Row(
            NAME,
            "records/s from worker start",
            total_rate,
            "rec/s",
            forward_rate,
            "aiokafka forward",
        ),
    ]
    if tail.messages != tail.count:
        result.notes.append(f"{tail.messages - tail.count} duplicate output messages")
    return result

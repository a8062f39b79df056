"""Shared helpers of the benchmarks: brokers, worker processes, producing, tailing, /proc.

Every process a benchmark starts (Tansu broker, faust worker) is registered here and stopped
in a ``finally``; ``stop_all`` is the last resort at interpreter exit or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.core.models import RawEnvelope
from streamapp.devtools.broker import EmbeddedBroker
from streamapp.devtools.simulator import generate_records
from streamapp.devtools.simulator.data import record_id

REPO = Path(__file__).resolve().parents[1]
RAW = "pagerduty_audit_logs_raw"
OUTPUT = "pagerduty_audit_logs"
DLQ = "pagerduty_audit_logs_dlq"
NOTIFICATIONS = "notifications"
PARTITIONS = 4
TOKEN = "bench-token-0123456789abcdef"
READY = "worker ready"

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_running: set[subprocess.Popen[bytes]] = set()
_brokers: set[EmbeddedBroker] = set()


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every benchmark gets: its size switch and a scratch directory."""

    quick: bool
    workdir: Path
    #: size overrides from ``--size NAME=N`` (e.g. ``pipeline=50000``)
    sizes: dict[str, int] = field(default_factory=dict)
    #: monotonic time by which the whole run should be over (the memory run adapts to it)
    deadline: float = float("inf")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def size(self, name: str, full: int, quick: int) -> int:
        if name in self.sizes:
            return self.sizes[name]
        return quick if self.quick else full

    def dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Row:
    """One line of the printed table."""

    bench: str
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    ok: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


@dataclass
class Result:
    """A benchmark's outcome: table rows plus everything measured, for the JSON file."""

    name: str
    rows: list[Row] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "metrics": self.metrics,
            "rows": [
                {
                    "metric": r.metric,
                    "value": r.value,
                    "unit": r.unit,
                    "baseline": r.baseline,
                    "baseline_name": r.baseline_name,
                    "ratio": r.ratio,
                    "target": r.target,
                    "ok": r.ok,
                }
                for r in self.rows
            ],
            "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(results: Sequence[Result], out: Any = None) -> None:
    out = out or sys.stdout
    header = ("bench", "metric", "value", "unit", "baseline", "ratio", "target", "ok")
    lines = [header]
    for result in results:
        for r in result.rows:
            base = f"{fmt(r.baseline)} ({r.baseline_name})" if r.baseline is not None else "-"
            ok = "-" if r.ok is None else ("yes" if r.ok else "NO")
            ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
            lines.append((r.bench, r.metric, fmt(r.value), r.unit, base, ratio, r.target, ok))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)), file=out
        )
        if index == 0:
            print("  ".join("-" * w for w in widths), file=out)
    for result in results:
        for note in result.notes:
            print(f"[{result.name}] {note}", file=out)
    out.flush()


# --------------------------------------------------------------------------- brokers


@dataclass
class Kafka:
    """A broker and names no other run uses (topics suffixed only on a shared broker)."""

    url: str
    shared: bool
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def bootstrap(self) -> str:
        return ",".join(part.split("://", 1)[-1] for part in self.url.split(","))

    def topic(self, base: str) -> str:
        return f"{base}.{self.suffix}" if self.shared else base

    def app_id(self, label: str) -> str:
        return f"streamapp-bench-{label}-{self.suffix}"

    def env(self, label: str, **topics: str) -> dict[str, str]:
        """Worker environment; ``topics`` override a topic's base name (raw=, output=...)."""
        names = {"raw": RAW, "output": OUTPUT, "dlq": DLQ, "notifications": NOTIFICATIONS}
        names.update(topics)
        return {
            "KAFKA_BROKER": self.url,
            "STREAMAPP_APP_ID": self.app_id(label),
            "STREAMAPP_TOPIC_RAW": self.topic(names["raw"]),
            "STREAMAPP_TOPIC_OUTPUT": self.topic(names["output"]),
            "STREAMAPP_TOPIC_DLQ": self.topic(names["dlq"]),
            "STREAMAPP_TOPIC_NOTIFICATIONS": self.topic(names["notifications"]),
            "STREAMAPP_PARTITIONS": str(PARTITIONS),
            "STREAMAPP_SESSION_TIMEOUT": "4",
        }


@asynccontextmanager
async def kafka_broker(workdir: Path) -> AsyncIterator[Kafka]:
    """``KAFKA_BROKER`` when set (unique names), else a fresh embedded Tansu broker."""
    url = os.environ.get("KAFKA_BROKER")
    if url:
        yield Kafka(url=url, shared=True)
        return
    broker = EmbeddedBroker(log_path=workdir / "tansu.log")
    _brokers.add(broker)
    try:
        broker.start()
        yield Kafka(url=broker.url, shared=False)
    finally:
        broker.stop()
        _brokers.discard(broker)


def broker_pid() -> int | None:
    for broker in _brokers:
        if broker.process is not None:
            return broker.process.pid
    return None


async def create_topics(
    bootstrap: str, topics: Iterable[str], partitions: int = PARTITIONS
) -> None:
    """Create topics up front: Tansu would auto-create them with its own partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in topics]
        )
    finally:
        await admin.close()


# --------------------------------------------------------------------------- workers


def spawn_faust(args: Sequence[str], env: Mapping[str, str], log: Any) -> subprocess.Popen[bytes]:
    """``python -m faust -A streamapp.app <args>`` in its own session, output to ``log``;
    stopped by ``stop_all`` if the run ends first."""
    process = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "streamapp.app", *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _running.add(process)
    return process


def bulk_producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer for filling topics fast: acknowledged by all, 1 MiB batches."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )


class FaustProcess:
    """``python -m faust -A streamapp.app <args>`` with its own environment and log file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Self:
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.started_at = time.monotonic()
        self.process = spawn_faust(self.args, self.env, self._log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.process
        if proc is not None:
            _stop_process(proc, timeout)
            _running.discard(proc)
        if self._log is not None:
            self._log.close()
            self._log = None


class Worker(FaustProcess):
    """``python -m faust -A streamapp.app worker --without-web`` with its own environment."""

    def __init__(self, env: Mapping[str, str], log_path: Path, data_dir: Path) -> None:
        super().__init__(["worker", "-l", "info", "--without-web"], env, log_path)
        self.env.setdefault("STREAMAPP_DATA_DIR", str(data_dir))
        self.started_wall = 0.0

    def start(self) -> Self:
        self.started_wall = time.time()
        return super().start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.process.returncode if self.process else None
            raise RuntimeError(f"worker exited ({code}); log tail:\n{self.log()[-3000:]}")

    async def wait_for_log(self, text: str, wait_s: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + wait_s
        while self.log().count(text) < count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker did not log {text!r} within {wait_s:.0f}s")
            await asyncio.sleep(0.1)

    async def wait_ready(self, wait_s: float = 60.0) -> float:
        """Seconds from start until faust said the worker is ready (from its log line)."""
        await self.wait_for_log(READY, wait_s)
        return self.logged_at(READY) - self.started_wall

    def logged_at(self, text: str) -> float:
        """Epoch seconds of the first log line containing ``text``."""
        for line in self.log().splitlines():
            if text in line and line.startswith("["):
                stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()  # the worker logs local time, as we read it
        raise LookupError(text)

    def rss_kb(self) -> dict[str, int]:
        return proc_status(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def stop_all() -> None:
    """Stop every process the benchmarks started and did not stop yet."""
    for proc in list(_running):
        with contextlib.suppress(Exception):
            _stop_process(proc, 5)
        _running.discard(proc)
    for broker in list(_brokers):
        with contextlib.suppress(Exception):
            broker.stop()
        _brokers.discard(broker)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in kB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


async def cpu_percent(pids: Mapping[str, int], seconds: float) -> dict[str, float]:
    """CPU use of each process over ``seconds``, as % of one core."""
    before = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    return {
        name: 100.0 * (proc_cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()
    }


# --------------------------------------------------------------------------- records


def realistic_records(
    count: int, *, days: float = 30.0, seed: int = 1, pool: int = 20_000
) -> list[dict[str, Any]]:
    """``count`` records from ``generate_records`` with distinct ids.

    Past ``pool`` records the generator's output is reused with fresh ids (generating is
    ~80 µs a record; 1M would take 80 s).
    """
    now = datetime.now(UTC)
    base = generate_records(min(count, pool), start=now - timedelta(days=days), end=now, seed=seed)
    if count <= len(base):
        return base
    rng = random.Random(seed + 1)
    records = list(base)
    while len(records) < count:
        template = base[len(records) % len(base)]
        records.append({**template, "id": record_id(rng)})
    return records


_encode = msgspec.json.Encoder().encode


def envelopes(
    records: Iterable[Mapping[str, Any]], source: str = "pagerduty"
) -> Iterable[tuple[bytes, bytes]]:
    """(key, value) of raw-topic messages, as the poller writes them."""
    polled = datetime.now(UTC)
    for record in records:
        raw = _encode(record)
        yield (
            record["id"].encode(),
            _encode(RawEnvelope(source_name=source, polled_at=polled, record=msgspec.Raw(raw))),
        )


async def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    chunk: int = 20_000,
) -> int:
    producer = bulk_producer(bootstrap)
    await producer.start()
    sent = 0
    try:
        futures: list[asyncio.Future[Any]] = []
        for key, value in messages:
            futures.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(futures) >= chunk:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


# --------------------------------------------------------------------------- consuming


class _IdView(msgspec.Struct):
    id: str


_decode_id = msgspec.json.Decoder(_IdView).decode


def output_id(value: bytes) -> str:
    """The record id of an output document (decodes that field only)."""
    return _decode_id(value).id


class TopicTail:
    """Reads a topic from the beginning in the background; counts and timestamps arrivals.

    ``key_of`` turns a message into the identity counted (default: its key); distinct
    identities are counted, so a repeated message does not make a run look faster.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        key_of: Callable[[Any], Any] | None = None,
        on_new: Callable[[Any, float], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.key_of = key_of or (lambda m: m.key)
        self.on_new = on_new
        self.seen: set[Any] = set()
        self.messages = 0
        self.first_at: float | None = None
        self.last_new_at: float | None = None
        self._targets: list[tuple[int, asyncio.Future[float]]] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def count(self) -> int:
        return len(self.seen)

    async def start(self, wait_s: float = 30.0) -> TopicTail:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        self._consumer = consumer
        deadline = time.monotonic() + wait_s
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:
            if time.monotonic() > deadline:
                await consumer.stop()
                raise TimeoutError(f"topic {self.topic} does not exist")
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
            partitions = consumer.partitions_for_topic(self.topic)
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=20_000)
            now = time.monotonic()
            for messages in batch.values():
                for message in messages:
                    self.messages += 1
                    ident = self.key_of(message)
                    if ident in self.seen:
                        continue
                    self.seen.add(ident)
                    if self.first_at is None:
                        self.first_at = now
                    self.last_new_at = now
                    if self.on_new is not None:
                        self.on_new(ident, now)
            if batch:
                for target, future in self._targets:
                    if not future.done() and len(self.seen) >= target:
                        future.set_result(now)

    async def wait_for(
        self, count: int, wait_s: float, check: Callable[[], None] | None = None
    ) -> float | None:
        """Monotonic time the ``count``-th distinct message arrived; None on timeout."""
        if len(self.seen) >= count and self.last_new_at is not None:
            return self.last_new_at
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._targets.append((count, future))
        deadline = time.monotonic() + wait_s
        while not future.done():
            if self._task is not None and self._task.done():
                self._task.result()  # raise what killed the reader
            if check is not None:
                check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), min(1.0, remaining))
        return future.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def polling_env(
    kafka: Any, name: str, sim_url: str, *, lookback: str, interval: float
) -> dict[str, str]:
    """A worker's environment polling the simulator as the single source ``bench``."""
    return {
        **kafka.env(name),
        "PAGERDUTY_API_TOKEN": TOKEN,
        "PAGERDUTY_API_URL": sim_url,
        "PAGERDUTY_SOURCE_NAME": "bench",
        "PAGERDUTY_LOOKBACK": lookback,
        "PAGERDUTY_POLL_INTERVAL": f"{interval:g}",
    }


class Command(FaustProcess):
    """``python -m faust -A streamapp.app <args>`` (an operator command, not a worker)."""

    async def wait(self, wait_s: float) -> int:
        """Its exit status; TimeoutError when it runs longer than ``wait_s``."""
        assert self.process is not None
        deadline = time.monotonic() + wait_s
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.args[0]} still running after {wait_s:.0f}s")
            await asyncio.sleep(0.1)
        return code


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most of ``times`` (any order) inside any half-open span ``window`` long."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class GroupProgress:
    """A consumer group's committed offsets on a topic, summed over its partitions.

    Reading them is one OffsetFetch request to the broker: a run can be timed by its commits
    without a reader of its output competing for the CPU while it runs (the pipeline
    commits a batch only after its outputs were acknowledged).
    """

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.group = group
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        #: (monotonic time, committed) at every change seen
        self.samples: list[tuple[float, int]] = []

    async def __aenter__(self) -> GroupProgress:
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()

    async def committed(self) -> int:
        offsets = await self._admin.list_consumer_group_offsets(
            self.group, partitions=self.partitions
        )
        return sum(max(0, meta.offset) for meta in offsets.values() if meta is not None)

    async def wait_for(
        self,
        total: int,
        wait_s: float,
        check: Callable[[], None] | None = None,
        every: float = 0.1,
    ) -> float:
        """Monotonic time the committed offsets reached ``total``; TimeoutError if not."""
        deadline = time.monotonic() + wait_s
        while True:
            value = await self.committed()
            now = time.monotonic()
            if not self.samples or value != self.samples[-1][1]:
                self.samples.append((now, value))
            if value >= total:
                return now
            if check is not None:
                check()
            if now > deadline:
                raise TimeoutError(f"group {self.group} committed {value} of {total}")
            await asyncio.sleep(every)

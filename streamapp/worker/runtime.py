"""One worker's parts, wired together: where data enters, is transformed and leaves.

    PagerDuty ──poller──▶ raw topic ──pipeline──▶ output, routed, OCSF, ECS, dead letters
        │               (RawSink)  (RawWork: dedupe,     │  findings (one-record rules)
        │                           enrich, route)       └─▶ keyed topic ──detections──▶ findings
        └── progress topic (checkpoints, backfill windows)      (DetectWork: rule state)
                                                   health topic ◀── watchdog ──▶ notifications

Built from the settings without any I/O; ``start`` creates the topics, measures what the
broker accepts, starts the producer, the state followers, the pipeline's consumer and the
tasks; ``stop`` ends them all within bounded time, whatever they were waiting for. Nothing
here imports faust: the faust app hands in ``is_leader`` and ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaConsumer

from streamapp.config import Settings
from streamapp.core.detect import Detector
from streamapp.core.detect.stream import DetectionFanout, StepPlan
from streamapp.core.pipeline import BatchResult, Processor, ecs_rendering, ocsf_rendering
from streamapp.kafka.clients import Cluster
from streamapp.kafka.pipeline_loop import ConsumerLoop, Loops
from streamapp.kafka.progress import ProgressTable
from streamapp.kafka.publisher import Publisher
from streamapp.kafka.rawsink import RawSink
from streamapp.kafka.seen import PartitionedStore, SeenStore, rocks_options
from streamapp.kafka.statetopic import TOPIC_CONFIG, StateTopic
from streamapp.kafka.works import DetectWork, RawWork
from streamapp.notify.channels import Deliverer
from streamapp.pagerduty.factory import ClientFactory, http_client
from streamapp.worker.metrics import Metrics
from streamapp.worker.poller import Poller
from streamapp.worker.statuspage import MinuteCounter
from streamapp.worker.watchdog import Watchdog

if TYPE_CHECKING:
    from rocksdict import Options

log = logging.getLogger("streamapp.worker")

_Store = TypeVar("_Store", bound=PartitionedStore)

#: how often the dedupe state is swept of ids older than the retention
SWEEP_FRACTION = 100
#: findings of one batch logged a line each; more are counted on one line
FINDINGS_SHOWN = 3


@dataclass(frozen=True)
class TopicNames:
    """The worker's internal topics (besides the raw topic)."""

    progress: str
    health: str
    seen: str
    #: the detections' inputs, keyed by rule state key, and that state's changelog
    detect: str
    detect_state: str

    @classmethod
    def for_app(cls, app_id: str) -> TopicNames:
        # the first three are the names the faust tables they replace wrote to: an upgrade
        # resumes from them
        return cls(
            progress=f"{app_id}-checkpoints-changelog",
            health=f"{app_id}-health-changelog",
            seen=f"{app_id}-seen-changelog",
            detect=f"{app_id}-detect",
            detect_state=f"{app_id}-detect-state-changelog",
        )


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        is_leader: Callable[[], bool],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.names = TopicNames.for_app(settings.app_id)
        self.cluster = Cluster.from_url(settings.broker, settings.kafka_security)
        self.metrics = Metrics()
        #: records polled per source per minute, for the status page's chart
        self.rates = MinuteCounter()
        self.publisher = Publisher(self.cluster, max_request_size=settings.kafka_max_message_bytes)
        self.progress = ProgressTable(StateTopic(self.names.progress, publisher=self.publisher))
        self.health = StateTopic(self.names.health, publisher=self.publisher)
        self._rocks: Options | None = None
        self.detections = self._detections(settings)
        self.processor = self._processor(settings)
        self.raw = RawWork(
            self.processor,
            self._state_store(SeenStore, self.names.seen),
            on_batch=self._count,
        )
        self.pipeline = ConsumerLoop(
            lambda: self._group_consumer(f"{settings.app_id}-pipeline"),
            topic=settings.topics.raw,
            publisher=self.publisher,
            work=self.raw,
        )
        self.detect = self._detect_loop(settings, self.detections)
        #: every loop of this worker, for health: stalled when any is
        self.loops = Loops([self.pipeline.state] + ([self.detect.state] if self.detect else []))
        self.is_leader = is_leader
        self.ready = ready
        self._http = http_client(settings.http_timeout)
        self.factory = ClientFactory.from_settings(
            settings, self._http, on_answer=self.metrics.answer, on_pause=self._paused
        )
        self.watchdog = Watchdog(
            settings,
            table=self.health,
            publisher=self.publisher,
            deliverer=Deliverer(self._http),
            is_leader=is_leader,
            running_polls=lambda: self.poller.running(),
            pipeline=self.loops,
            on_delivery=self.metrics.delivery,
        )
        self.poller = Poller(
            settings,
            factory=self.factory,
            sink=RawSink(self.publisher, settings.topics.raw, on_page=self._published),
            progress=self.progress,
            health=self.watchdog,
            is_leader=is_leader,
            ready=ready,
            on_poll=self.metrics.poll,
        )
        self.metrics.watch(self._checkpoint_times, self.loops.stalled_for)
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    def _detections(self, settings: Settings) -> DetectionFanout | None:
        """What hands documents to the rules, or None when detections are off."""
        if not settings.detections:
            return None
        topics = settings.topics
        return DetectionFanout(
            Detector(settings.rules),
            findings_topic=topics.findings,
            keyed_topic=self.names.detect,
            notifications_topic=topics.notifications,
            dlq_topic=topics.dlq,
            notify={s.name: s.notify_findings for s in settings.sources},
        )

    def _processor(self, settings: Settings) -> Processor:
        """The pipeline's pure part: raw records in, what to publish out."""
        topics = settings.topics
        renderings = []
        if settings.ocsf:
            renderings.append(ocsf_rendering(topics.ocsf))
        if settings.ecs:
            renderings.append(ecs_rendering(topics.ecs))
        return Processor(
            raw_topic=topics.raw,
            output_topic=topics.output,
            dlq_topic=topics.dlq,
            router=settings.router,
            renderings=renderings,
            fanout=self.detections.for_document if self.detections else None,
            geo=settings.geo.lookup if settings.geo else None,
            room=self.publisher.room,
        )

    def _detect_loop(
        self, settings: Settings, detections: DetectionFanout | None
    ) -> ConsumerLoop[StepPlan] | None:
        """The loop that runs the rules that keep state, or None when detections are off."""
        if detections is None:
            return None
        return ConsumerLoop(
            lambda: self._group_consumer(f"{settings.app_id}-detect"),
            topic=self.names.detect,
            publisher=self.publisher,
            work=DetectWork(
                detections,
                self._state_store(PartitionedStore, self.names.detect_state),
                on_findings=self._found,
            ),
        )

    def _state_store(self, kind: type[_Store], changelog: str) -> _Store:
        """A partitioned state store of this worker (the configured store and data dir; with
        RocksDB, every store of the worker shares one bounded memory)."""
        if self.settings.store.startswith("rocksdb") and self._rocks is None:
            self._rocks = rocks_options()
        return kind(
            changelog,
            publisher=self.publisher,
            store=self.settings.store,
            data_dir=self.settings.data_dir,
            rocks=self._rocks,
        )

    def _group_consumer(self, group: str) -> AIOKafkaConsumer:
        timeout = self.settings.session_timeout
        return self.cluster.consumer(
            group_id=group,
            session_timeout_ms=int(timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, min(3.0, timeout / 6)) * 1000),
            max_poll_records=5000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    # --- lifecycle ------------------------------------------------------------------------

    def write_topics(self) -> dict[str, tuple[int, dict[str, str]]]:
        """Every topic the worker writes or reads, with its partitions and settings."""
        settings, topics = self.settings, self.settings.topics
        partitions = settings.partitions
        wanted: dict[str, tuple[int, dict[str, str]]] = {
            topics.raw: (partitions, {}),
            topics.output: (partitions, {}),
            topics.dlq: (partitions, {}),
            topics.notifications: (1, {}),
            self.names.progress: (1, dict(TOPIC_CONFIG)),
            self.names.health: (1, dict(TOPIC_CONFIG)),
            self.names.seen: (partitions, dict(TOPIC_CONFIG)),
        }
        if settings.ocsf:
            wanted[topics.ocsf] = (partitions, {})
        if settings.ecs:
            wanted[topics.ecs] = (partitions, {})
        if settings.detections:
            wanted[topics.findings] = (partitions, {})
            wanted[self.names.detect] = (partitions, {})
            wanted[self.names.detect_state] = (partitions, dict(TOPIC_CONFIG))
        for name in settings.router.extra_topics:
            wanted.setdefault(name, (partitions, {}))
        return wanted

    async def start(self) -> None:
        wanted = self.write_topics()
        await self.cluster.ensure_topics(wanted)
        for topic, limit in (await self.cluster.message_limits(list(wanted))).items():
            self.publisher.set_topic_limit(topic, limit)
        await self.publisher.start()
        await self.progress.table.start()
        await self.health.start()
        await self.pipeline.start()
        self._spawn(self.pipeline.run(), "pipeline")
        if self.detect is not None:
            await self.detect.start()
            self._spawn(self.detect.run(), "detections")
        self._spawn(self._sweep(), "state sweep")
        self._spawn(self.poller.run(), "poller")
        self._spawn(self.watchdog.run(), "watchdog")
        self.started = True
        log.info(
            "worker ready: %d source(s), broker %s, largest message %s bytes, %s loop",
            len(self.settings.sources),
            ",".join(self.cluster.bootstrap),
            f"{self.publisher.limit(self.settings.topics.output):,}",
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.add_done_callback(lambda t: self._ended(t, name))
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task[None], name: str) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical("%s stopped: %r", name, task.exception())

    async def stop(self) -> None:
        """Stop everything; never waits on the broker for longer than the publisher's and the
        consumer's own stop timeouts."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.pipeline.stop()
        if self.detect is not None:
            await self.detect.stop()
        await self.progress.table.stop()
        await self.health.stop()
        await self.publisher.stop()
        await self._http.aclose()
        self.started = False

    # --- what the parts report ------------------------------------------------------------

    def _paused(self, fingerprint: str, until: float) -> None:
        """A 429 asked a token to pause: keep it in the progress topic, for the next leader."""

        async def save() -> None:
            try:
                await self.progress.save_pause(fingerprint, until)
            except Exception as exc:  # the pause still holds in this process
                log.warning("could not store a rate-limit pause: %s", exc)

        self._spawn(save(), "pause")

    def _published(self, source: str, records: int, rejected: int) -> None:
        self.metrics.published(source, records, rejected)
        self.rates.add(source, records, time.time())

    def _count(self, result: BatchResult) -> None:
        metrics = self.metrics
        for source, n in result.emitted.items():
            metrics.records_emitted.labels(source).inc(n)
        for source, n in result.duplicates.items():
            metrics.records_deduplicated.labels(source).inc(n)
        for (source, stage), n in result.dead.items():
            metrics.records_dead_lettered.labels(source, stage).inc(n)

    def _checkpoint_times(self) -> list[tuple[str, datetime]]:
        return [(name, checkpoint.until) for name, checkpoint in self.progress.checkpoints()]

    def _found(self, plan: StepPlan) -> None:
        """A few findings each on a line of their own; past that, one line with the count of
        each rule (a first backfill can make dozens at once), each then at debug level."""
        findings = plan.findings
        shown = len(findings) if len(findings) <= FINDINGS_SHOWN + 1 else FINDINGS_SHOWN
        for index, finding in enumerate(findings):
            log.log(
                logging.INFO if index < shown else logging.DEBUG,
                "finding %s source=%s: %s",
                finding.rule_id,
                finding.source_name,
                finding.summary,
            )
        if shown < len(findings):
            rest = Counter(f.rule_id for f in findings[shown:])
            log.info(
                "… and %d more finding(s) on %s: %s (each at -l debug)",
                len(findings) - shown,
                self.settings.topics.findings,
                ", ".join(f"{rule} {n}" for rule, n in rest.most_common()),
            )

    async def _sweep(self) -> None:
        """Forget dedupe ids older than the retention, and rule state past its window."""
        retention = self.settings.dedupe_retention.total_seconds()
        interval = min(3600.0, max(10.0, retention / SWEEP_FRACTION))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.pipeline.between_batches(lambda: self.raw.sweep(retention))
                if self.detect is not None:
                    work = self.detect.work
                    assert isinstance(work, DetectWork)
                    await self.detect.between_batches(work.sweep)
            except Exception as exc:  # the next round tries again
                log.warning("state sweep failed: %s: %s", type(exc).__name__, exc)

    @property
    def pipeline_ok(self) -> bool:
        return self.loops.stalled_for() < self.settings.stall_after.total_seconds()

    def now(self) -> datetime:
        return datetime.now(UTC)

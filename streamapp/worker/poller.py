"""The poller: every source polled by exactly one worker, the leader, at its interval.

Thin faust shell around ``streamapp.core.ingest.poll_once``. A half-second ticker runs on every
worker; on the leader it starts a poll task per source when one is due, and on any worker
that is not (or no longer) the leader it cancels whatever polls it still runs, so after a
failover exactly one worker polls. Records go to the raw topic keyed by id; checkpoints
live in the global ``checkpoints`` table (a Kafka changelog), so any worker resumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
from mode import Service

from streamapp.config import SourceConfig
from streamapp.core.errors import PagerDutyError, PublishError
from streamapp.core.ingest import PollInterrupted, page_messages, poll_once, send_all
from streamapp.core.models import Checkpoint, Outgoing
from streamapp.core.redact import REDACTOR
from streamapp.kafka.clients import bootstrap_servers, read_topic_latest
from streamapp.pagerduty.auth import make_auth
from streamapp.pagerduty.client import Page, PagerDutyClient
from streamapp.pagerduty.retry import RetryPolicy
from streamapp.worker import metrics, watchdog
from streamapp.worker.app import (
    app,
    checkpoints,
    dlq_topic,
    durable_put,
    ensure_output_topics,
    raw_topic,
    settings,
)

log = logging.getLogger("streamapp.worker.poller")

_encode = msgspec.json.Encoder().encode
_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode

#: the largest window one request walks (PagerDuty allows 31 days; a day keeps a failed
#: window cheap to repeat and a backfill's progress fine-grained)
MAX_WINDOW = timedelta(days=1)


class TableCheckpoints:
    """CheckpointStore over the global changelog-backed table."""

    def get(self, source_name: str) -> Checkpoint | None:
        value = checkpoints.get(source_name.encode())
        if value is None:
            return None
        try:
            return _decode_checkpoint(value)
        except msgspec.ValidationError:
            log.error("checkpoint of source %r is unreadable; starting it afresh", source_name)
            return None

    async def put(self, source_name: str, checkpoint: Checkpoint) -> None:
        await durable_put(checkpoints, source_name.encode(), _encode(checkpoint))


async def catch_up_checkpoints() -> None:
    """Read the checkpoints' changelog to its real end before leading.

    Table recovery stops at the end offset the broker reports, and some brokers (Tansu)
    report one short of the newest batch: a worker taking over would then resume from an
    older checkpoint. Harmless (the repeats are deduplicated) but avoidable: a direct read
    to the last record finds the newest checkpoint, which the table then takes.
    """
    topic = checkpoints.changelog_topic.get_topic_name()
    try:
        latest = await read_topic_latest(
            bootstrap_servers(settings.broker), topic, give_up_after=10.0
        )
    except Exception as exc:  # stale only means repeated work: poll anyway
        log.warning("could not read %s to its end (%s); polling from the table", topic, exc)
        return
    store = TableCheckpoints()
    for key, value in (latest or {}).items():
        if key is None or value is None:
            continue
        try:
            found = _decode_checkpoint(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        name = key.decode(errors="replace")
        held = store.get(name)
        if held is None or found.until > held.until:
            await store.put(name, found)
            log.info("checkpoint source=%s caught up from the changelog: %s", name, found.until)


class KafkaPublisher:
    """Publisher sending each record to the raw topic, keyed by id, via faust's producer."""

    async def publish(self, source_name: str, page: Page) -> Awaitable[None]:
        await ensure_output_topics()
        metrics.RECORDS_POLLED.labels(source_name).inc(len(page.records) + len(page.malformed))
        if page.malformed:
            metrics.RECORDS_DEAD_LETTERED.labels(source_name, "poll").inc(len(page.malformed))
        producer = app.producer
        messages = page_messages(
            source_name,
            page,
            raw_topic=raw_topic.get_topic_name(),
            dlq_topic=dlq_topic.get_topic_name(),
            now=datetime.now(UTC),
        )

        async def send(m: Outgoing) -> Awaitable[object]:
            return await producer.send(m.topic, m.key, m.value, None, None, m.headers)

        return await send_all(messages, send)


class SourceRunner:
    """One source's poll loop state on this worker."""

    def __init__(self, source: SourceConfig, http: httpx.AsyncClient) -> None:
        self.source = source
        self.client = PagerDutyClient(
            http,
            base_url=source.api_url,
            auth=make_auth(source.credentials, http),
            retry=RetryPolicy(
                max_attempts=settings.http_retry_attempts, base_delay=settings.http_retry_base
            ),
            timeout=settings.http_timeout,
            on_answer=lambda status: metrics.API_REQUESTS.labels(source.name, status).inc(),
        )
        self.next_due = 0.0
        self.task: asyncio.Task[None] | None = None
        self.consecutive_failures = 0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def poll(self) -> None:
        started = time.monotonic()
        outcome = "failed"
        failure: tuple[str, int | None, str] | None = None
        try:
            report = await poll_once(
                self.source.name,
                self.client,
                KafkaPublisher(),
                TableCheckpoints(),
                lookback=self.source.lookback,
                overlap=self.source.overlap,
                max_window=MAX_WINDOW,
                keep_going=app.is_leader,
            )
            outcome = "ok"
        except PollInterrupted:
            outcome = "interrupted"
            log.info("poll source=%s stopped: this worker no longer leads", self.source.name)
            return
        except PagerDutyError as exc:
            failure = (exc.kind, getattr(exc, "status", None), str(exc))
        except PublishError as exc:
            failure = ("publish", None, str(exc))
        except Exception as exc:
            failure = ("internal", None, REDACTOR.scrub(f"{type(exc).__name__}: {exc}"))
        finally:
            self.next_due = started + self.source.poll_interval.total_seconds()
            metrics.POLLS.labels(self.source.name, outcome).inc()
            metrics.POLL_DURATION.labels(self.source.name).observe(time.monotonic() - started)
        if failure is not None:
            kind, status, message = failure
            self.consecutive_failures += 1
            log.warning(
                "poll source=%s failed (%s, %d in a row): %s; checkpoint unchanged",
                self.source.name,
                kind,
                self.consecutive_failures,
                message,
            )
            await self._report(watchdog.poll_failed(self.source, kind, status, message))
            return
        self.consecutive_failures = 0
        log.info(report.summary())
        await self._report(watchdog.poll_succeeded(self.source, report.newest_record_at))

    async def _report(self, health_update: Awaitable[None]) -> None:
        # health bookkeeping must never stop polling; the next poll reports again
        try:
            await health_update
        except Exception as exc:
            log.warning(
                "health update for source=%s failed: %s: %s",
                self.source.name,
                type(exc).__name__,
                exc,
            )


@app.service
class Poller(Service):
    """Starts due polls on the leader; cancels them anywhere else."""

    def __post_init__(self) -> None:
        self.runners: dict[str, SourceRunner] = {}
        self.http: httpx.AsyncClient | None = None
        #: whether this worker, since it became the leader, read the checkpoints' changelog
        self.caught_up = False

    async def on_start(self) -> None:
        if not settings.sources:
            log.error(
                "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"
            )
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.http_timeout, connect=min(10.0, settings.http_timeout)),
            follow_redirects=False,
            headers={"User-Agent": "streamapp/0.1 (+audit-records collector)"},
        )
        self.runners = {s.name: SourceRunner(s, self.http) for s in settings.sources}

    async def on_stop(self) -> None:
        await self._cancel_all()
        if self.http is not None:
            await self.http.aclose()

    async def _cancel_all(self) -> None:
        tasks = [r.task for r in self.runners.values() if r.running]
        for task in tasks:
            assert task is not None
            task.cancel()
        for task in tasks:
            assert task is not None
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @Service.task
    async def _ticker(self) -> None:
        while not self.should_stop:
            await self.tick()
            await self.sleep(0.5)

    async def tick(self) -> None:
        if not app.is_leader():
            self.caught_up = False
            if any(r.running for r in self.runners.values()):
                log.info("this worker is no longer the leader: stopping its polls")
                await self._cancel_all()
            return
        if app.rebalancing or app.in_recovery:
            return
        if not self.caught_up:
            await catch_up_checkpoints()
            self.caught_up = True
        now = time.monotonic()
        for runner in self.runners.values():
            if not runner.running and now >= runner.next_due:
                runner.task = asyncio.ensure_future(runner.poll())

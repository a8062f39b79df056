"""``backfill``: walk a past range of one source into the raw topic, resumable, with progress.

The walk is the one ingestion loop (``streamapp.core.ingest.backfill_source``), a few windows
at a time; done windows are recorded in the progress topic (the one the poller's checkpoints
live in) once the broker acknowledged their records, so a run stopped for any reason resumes
where it stopped, and dedupe drops what a window walked twice wrote.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from streamapp.cli.common import CommandFailed, pick_source
from streamapp.config import Settings
from streamapp.core.backfill import (
    BackfillPlan,
    ProgressMeter,
    ProgressView,
    resolve_range,
    start_line,
    summary_line,
    window_size,
)
from streamapp.core.errors import PagerDutyError, PublishError
from streamapp.core.ingest import WindowResult, backfill_source
from streamapp.core.redact import REDACTOR
from streamapp.kafka.clients import BrokerUnavailable, Cluster
from streamapp.kafka.progress import ProgressTable
from streamapp.kafka.publisher import Publisher
from streamapp.kafka.rawsink import RawSink
from streamapp.kafka.statetopic import TOPIC_CONFIG, StateTopic
from streamapp.pagerduty.factory import ClientFactory, http_client


class _Progress:
    """The meter and its view, made once the plan is known."""

    def __init__(self, source_name: str, fresh: bool) -> None:
        self.source_name = source_name
        self.fresh = fresh
        self.meter: ProgressMeter | None = None
        self.view: ProgressView | None = None

    def planned(self, plan: BackfillPlan) -> None:
        self.meter = ProgressMeter(self.source_name, windows_total=len(plan.windows))
        self.view = ProgressView(self.meter, sys.stderr)
        self.view.say(start_line(plan, self.source_name, fresh=self.fresh))

    def paged(self, page: Any) -> None:
        assert self.meter is not None and self.view is not None
        self.meter.page(len(page.records), len(page.malformed))
        self.view.on_page()

    def windowed(self, result: WindowResult) -> None:
        assert self.meter is not None and self.view is not None
        self.meter.window_done()
        self.view.on_window(result.window, result.records, result.pages)

    def kept(self) -> str:
        done = self.meter.windows_done if self.meter else 0
        total = self.meter.windows_total if self.meter else 0
        if not done:
            return "no window finished yet"
        return f"{done} of {total} windows are saved: run the same command again to resume"


async def run_backfill(
    settings: Settings,
    cluster: Cluster,
    *,
    progress_topic: str,
    source_name: str | None,
    since: str,
    until: str | None,
    window: str,
    fresh: bool,
    on_interrupt: Callable[[], None] = lambda: None,
) -> int:
    source = pick_source(settings, source_name)
    start, end = resolve_range(since, until, now=datetime.now(UTC))
    size = window_size(window)
    topics = settings.topics
    await cluster.ensure_topics(
        {
            topics.raw: (settings.partitions, {}),
            topics.dlq: (settings.partitions, {}),
            progress_topic: (1, dict(TOPIC_CONFIG)),
        }
    )
    publisher = Publisher(cluster, max_request_size=settings.kafka_max_message_bytes)
    for topic, limit in (await cluster.message_limits([topics.raw])).items():
        publisher.set_topic_limit(topic, limit)
    await publisher.start()
    progress = ProgressTable(StateTopic(progress_topic, publisher=publisher))
    shown = _Progress(source.name, fresh)
    try:
        await progress.table.start()
        await progress.table.caught_up()
        async with http_client(settings.http_timeout) as http:
            client = ClientFactory.from_settings(settings, http).client(source)
            await backfill_source(
                source.name,
                client,
                RawSink(publisher, topics.raw),
                progress,
                since=start,
                until=end,
                max_window=size,
                fresh=fresh,
                concurrency=settings.backfill_concurrency,
                on_plan=shown.planned,
                on_page=shown.paged,
                on_window=shown.windowed,
            )
    except (PagerDutyError, PublishError, BrokerUnavailable) as exc:
        raise CommandFailed(
            f"backfill source={source.name} failed: {REDACTOR.scrub(str(exc))}; {shown.kept()}"
        ) from None
    except asyncio.CancelledError:  # Ctrl-C
        print(f"backfill source={source.name} interrupted; {shown.kept()}", file=sys.stderr)
        on_interrupt()
        raise
    finally:
        if shown.view is not None:
            shown.view.close()
        await progress.table.stop()
        await publisher.stop()
    assert shown.meter is not None
    print(summary_line(shown.meter), file=sys.stderr)
    return 0

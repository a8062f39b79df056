"""Prometheus metrics of one worker: a registry of its own, served at ``/metrics``.

Counters are incremented where the work happens (poller, pipeline, deliverer); the
checkpoint lag and the pipeline's wait for acknowledgements are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()  # the *_created series only add noise to every scrape

Checkpoints = Callable[[], Iterable[tuple[str, datetime]]]


class _Gauges(Collector):
    """Values computed when Prometheus scrapes."""

    def __init__(self, checkpoints: Checkpoints, stalled: Callable[[], float]) -> None:
        self._checkpoints = checkpoints
        self._stalled = stalled

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "streamapp_checkpoint_lag_seconds",
            "Seconds between now and the source's checkpoint (records older are acknowledged)",
            labels=["source"],
        )
        now = datetime.now(UTC)
        for source, until in self._checkpoints():
            lag.add_metric([source], max(0.0, (now - until).total_seconds()))
        yield lag
        yield GaugeMetricFamily(
            "streamapp_pipeline_unacknowledged_seconds",
            "Seconds the pipeline's current batch has waited for the broker's acknowledgements",
            value=self._stalled(),
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        self.records_polled = counter(
            "streamapp_records_polled", "Audit records read from PagerDuty", "source"
        )
        self.records_emitted = counter(
            "streamapp_records_emitted",
            "Audit records written to the output topic (first time seen)",
            "source",
        )
        self.records_deduplicated = counter(
            "streamapp_records_deduplicated",
            "Raw records dropped because their id was already emitted",
            "source",
        )
        self.records_dead_lettered = counter(
            "streamapp_records_dead_lettered",
            "Records sent to the dead-letter topic, by the stage that could not take them",
            "source",
            "stage",
        )
        self.api_requests = counter(
            "streamapp_api_requests",
            "PagerDuty API requests by answer (HTTP status, or timeout/unreachable)",
            "source",
            "status",
        )
        self.polls = counter(
            "streamapp_polls", "Polls by outcome (ok, failed, interrupted)", "source", "outcome"
        )
        self.poll_duration = Histogram(
            "streamapp_poll_duration_seconds",
            "Duration of one poll of one source",
            ["source"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=registry,
        )
        self.notifications_sent = counter(
            "streamapp_notifications_sent", "Health notifications delivered, per channel", "channel"
        )
        self.notifications_failed = counter(
            "streamapp_notifications_failed",
            "Health notifications that could not be delivered after retries, per channel",
            "channel",
        )

    def watch(self, checkpoints: Checkpoints, stalled: Callable[[], float]) -> None:
        self.registry.register(_Gauges(checkpoints, stalled))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- what the worker's parts report ---------------------------------------------------

    def answer(self, source: str, status: str) -> None:
        self.api_requests.labels(source, status).inc()

    def poll(self, source: str, outcome: str, seconds: float) -> None:
        self.polls.labels(source, outcome).inc()
        if outcome != "interrupted":
            self.poll_duration.labels(source).observe(seconds)

    def published(self, source: str, records: int, rejected: int) -> None:
        self.records_polled.labels(source).inc(records)

    def delivery(self, channel: str, ok: bool) -> None:
        (self.notifications_sent if ok else self.notifications_failed).labels(channel).inc()

"""Prometheus metrics: one registry for the process, served at ``/metrics`` by the worker.

Counters are incremented where the work happens (poller, agents, deliverer); the
checkpoint lag is computed at scrape time from the checkpoints the worker holds.
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
REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS_POLLED = Counter(
    "streamapp_records_polled", "Audit records read from PagerDuty", ["source"], registry=REGISTRY
)
RECORDS_EMITTED = Counter(
    "streamapp_records_emitted",
    "Audit records written to the output topic (first time seen)",
    ["source"],
    registry=REGISTRY,
)
RECORDS_DEDUPLICATED = Counter(
    "streamapp_records_deduplicated",
    "Raw records dropped because their id was already emitted",
    ["source"],
    registry=REGISTRY,
)
RECORDS_DEAD_LETTERED = Counter(
    "streamapp_records_dead_lettered",
    "Records sent to the dead-letter topic",
    ["source", "stage"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "streamapp_api_requests",
    "PagerDuty API requests by answer (HTTP status, or timeout/unreachable)",
    ["source", "status"],
    registry=REGISTRY,
)
POLLS = Counter(
    "streamapp_polls",
    "Polls by outcome (ok, failed, interrupted)",
    ["source", "outcome"],
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    "streamapp_poll_duration_seconds",
    "Duration of one poll of one source",
    ["source"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
GAP_RECORDS = Counter(
    "streamapp_skipped_offsets_repaired",
    "Raw records the stream skipped (a faust defect) that the agent read directly",
    registry=REGISTRY,
)
NOTIFICATIONS_SENT = Counter(
    "streamapp_notifications_sent",
    "Health notifications delivered, per channel",
    ["channel"],
    registry=REGISTRY,
)
NOTIFICATIONS_FAILED = Counter(
    "streamapp_notifications_failed",
    "Health notifications that could not be delivered after retries, per channel",
    ["channel"],
    registry=REGISTRY,
)


class CheckpointLag(Collector):
    """``now - checkpoint`` per source, read when Prometheus scrapes."""

    def __init__(self, checkpoints: Callable[[], Iterable[tuple[str, datetime]]]) -> None:
        self._checkpoints = checkpoints

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "streamapp_checkpoint_lag_seconds",
            "Seconds between now and the source's checkpoint (records older are acknowledged)",
            labels=["source"],
        )
        now = datetime.now(UTC)
        for source, until in self._checkpoints():
            gauge.add_metric([source], max(0.0, (now - until).total_seconds()))
        yield gauge


def register_checkpoint_lag(checkpoints: Callable[[], Iterable[tuple[str, datetime]]]) -> None:
    REGISTRY.register(CheckpointLag(checkpoints))


def render() -> bytes:
    return generate_latest(REGISTRY)

"""The worker's web endpoints, on ``STREAMAPP_WEB_PORT`` once table recovery is complete:

- ``/metrics``: Prometheus text format;
- ``/ready``: 200 when this worker has recovered its tables and is not rebalancing;
- ``/health``: every source's health as JSON; ``/health/{source}``: one source (404 if
  unknown). Status 200 whatever the health: the body says it, the endpoint is up.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from streamapp.core.health import health_summary
from streamapp.core.models import Checkpoint
from streamapp.worker import metrics
from streamapp.worker.app import app, checkpoints, settings
from streamapp.worker.watchdog import state_of

_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode


def _checkpoint_times() -> Iterator[tuple[str, datetime]]:
    for key, value in list(checkpoints.items()):
        try:
            yield key.decode(), _decode_checkpoint(value).until
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            continue


metrics.register_checkpoint_lag(_checkpoint_times)


@app.page("/metrics")
class MetricsView(View):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/ready")
class ReadyView(View):
    """200 once this worker has recovered its tables and is not rebalancing; 503 before."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        ready = not app.rebalancing and not app.in_recovery
        body = {
            "ready": ready,
            "leader": app.is_leader(),
            "rebalancing": bool(app.rebalancing),
            "in_recovery": bool(app.in_recovery),
        }
        return self.json(body, status=200 if ready else 503)


def _summary(source_name: str) -> dict[str, Any]:
    source = next(s for s in settings.sources if s.name == source_name)
    return health_summary(
        state_of(source_name), now=datetime.now(UTC), health_check=source.health_check
    )


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        sources = [_summary(source.name) for source in settings.sources]
        worst = "ok"
        for status in ("stale", "degraded", "error"):
            if any(s["status"] == status for s in sources):
                worst = status
        return self.json({"status": worst, "sources": sources})


@app.page("/health/{source}")
class SourceHealthView(View):
    async def get(self, request: Request, source: str, **kwargs: Any) -> Response:
        if source not in {s.name for s in settings.sources}:
            return self.json({"error": f"no source named {source!r}"}, status=404)
        return self.json(_summary(source))

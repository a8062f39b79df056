"""The worker's web endpoints: ``/metrics`` (Prometheus) and ``/ready``.

Health endpoints live with the watchdog. Served by faust's web server on
``STREAMAPP_WEB_PORT`` once table recovery is complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from streamapp import metrics
from streamapp.app import app, checkpoints
from streamapp.models import Checkpoint

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

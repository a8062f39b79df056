"""The worker's web endpoints (faust views: a few lines each around the runtime).

- ``/``: the status page (``streamapp.worker.statuspage``); ``/api/status``: its model as JSON;
- ``POST /actions/verify`` and ``POST /actions/test-notification``: the page's buttons,
  guarded against cross-site requests (``check_action``);
- ``/health``: every source's health and the worker's own (the pipeline's wait for
  acknowledgements, polls that make no progress); ``/health/{source}``: one source (404 if
  unknown). 200 whatever the health: the body's ``status`` says it;
- ``/ready``: 200 when this worker has joined, is not rebalancing and its pipeline is not
  stalled; 503 otherwise;
- ``/metrics``: Prometheus text format.

The web server binds to ``STREAMAPP_WEB_BIND`` (loopback by default). Nothing served is a
secret: no token, channel URL or routing key reaches any of these answers.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from streamapp.worker.app import app, runtime
from streamapp.worker.status import (
    health_document,
    page_model,
    ready_document,
    run_action,
    source_summary,
)
from streamapp.worker.statuspage import (
    PAGE_HEADERS,
    TEST_NOTIFICATION_PATH,
    VERIFY_PATH,
    check_action,
    new_csrf_token,
    render_page,
)

#: random per worker process; reaches only pages this worker served
CSRF_TOKEN = new_csrf_token()
_encode = msgspec.json.Encoder().encode


@app.page("/metrics")
class MetricsView(View):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.bytes(runtime.metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/ready")
class ReadyView(View):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        body = ready_document(
            runtime, app.is_leader(), bool(app.rebalancing), bool(app.in_recovery)
        )
        return self.json(body, status=200 if body["ready"] else 503)


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.json(health_document(runtime))


@app.page("/health/{source}")
class SourceHealthView(View):
    async def get(self, request: Request, source: str, **kwargs: Any) -> Response:
        summary = source_summary(runtime, source)
        if summary is None:
            return self.json({"error": f"no source named {source!r}"}, status=404)
        return self.json(summary)


@app.page("/")
class StatusPageView(View):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        model = page_model(runtime, leader=app.is_leader(), now=time.time())
        response = self.html(render_page(model, csrf_token=CSRF_TOKEN))
        for name, value in PAGE_HEADERS.items():
            response.headers[name] = value
        return response


@app.page("/api/status")
class StatusView(View):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        model = page_model(runtime, leader=app.is_leader(), now=time.time())
        return self.bytes(_encode(model), content_type="application/json")


class _Action(View):
    action = ""

    async def post(self, request: Request, **kwargs: Any) -> Response:
        host = request.headers.get("Host", "")
        refusal = check_action(request.method, request.headers, host, CSRF_TOKEN)
        if refusal is not None:
            return self.json({"ok": False, "message": refusal}, status=403)
        answer, status = await run_action(runtime, self.action, await request.read())
        return self.bytes(_encode(answer), content_type="application/json", status=status)

    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.json({"ok": False, "message": "actions need a POST"}, status=405)


@app.page(VERIFY_PATH)
class VerifyView(_Action):
    action = "verify"


@app.page(TEST_NOTIFICATION_PATH)
class TestNotificationView(_Action):
    action = "test-notification"

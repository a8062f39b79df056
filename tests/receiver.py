"""A local HTTP receiver for notification channels, in a thread of its own so worker
processes can post to it while a test waits: ``/ok/...`` answers 200, ``/fail/...`` 500,
``/hang/...`` never answers within any sane timeout."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.threaded_http import ThreadedHttpServer


@dataclass
class Received:
    path: str
    body: Any
    at: float


@dataclass
class ReceiverThread(ThreadedHttpServer):
    method = "POST"
    received: list[Received] = field(default_factory=list)
    port: int = 0

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.received.append(Received(request.path, body, time.monotonic()))
        if request.path.startswith("/hang"):
            await asyncio.sleep(3600)
        if request.path.startswith("/fail"):
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response({"status": "success"}, status=202)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, prefix: str) -> list[Any]:
        with self._lock:
            return [r.body for r in self.received if r.path.startswith(prefix)]

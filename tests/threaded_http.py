"""An aiohttp server on an event loop of its own in a daemon thread, so that worker
processes can talk to it while a test waits (``tests/receiver.py``, ``tests/hostile_server.py``)."""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar, Self

from aiohttp import web


class ThreadedHttpServer:
    """``with Server() as server: server.port``; a subclass (a dataclass with a ``port``
    field) answers requests in ``_handle`` and guards what it records with ``_lock``."""

    #: the HTTP method every path answers
    method: ClassVar[str] = "GET"
    #: cancel a handler whose client went away (a hostile answer streamed for ever)
    handler_cancellation: ClassVar[bool] = False
    port: int

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route(self.method, "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.5, handler_cancellation=self.handler_cancellation
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port the system chose

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def _stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

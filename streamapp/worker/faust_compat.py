"""The one module that depends on faust beyond a plain, stable use of its API.

Each function below names the faust behaviour it relies on or works around. The module
refuses to import with any faust version but the one it was written and tested for, so an
upgrade of the pin is a deliberate step: re-read each use, run ``tests/test_faust_compat.py``.

Uses:

- ``builtin_pages``: the per-blueprint switches ``web_router_enabled``,
  ``web_tables_enabled``, ``web_graph_enabled``, ``web_stats_enabled`` and
  ``web_metrics_enabled`` of this faust release (``faust/web/base.py``, ``BLUEPRINT_FLAGS``).
  faust's pages show internals, so they are off unless ``STREAMAPP_WEB_FAUST_PAGES`` asks.
  With the stats page off faust mounts its "production index" at ``/``; our status page
  is registered at ``/`` before the blueprints are applied, and is what ``/`` serves.
- ``credentials``: faust's ``SASLCredentials``/``SSLCredentials`` for ``broker_credentials``.
- ``fail_start``: a worker that cannot start (the broker unreachable, a topic refused)
  should say so in one line and exit non-zero. Raising from a service's ``on_start`` makes
  faust log a traceback, and ``sys.exit`` from inside the worker leaves it "Stopping" for
  ever (faust-streaming/faust#324, closed as won't-fix; mode has the same hang for a
  crashing service, ask/mode#54). So the line is logged and the process ends itself.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import faust

from streamapp.config.security import KafkaSecurity

#: the faust-streaming release every use below was checked against
FAUST_VERSION = "0.15.3"

if faust.__version__ != FAUST_VERSION:  # pragma: no cover - the pin makes this unreachable
    raise ImportError(
        f"streamapp.worker.faust_compat was written for faust-streaming {FAUST_VERSION}, but"
        f" {faust.__version__} is installed: review each use in this module before changing"
        " the pin in pyproject.toml"
    )

log = logging.getLogger("streamapp.worker")

#: faust's built-in web pages and the settings that switch them
BUILTIN_PAGES = (
    "web_router_enabled",
    "web_tables_enabled",
    "web_graph_enabled",
    "web_stats_enabled",
    "web_metrics_enabled",
)


def builtin_pages(enabled: bool) -> dict[str, Any]:
    """faust settings serving (or not) faust's own pages: router, tables, graph, stats."""
    return dict.fromkeys(BUILTIN_PAGES, enabled)


def credentials(security: KafkaSecurity) -> Any:
    """The same settings as faust's ``broker_credentials`` (None for plaintext)."""
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password.reveal() if security.sasl_password else None,
            ssl_context=security.ssl_context(),
            mechanism=security.sasl_mechanism,
        )
    if security.uses_ssl:
        return faust.SSLCredentials(security.ssl_context())
    return None


def fail_start(message: str, status: int = 1) -> None:
    """Say why the worker cannot start, in one line, and end the process with ``status``.

    The line goes to the process's real standard error (faust redirects ``sys.stderr`` into
    its log while a worker runs), once.
    """
    stream = sys.__stderr__ or sys.stderr
    print(f"streamapp: cannot start: {message}", file=stream, flush=True)
    logging.shutdown()
    os._exit(status)


def use_uvloop() -> bool:
    """Run the worker on uvloop when it is installed (faster sockets and callbacks).

    faust-streaming 0.15.3 accepts ``--loop uvloop`` on its command line but never acts on
    it (``faust/cli/base.py`` stores the choice and nothing reads it), so the event loop
    policy is set here, at import, before faust's worker creates its loop.
    """
    try:
        import uvloop
    except ImportError:
        return False
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True

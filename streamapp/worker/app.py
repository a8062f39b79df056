"""The faust application: settings, and thin adapters around the worker's plain classes.

``faust -A streamapp.app worker -l info`` finds ``app`` (``streamapp/app.py`` re-exports
it). faust provides what it is good at: the worker process, its signals and shutdown,
leader election among the workers (the poller polls on the leader only), the web server,
the command line, and the one agent that hands notifications to the channels. Everything
else is a plain class in :mod:`streamapp.worker.runtime`, started by one service here.

Importing this module reads the environment only (cheap): no loop, no client, no
connection is made until the worker starts. A bad setting stops start-up with one line.
"""

from __future__ import annotations

import logging
import sys

import faust
from mode import Service

from streamapp.config import Settings, load_settings, unknown_variables
from streamapp.core.errors import ConfigError, StreamappError
from streamapp.worker import faust_compat
from streamapp.worker.logsetup import logging_config
from streamapp.worker.runtime import Runtime

log = logging.getLogger("streamapp.worker")

#: the leaf modules that define views and commands
MODULES = ["streamapp.worker.views", "streamapp.worker.commands"]


def _load() -> Settings:
    try:
        return load_settings(require_sources=False)
    except ConfigError as exc:
        print(f"streamapp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


settings = _load()
faust_compat.use_uvloop()


class App(faust.App):
    """faust's App, checking first that a broker answers: faust's own producer would
    otherwise fail with a traceback (a start-up error is one line and a non-zero exit)."""

    async def on_first_start(self) -> None:
        await super().on_first_start()
        try:
            await runtime.cluster.reachable()
        except StreamappError as exc:
            faust_compat.fail_start(str(exc))


app = App(
    settings.app_id,
    broker=settings.broker or "kafka://127.0.0.1:9092",
    store="memory://",
    datadir=settings.data_dir,
    autodiscover=MODULES,
    origin="streamapp",
    topic_partitions=1,
    key_serializer="raw",
    value_serializer="raw",
    web_port=settings.web_port,
    web_bind=settings.web_bind,
    # faust's own pages (tables, router, graph, stats) show internals: off unless asked for
    **faust_compat.builtin_pages(settings.web_faust_pages),
    producer_acks=-1,
    # short enough that a dead worker's polling moves to another within seconds
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=max(0.5, min(3.0, settings.session_timeout / 6)),
    logging_config=logging_config(settings.log_level, settings.log_json),
    broker_credentials=faust_compat.credentials(settings.kafka_security),
    recovery_consistency_check=settings.recovery_consistency_check,
)

notifications_topic = app.topic(
    settings.topics.notifications, partitions=1, key_type=bytes, value_type=bytes
)

runtime = Runtime(
    settings,
    is_leader=app.is_leader,
    ready=lambda: not app.rebalancing and not app.in_recovery,
)


@app.service
class Worker(Service):
    """Starts the worker's parts once faust is up; stops them first when it stops."""

    async def on_start(self) -> None:
        for name in unknown_variables():
            log.warning("%s is not a setting streamapp knows (a typo?); it is ignored", name)
        try:
            await runtime.start()
        except StreamappError as exc:
            faust_compat.fail_start(str(exc))

    async def on_stop(self) -> None:
        await runtime.stop()


@app.agent(notifications_topic)
async def deliver(stream: faust.StreamT) -> None:
    """Each health notification, to its source's channels."""
    async for value in stream:
        await runtime.watchdog.deliver(value)

"""Operator commands: ``faust -A streamapp.app <command> [options]``, a few lines each.

    backfill --source NAME --since WHEN [--until WHEN] [--window 1d] [--fresh]
    tail [--follow] [--filter KEY=VALUE ...] [--from-beginning | --last N] [--format F]
    sources [--json]
    verify [--source NAME] [--timeout SECONDS]
    rules test FILE [--source NAME] | rules test --raw-topic
    export-schemas [--check]

The work is in ``streamapp.cli`` (plain functions); here they become faust commands. None
starts a worker or faust's producer: each runs on a plain asyncio loop with its own aiokafka
clients. Each failure is one line on stderr, never a traceback and never a token. Exit
status: 0 success, 1 a failure at run time (PagerDuty refused, the broker is unreachable or
refused a write), 2 bad arguments or configuration, 130 interrupted (Ctrl-C; a backfill
keeps every window it finished).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn

import click
from faust.cli import AppCommand, argument, option

from streamapp.cli import rules as rules_cli
from streamapp.cli.backfill import run_backfill
from streamapp.cli.common import failure, flush_quietly
from streamapp.cli.sources import run_sources
from streamapp.cli.tail import FILTER_KEYS, run_tail
from streamapp.core.errors import ConfigError
from streamapp.worker.app import app, runtime, settings

__all__ = ["backfill", "export_schemas", "rules", "sources", "tail", "verify"]


class StreamappCommand(AppCommand):
    """Runs an ``async`` handler on a fresh loop (no faust worker) and exits with its status.

    The handler returns the exit status (``None`` is 0). Our errors become one line on
    stderr: configuration and argument errors exit 2, everything else 1.
    """

    abstract: ClassVar[bool] = True
    #: set by a handler that already explained an interruption (Ctrl-C)
    said_interrupted: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        name = self.ctx.info_name or type(self).__name__
        if not self.debug:
            # aiokafka logs connection failures at ERROR, faust/mode chatter at INFO
            for noisy in ("aiokafka", "kafka", "faust", "mode"):
                logging.getLogger(noisy).setLevel(logging.CRITICAL)
        try:
            status = asyncio.run(self._execute(*args, **kwargs))
        except KeyboardInterrupt:
            if not self.said_interrupted:
                print(f"streamapp {name}: interrupted", file=sys.stderr)
            status = 130
        except BaseException as exc:
            if isinstance(exc, SystemExit) or self.debug:
                raise
            line, status = failure(exc, runtime.cluster)
            print(f"streamapp {name}: {line}", file=sys.stderr)
        flush_quietly()
        raise SystemExit(status or 0)

    async def _execute(self, *args: Any, **kwargs: Any) -> int | None:
        try:
            result = self.run(*self.args, *args, **{**self.kwargs, **kwargs})
            if inspect.isawaitable(result):
                result = await result
            return int(result) if result is not None else None
        finally:
            await self.on_stop()

    def interrupted(self) -> None:
        self.said_interrupted = True


@app.command(
    option(
        "--source",
        "source_name",
        default=None,
        help="Configured source to backfill (optional when only one is configured).",
    ),
    option(
        "--since",
        required=True,
        help="Start: ISO 8601 (2024-05-01, 2024-05-01T12:00:00Z) or a duration ago (30d, 12h).",
    ),
    option("--until", default=None, help="End, same forms as --since. [default: now]"),
    option("--window", default="1d", help="Longest window per request walk (1m..31d)."),
    option("--fresh", is_flag=True, default=False, help="Ignore saved progress: walk it all."),
    base=StreamappCommand,
)
async def backfill(
    self: StreamappCommand,
    source_name: str | None,
    since: str,
    until: str | None,
    window: str,
    fresh: bool,
) -> int:
    """Walk a past range of a source into the raw topic (resumable; dedupe applies)."""
    return await run_backfill(
        settings,
        runtime.cluster,
        progress_topic=runtime.names.progress,
        source_name=source_name,
        since=since,
        until=until,
        window=window,
        fresh=fresh,
        on_interrupt=self.interrupted,
    )


@app.command(
    option("--follow", "-f", is_flag=True, default=False, help="Keep printing new records."),
    option(
        "--filter",
        "filters",
        multiple=True,
        help=f"KEY=VALUE on a document field ({', '.join(FILTER_KEYS)}); repeatable.",
    ),
    option("--from-beginning", is_flag=True, default=False, help="Start at the oldest record."),
    option(
        "--last",
        type=int,
        default=None,
        help="Start with the last N records of each partition (newest N overall shown). "
        "[default: 10]",
    ),
    option(
        "--format",
        "output_format",
        type=click.Choice(["auto", "json", "text"]),
        default="auto",
        help="json: the documents as JSON lines; text: one line per record; auto: text on "
        "a terminal, json otherwise.",
    ),
    base=StreamappCommand,
)
async def tail(
    self: StreamappCommand,
    follow: bool,
    filters: Sequence[str],
    from_beginning: bool,
    last: int | None,
    output_format: str,
) -> int:
    """Print the output topic's documents (without --follow: up to its end, then exit)."""
    return await run_tail(
        runtime.cluster,
        settings.topics.output,
        follow=follow,
        filters=filters,
        from_beginning=from_beginning,
        last=last,
        output_format=output_format,
    )


@app.command(
    option("--json", "as_json", is_flag=True, default=False, help="Machine-readable output."),
    base=StreamappCommand,
)
async def sources(self: StreamappCommand, as_json: bool) -> int:
    """The configured sources with their checkpoint, lag, last record and health."""
    return await run_sources(
        settings.sources,
        runtime.cluster,
        progress_topic=runtime.names.progress,
        health_topic=runtime.names.health,
        as_json=as_json or self.json,
    )


@app.command(
    argument("action", type=click.Choice(["test"])),
    argument("path", required=False),
    option("--source", "source_name", default=None, help="Source name the records are from."),
    option(
        "--raw-topic",
        is_flag=True,
        default=False,
        help="Replay every record on the raw topic instead of a file.",
    ),
    base=StreamappCommand,
)
async def rules(
    self: StreamappCommand,
    action: str,
    path: str | None,
    source_name: str | None,
    raw_topic: bool,
) -> int:
    """rules test FILE: what the detection rules would fire on the records of FILE (``-``:
    stdin), or on the raw topic's records with --raw-topic."""
    if raw_topic == (path is not None):
        raise ConfigError("rules test: give either FILE or --raw-topic")
    if raw_topic:
        documents = await rules_cli.from_raw_topic(runtime.cluster, settings.topics.raw)
    else:
        assert path is not None
        name = source_name or (settings.sources[0].name if settings.sources else "pagerduty")
        documents = rules_cli.from_file(path, source_name=name)
    return rules_cli.show(documents, settings.rules)


@app.command(
    option("--check", is_flag=True, default=False, help="Exit 1 when a file is out of date."),
    base=StreamappCommand,
)
async def export_schemas(self: StreamappCommand, check: bool) -> int:
    """Regenerate schemas/*.schema.json from the models (--check: fail on drift)."""
    from streamapp.cli import schemas

    return schemas.main(["--check"] if check else [])


@app.command(
    option("--source", "source_name", default=None, help="Only this source."),
    option("--timeout", "probe_timeout", type=float, default=None, help="Seconds per probe."),
    base=StreamappCommand,
)
async def verify(
    self: StreamappCommand, source_name: str | None, probe_timeout: float | None
) -> int:
    """Probe each source's credentials with one request; one line per source."""
    from streamapp.pagerduty import verify as verifier

    argv: list[str] = []
    if source_name is not None:
        argv += ["--source", source_name]
    if probe_timeout is not None:
        argv += ["--timeout", str(probe_timeout)]
    # verify runs its own event loop: give it a thread of its own
    return int(await asyncio.to_thread(verifier.main, argv) or 0)

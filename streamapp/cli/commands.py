"""Operator commands: ``faust -A streamapp.app <command> [options]``.

    backfill --source NAME --since WHEN [--until WHEN] [--window 1d] [--fresh]
    tail [--follow] [--filter KEY=VALUE ...] [--from-beginning | --last N] [--format F]
    sources [--json]
    export-schemas [--check]
    verify [--source NAME] [--timeout SECONDS]

None of them starts a worker or faust's producer: each runs on a plain asyncio loop with
its own aiokafka client, bootstrapped from ``KAFKA_BROKER``. Each failure is one line on
stderr, never a traceback and never a token. Exit status: 0 success, 1 a failure at run
time (PagerDuty refused, the broker is unreachable or refused a write), 2 bad arguments or
configuration, 130 interrupted (Ctrl-C; a backfill keeps every window it finished).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, NoReturn
from urllib.parse import urlsplit

import click
import msgspec
from aiokafka.errors import KafkaError
from faust.cli import AppCommand, option

from streamapp.config import SourceConfig
from streamapp.core.backfill import (
    BackfillPlan,
    ProgressMeter,
    ProgressView,
    resolve_range,
    start_line,
    summary_line,
    window_size,
)
from streamapp.core.durations import format_duration
from streamapp.core.enrich import decode_document
from streamapp.core.errors import ConfigError, PagerDutyError, PublishError, StreamappError
from streamapp.core.ingest import WindowResult, backfill_source
from streamapp.core.models import Checkpoint, rfc3339
from streamapp.core.output import OutputDocument
from streamapp.core.redact import REDACTOR
from streamapp.kafka.clients import BrokerUnavailable, Cluster
from streamapp.kafka.progress import ProgressTable
from streamapp.kafka.publisher import Publisher
from streamapp.kafka.rawsink import RawSink
from streamapp.kafka.statetopic import TOPIC_CONFIG, StateTopic
from streamapp.pagerduty.factory import ClientFactory, http_client
from streamapp.worker.app import app, runtime, settings

__all__ = ["FILTER_KEYS", "backfill", "export_schemas", "sources", "tail", "verify"]

#: output-document fields ``tail --filter`` accepts
FILTER_KEYS = ("action", "resource_type", "category", "source_name", "event_name")


class CommandFailed(StreamappError):
    """A command stops with one line and an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


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
            if isinstance(exc, SystemExit):
                raise
            if self.debug:
                raise
            line, status = _failure(exc)
            print(f"streamapp {name}: {line}", file=sys.stderr)
        _flush_quietly()
        raise SystemExit(status or 0)

    async def _execute(self, *args: Any, **kwargs: Any) -> int | None:
        try:
            result = self.run(*self.args, *args, **{**self.kwargs, **kwargs})
            if inspect.isawaitable(result):
                result = await result
            return int(result) if result is not None else None
        finally:
            await self.on_stop()


def _failure(exc: BaseException) -> tuple[str, int]:
    """One line and an exit status for whatever stopped a command."""
    if isinstance(exc, CommandFailed):
        return REDACTOR.scrub(str(exc)), exc.status
    if isinstance(exc, ConfigError):
        return REDACTOR.scrub(str(exc)), 2
    if isinstance(exc, StreamappError):
        return REDACTOR.scrub(str(exc)), 1
    if isinstance(exc, KafkaError):
        return REDACTOR.scrub(str(_cluster().problem(exc))), 1
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return f"internal error: {REDACTOR.scrub(text)}", 1


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        # the reader went away (``| head``): nothing more to say, and no noise at exit
        try:
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def _source(name: str | None) -> SourceConfig:
    if not settings.sources:
        raise ConfigError(
            "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"
        )
    if name is None:
        if len(settings.sources) == 1:
            return settings.sources[0]
        names = ", ".join(s.name for s in settings.sources)
        raise ConfigError(f"--source: several sources are configured, name one of: {names}")
    for source in settings.sources:
        if source.name == name:
            return source
    names = ", ".join(s.name for s in settings.sources)
    raise ConfigError(f"--source: no source named {name!r} (configured: {names})")


def _cluster() -> Cluster:
    return runtime.cluster


# =========================================================================== backfill


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
    source = _source(source_name)
    start, end = resolve_range(since, until, now=datetime.now(UTC))
    size = window_size(window)
    cluster = _cluster()
    topics = settings.topics
    progress_topic = runtime.names.progress
    await cluster.ensure_topics(
        {
            topics.raw: (settings.partitions, {}),
            topics.dlq: (settings.partitions, {}),
            progress_topic: (1, dict(TOPIC_CONFIG)),
        }
    )
    publisher = Publisher(cluster, max_request_size=settings.kafka_max_message_bytes)
    for topic, limit in (await cluster.message_limits([topics.raw])).items():
        publisher.set_topic_limit(topic, limit)
    await publisher.start()
    progress = ProgressTable(StateTopic(progress_topic, publisher=publisher))
    meter: ProgressMeter | None = None
    view: ProgressView | None = None

    def planned(plan: BackfillPlan) -> None:
        nonlocal meter, view
        meter = ProgressMeter(source.name, windows_total=len(plan.windows))
        view = ProgressView(meter, sys.stderr)
        view.say(start_line(plan, source.name, fresh=fresh))

    def paged(page: Any) -> None:
        assert meter is not None and view is not None
        meter.page(len(page.records), len(page.malformed))
        view.on_page()

    def windowed(result: WindowResult) -> None:
        assert meter is not None and view is not None
        meter.window_done()
        view.on_window(result.window, result.records, result.pages)

    try:
        await progress.table.start()
        await progress.table.caught_up()
        async with http_client(settings.http_timeout) as http:
            client = ClientFactory.from_settings(settings, http).client(source)
            await backfill_source(
                source.name,
                client,
                RawSink(publisher, topics.raw),
                progress,
                since=start,
                until=end,
                max_window=size,
                fresh=fresh,
                concurrency=settings.backfill_concurrency,
                on_plan=planned,
                on_page=paged,
                on_window=windowed,
            )
    except (PagerDutyError, PublishError, BrokerUnavailable) as exc:
        raise CommandFailed(
            f"backfill source={source.name} failed: {REDACTOR.scrub(str(exc))}; {_kept(meter)}"
        ) from None
    except asyncio.CancelledError:  # Ctrl-C
        print(f"backfill source={source.name} interrupted; {_kept(meter)}", file=sys.stderr)
        self.said_interrupted = True
        raise
    finally:
        if view is not None:
            view.close()
        await progress.table.stop()
        await publisher.stop()
    assert meter is not None
    print(summary_line(meter), file=sys.stderr)
    return 0


def _kept(meter: ProgressMeter | None) -> str:
    done = meter.windows_done if meter else 0
    total = meter.windows_total if meter else 0
    if not done:
        return "no window finished yet"
    return f"{done} of {total} windows are saved: run the same command again to resume"


# =========================================================================== tail


class _Routing(msgspec.Struct, kw_only=True, frozen=True):
    """The fields ``--filter`` reads; the rest of the document is not decoded."""

    action: Any = None
    resource_type: Any = None
    category: Any = None
    source_name: Any = None
    event_name: Any = None


_decode_routing = msgspec.json.Decoder(_Routing).decode


def parse_filters(items: Iterable[str]) -> dict[str, set[str]]:
    """``KEY=VALUE`` pairs: different keys must all match, repeated keys match any value."""
    filters: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in FILTER_KEYS:
            raise ConfigError(
                f"--filter: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)},"
                f" got {item!r}"
            )
        filters.setdefault(key, set()).add(value.strip())
    return filters


def matches(value: bytes | None, filters: dict[str, set[str]]) -> bool:
    if not filters:
        return True
    if value is None:
        return False
    try:
        routing = _decode_routing(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return all(getattr(routing, key) in wanted for key, wanted in filters.items())


def _actor_text(doc: OutputDocument) -> str:
    actor = doc.actor
    if actor is None:
        return "-"
    who = actor.name or actor.id or "?"
    return f"{who} ({actor.type})" if actor.type else who


def _resource_text(doc: OutputDocument) -> str:
    ref = doc.resource or doc.root_resource
    if ref is None:
        return "-"
    name = f'"{ref.name}"' if ref.name else ""
    parts = [p for p in (ref.type, name, ref.id) if p]
    return " ".join(parts) or "-"


def pretty_line(value: bytes | None, *, partition: int = 0, offset: int = 0) -> str:
    """One compact line for a person: time, source, event, actor, resource, [category],
    source IP."""
    try:
        doc = decode_document(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        size = len(value) if value is not None else 0
        return f"(partition {partition} offset {offset}: not an output document, {size} bytes)"
    return "  ".join(
        [
            doc.event_time,
            doc.source_name,
            f"{doc.event_name:<28}",
            _actor_text(doc),
            _resource_text(doc),
            f"[{doc.category or '-'}]",
            doc.src_ip or "-",
        ]
    )


def one_line_json(value: bytes) -> bytes:
    """The document on one line: byte for byte, except that line breaks become spaces.

    ``raw`` keeps the record as PagerDuty sent it, line breaks included when it was
    pretty-printed. In JSON a line break can only be whitespace between tokens (a string
    cannot hold one unescaped), so a space in its place is the same document.
    """
    return value.replace(b"\r\n", b" ").replace(b"\n", b" ").replace(b"\r", b" ")


class _Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.printed = 0

    def __call__(self, message: Any) -> None:
        if self.as_json:
            sys.stdout.buffer.write(one_line_json(message.value or b"") + b"\n")
        else:
            sys.stdout.write(
                pretty_line(message.value, partition=message.partition, offset=message.offset)
                + "\n"
            )
        self.printed += 1

    def flush(self) -> None:
        sys.stdout.flush()


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
    from aiokafka import TopicPartition

    wanted = parse_filters(filters)
    if from_beginning and last is not None:
        raise ConfigError("--from-beginning and --last exclude each other")
    if last is not None and last < 0:
        raise ConfigError(f"--last: must be 0 or more, got {last}")
    count = 10 if last is None else last
    as_json = output_format == "json" or (output_format == "auto" and not sys.stdout.isatty())
    printer = _Printer(as_json)
    topic = settings.topics.output
    cluster = _cluster()
    consumer = await cluster.reader()
    try:
        while topic not in await consumer.topics():
            if not follow:
                raise CommandFailed(
                    f"topic {topic!r} does not exist on the broker yet (no output so far)"
                )
            await asyncio.sleep(1.0)
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            begin = await consumer.beginning_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(begin[tp], end[tp] - count))
        backlog: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    if not matches(message.value, wanted):
                        continue
                    if from_beginning:
                        printer(message)
                    else:
                        backlog.append(message)
            printer.flush()
            positions = [await consumer.position(tp) for tp in partitions]
            if all(
                pos >= end[tp] for pos, tp in zip(positions, partitions, strict=True)
            ) and not any(batch.values()):
                break
        backlog.sort(key=lambda m: (m.timestamp, m.partition, m.offset))
        for message in backlog[len(backlog) - count :] if count else []:
            printer(message)
        printer.flush()
        while follow:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    if matches(message.value, wanted):
                        printer(message)
            printer.flush()
    except KafkaError as exc:
        raise cluster.problem(exc) from None
    except BrokenPipeError:
        return 0
    finally:
        await consumer.stop()
    return 0


# =========================================================================== sources


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "0s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode
_decode_any = msgspec.json.Decoder().decode


def _lookup(table: dict[bytes | None, bytes | None], name: str) -> bytes | None:
    for key in (name.encode(), json.dumps(name).encode()):
        if key in table:
            return table[key]
    return None


def health_status(value: bytes | None, source: SourceConfig, now: datetime) -> str | None:
    """The ``status`` of a health-changelog value, read leniently (the format may grow)."""
    if value is None:
        return None
    try:
        data = _decode_any(value)
    except msgspec.DecodeError:
        return None
    if isinstance(data, dict):
        for key in ("status", "state", "health"):
            if isinstance(data.get(key), str):
                return str(data[key])
    try:
        from streamapp.core import health

        state = health.decode_state(value)
        return str(
            health.health_summary(state, now=now, health_check=source.health_check)["status"]
        )
    except Exception:
        return None


def source_rows(
    checkpoints: dict[bytes | None, bytes | None],
    health: dict[bytes | None, bytes | None] | None,
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    rows = []
    for source in settings.sources:
        checkpoint: Checkpoint | None = None
        raw = _lookup(checkpoints, source.name)
        if raw is not None:
            try:
                checkpoint = _decode_checkpoint(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                checkpoint = None
        status = health_status(_lookup(health, source.name), source, now) if health else None
        rows.append(
            {
                "name": source.name,
                "api_host": urlsplit(source.api_url).netloc,
                "poll_interval_seconds": source.poll_interval.total_seconds(),
                "checkpoint": rfc3339(checkpoint.until) if checkpoint else None,
                "lag_seconds": round((now - checkpoint.until).total_seconds(), 3)
                if checkpoint
                else None,
                "last_record_at": rfc3339(checkpoint.last_record_at)
                if checkpoint and checkpoint.last_record_at
                else None,
                "records": checkpoint.records if checkpoint else None,
                "health": status,
            }
        )
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    header = ["NAME", "API HOST", "POLL", "CHECKPOINT", "LAG", "LAST RECORD", "HEALTH"]
    lines = [header]
    for row in rows:
        lag = row["lag_seconds"]
        lines.append(
            [
                row["name"],
                row["api_host"],
                format_duration(timedelta(seconds=row["poll_interval_seconds"])),
                row["checkpoint"] or "-",
                _age(timedelta(seconds=lag)) if lag is not None else "-",
                row["last_record_at"] or "-",
                row["health"] or "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


@app.command(
    option("--json", "as_json", is_flag=True, default=False, help="Machine-readable output."),
    base=StreamappCommand,
)
async def sources(self: StreamappCommand, as_json: bool) -> int:
    """The configured sources with their checkpoint, lag, last record and health."""
    if not settings.sources:
        raise ConfigError(
            "no PagerDuty source configured: set PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE"
        )
    cluster = _cluster()
    checkpoints = await cluster.read_latest(runtime.names.progress)
    health = await cluster.read_latest(runtime.names.health)
    rows = source_rows(checkpoints or {}, health, now=datetime.now(UTC))
    if as_json or self.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
    return 0


# =========================================================================== wrappers


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
    try:
        from streamapp.pagerduty import verify as verifier
    except ImportError:
        raise CommandFailed("verify is not available in this version", status=2) from None
    argv: list[str] = []
    if source_name is not None:
        argv += ["--source", source_name]
    if probe_timeout is not None:
        argv += ["--timeout", str(probe_timeout)]
    # verify runs its own event loop: give it a thread of its own
    status = await asyncio.to_thread(verifier.main, argv)
    return int(status or 0)

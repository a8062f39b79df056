"""``sources``: each configured source with its checkpoint, lag, last record and health."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import msgspec

from streamapp.cli.common import NO_SOURCE
from streamapp.config import SourceConfig
from streamapp.core.durations import format_duration
from streamapp.core.errors import ConfigError
from streamapp.core.models import Checkpoint, rfc3339
from streamapp.kafka.clients import Cluster

_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode
_decode_any = msgspec.json.Decoder().decode


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
    sources: Sequence[SourceConfig],
    checkpoints: dict[bytes | None, bytes | None],
    health: dict[bytes | None, bytes | None] | None,
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    rows = []
    for source in sources:
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


async def run_sources(
    sources: Sequence[SourceConfig],
    cluster: Cluster,
    *,
    progress_topic: str,
    health_topic: str,
    as_json: bool,
) -> int:
    if not sources:
        raise ConfigError(NO_SOURCE)
    checkpoints = await cluster.read_latest(progress_topic)
    health = await cluster.read_latest(health_topic)
    rows = source_rows(sources, checkpoints or {}, health, now=datetime.now(UTC))
    print(json.dumps(rows, indent=2) if as_json else render_table(rows))
    return 0

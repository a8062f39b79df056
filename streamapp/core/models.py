"""msgspec models: typed *views* of PagerDuty audit records and the raw-topic envelope.

A view decodes only the fields a step uses and ignores the rest; the record's own bytes
travel untouched as ``msgspec.Raw`` so nothing PagerDuty sends is ever lost or rewritten.
Never ``forbid_unknown_fields`` here: PagerDuty adds fields over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec

#: a datetime field, encoded as RFC 3339, whose JSON Schema says so
DateTime = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class Reference(msgspec.Struct, kw_only=True, frozen=True):
    id: str | None = None
    type: str | None = None
    summary: str | None = None
    self_url: str | None = msgspec.field(default=None, name="self")
    html_url: str | None = None
    # some actor references carry more (e.g. an app's name); kept in ``raw``


class Method(msgspec.Struct, kw_only=True, frozen=True):
    type: str
    truncated_token: str | None = None
    description: str | None = None


class ExecutionContext(msgspec.Struct, kw_only=True, frozen=True):
    request_id: str | None = None
    remote_address: str | None = None


class FieldChange(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    description: str | None = None
    # Raw | None would mean "null only" to msgspec; UNSET tells absent from null
    value: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    before_value: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class ReferenceChange(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    description: str | None = None
    added: list[Reference] | None = None
    removed: list[Reference] | None = None


class Details(msgspec.Struct, kw_only=True, frozen=True):
    resource: Reference
    fields: list[FieldChange] | None = None
    references: list[ReferenceChange] | None = None


class AuditRecordView(msgspec.Struct, kw_only=True, frozen=True):
    """Every field the pipeline reads; required ones are those the API documents as required."""

    id: str
    execution_time: datetime
    method: Method
    root_resource: Reference
    action: str
    actors: list[Reference] | None = None
    execution_context: ExecutionContext | None = None
    details: Details | None = None


class RecordKey(msgspec.Struct, kw_only=True, frozen=True):
    """The least the collector needs of a record: its id and time."""

    id: str
    execution_time: datetime


class AuditPage(msgspec.Struct, kw_only=True, frozen=True):
    """One ``GET /audit/records`` response; records stay as raw bytes."""

    records: list[msgspec.Raw]
    limit: int | None = None
    next_cursor: str | None = None


class PolledRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A record as the client hands it out: the exact bytes beside its id and time."""

    id: str
    execution_time: datetime
    raw: msgspec.Raw


class Rejected(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Why the poller could not pass a record on as it is (it goes to the dead-letter topic).

    ``original`` holds the record's bytes (UTF-8 text, or base64 when not UTF-8) when they
    fit in a message; otherwise it is empty and ``original_encoding`` is ``"omitted"``; the
    size and SHA-256 always identify them.
    """

    reason: str
    original: str = ""
    original_encoding: str = "utf-8"
    original_size: int = 0
    original_sha256: str = ""
    record_id: str | None = None


class Malformed(msgspec.Struct, kw_only=True, frozen=True):
    """A record of a page that cannot be keyed: its exact bytes and why (one line)."""

    raw: bytes
    reason: str
    #: the record's ``id`` when one could be read (the dead letter is keyed by it)
    id: str | None = None


class Page(msgspec.Struct, kw_only=True, frozen=True):
    records: list[PolledRecord]
    malformed: list[Malformed]
    #: None on the last page
    next_cursor: str | None
    #: the page size PagerDuty says it used (information only)
    limit: int | None
    status: int
    #: HTTP requests this page took, retries included
    request_count: int


class RawEnvelope(msgspec.Struct, kw_only=True, frozen=True):
    """The value on ``pagerduty_audit_logs_raw``: the record as sent, plus where it came from.

    A record the poller could not pass on (malformed, too deep, too large) travels as an
    envelope with ``record`` null and ``rejected`` saying why, keyed ``dlq:<id>``: the
    pipeline dead-letters it once per id, as it emits every record once.
    """

    source_name: str
    source_type: str = "pagerduty"
    polled_at: DateTime
    record: msgspec.Raw
    #: absent (not null) on every record the poller passed on as it is
    rejected: Rejected | msgspec.UnsetType = msgspec.UNSET


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a ``Z``: ``2026-11-26T06:28:03.120Z``."""
    moment = as_utc(moment)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class Checkpoint(msgspec.Struct, kw_only=True, frozen=True):
    """A source's progress: every record before ``until`` has been acknowledged by the broker."""

    until: datetime
    updated_at: datetime
    #: records sent in the acknowledged windows so far (duplicates of the overlap included)
    records: int = 0
    #: the newest execution_time seen, for lag and health reporting
    last_record_at: datetime | None = None


class WindowDone(msgspec.Struct, kw_only=True, frozen=True):
    """A backfill window whose every record the broker acknowledged (a progress entry)."""

    source_name: str
    since: datetime
    until: datetime
    records: int = 0
    pages: int = 0
    malformed: int = 0
    done_at: datetime
    #: the backfill range the window belonged to (information only)
    backfill_since: datetime | None = None
    backfill_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to write: topic, key, value and Kafka headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None

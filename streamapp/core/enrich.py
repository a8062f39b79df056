"""Enrichment: the bytes of one PagerDuty audit record → one output document.

Strict where the contract needs a value, lenient everywhere else:

- the fields the API documents as required (``id``, ``execution_time``, ``method.type``,
  ``root_resource`` with its ``id`` and ``type``, ``action``) must be there with the right
  type, else :class:`InvalidRecord` (the caller dead-letters the bytes with its reason);
- an optional section that PagerDuty shaped differently from its documentation
  (``actors``, ``execution_context``, ``details``) is left out of the enrichment with a
  line in ``warnings``; a string leaf of another type becomes null. Nothing is lost either
  way: ``raw`` carries the record byte for byte (unknown fields, whitespace inside it and
  escapes as sent; only whitespace around the whole value, not part of it, is dropped).

:func:`enrich` raises nothing but :class:`InvalidRecord`, whatever the input.

``streamapp.core.models.AuditRecordView`` is not used here: it declares field values as
``msgspec.Raw | None``, and msgspec reads that union as "null only", so it rejects every
record whose ``details.fields`` carry a value. The views below use ``Raw | UnsetType``,
which also tells "absent" from ``null``.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec

from streamapp.core.categories import categorize
from streamapp.core.errors import StreamappError
from streamapp.core.models import as_utc
from streamapp.core.output import Actor, Change, OutputDocument, ReferenceChange, ResourceRef

__all__ = ["InvalidRecord", "decode_document", "encode_document", "enrich", "timestamp"]


class InvalidRecord(StreamappError):
    """The bytes are not an audit record we can publish; ``reason`` is one line naming why."""

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(reason.split())[:500]
        super().__init__(self.reason)


NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
#: how far ahead of processing a record's time may be before it is flagged (clock skew)
FUTURE_TOLERANCE = timedelta(minutes=5)
_ABSENT = msgspec.UNSET


# --- views: what we read of a record ---------------------------------------------------


class _Method(msgspec.Struct, kw_only=True, frozen=True):
    type: str
    truncated_token: Any = None
    description: Any = None


class _RootRef(msgspec.Struct, kw_only=True, frozen=True):
    id: NonEmpty
    type: NonEmpty
    summary: Any = None
    html_url: Any = None


class _Record(msgspec.Struct, kw_only=True, frozen=True):
    id: NonEmpty
    execution_time: datetime
    method: _Method
    root_resource: _RootRef
    action: NonEmpty
    # optional sections: read one by one so that one odd section spoils only itself
    actors: msgspec.Raw | msgspec.UnsetType = _ABSENT
    execution_context: msgspec.Raw | msgspec.UnsetType = _ABSENT
    details: msgspec.Raw | msgspec.UnsetType = _ABSENT


class _Ref(msgspec.Struct, kw_only=True, frozen=True):
    id: Any = None
    type: Any = None
    summary: Any = None
    html_url: Any = None


class _Context(msgspec.Struct, kw_only=True, frozen=True):
    request_id: Any = None
    remote_address: Any = None


class _Field(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    description: Any = None
    value: msgspec.Raw | msgspec.UnsetType = _ABSENT
    before_value: msgspec.Raw | msgspec.UnsetType = _ABSENT


class _RefList(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    description: Any = None
    added: list[_Ref] | None = None
    removed: list[_Ref] | None = None


class _Details(msgspec.Struct, kw_only=True, frozen=True):
    resource: _Ref | None = None
    fields: list[_Field] | None = None
    references: list[_RefList] | None = None


class _Whole(msgspec.Struct, kw_only=True, frozen=True):
    """A record whose every section has the shape we read: decoded at once."""

    id: NonEmpty
    execution_time: datetime
    method: _Method
    root_resource: _RootRef
    action: NonEmpty
    actors: list[_Ref] | None = None
    execution_context: _Context | None = None
    details: _Details | None = None


_RECORD = msgspec.json.Decoder(_Record)
_ACTORS = msgspec.json.Decoder(list[msgspec.Raw] | None)
_ACTOR = msgspec.json.Decoder(_Ref)
_WHOLE = msgspec.json.Decoder(_Whole)
_CONTEXT = msgspec.json.Decoder(_Context | None)
_DETAILS = msgspec.json.Decoder(_Details | None)

_ENCODER = msgspec.json.Encoder()
_DOCUMENT = msgspec.json.Decoder(OutputDocument)

#: what msgspec raises on bad input (ValueError covers UnicodeDecodeError)
_READ_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError)


# --- small helpers ---------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _kind(value: Any) -> str | None:
    """A reference's type without ``_reference``."""
    return value.removesuffix("_reference") if isinstance(value, str) else None


def _ref(ref: _Ref | _RootRef) -> ResourceRef:
    return ResourceRef(
        id=_text(ref.id), type=_kind(ref.type), name=_text(ref.summary), url=_text(ref.html_url)
    )


def timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z``: milliseconds, or microseconds when the sub-millisecond
    part is not zero (PagerDuty documents milliseconds but sends microseconds too, and
    rounding them off would reorder records of one request). Same text as
    ``models.rfc3339`` for millisecond values; years below 1000 keep four digits."""
    if moment.tzinfo is not UTC:
        moment = as_utc(moment)
    # C's isoformat (four-digit years, "+00:00" for UTC), twice as fast as formatting by hand
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec)[:-6] + "Z"


@functools.lru_cache(maxsize=8)
def _processed_at(moment: datetime) -> tuple[str, datetime]:
    """``ingested_at`` as text and in UTC: one value for a whole batch, computed once."""
    return timestamp(moment), as_utc(moment)


def _section(decoder: msgspec.json.Decoder[Any], raw: Any, name: str, warnings: list[str]) -> Any:
    """Decode an optional section; on a shape we cannot read, note it and go without."""
    if raw is _ABSENT:
        return None
    try:
        return decoder.decode(raw)
    except _READ_ERRORS as exc:
        warnings.append(f"{name} ignored: " + str(exc).replace("`$", f"`$.{name}"))
        return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "invalid audit record: JSON nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "invalid audit record: not UTF-8"
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid audit record: {exc}"
    return f"invalid audit record: not JSON: {exc}"


# --- the step --------------------------------------------------------------------------


def enrich(
    record: bytes,
    *,
    source_name: str,
    source_type: str = "pagerduty",
    ingested_at: datetime,
) -> OutputDocument:
    """The output document for one audit record's bytes, or :class:`InvalidRecord`."""
    data, view = _read(record)
    try:
        event_time = timestamp(view.execution_time)
    except (OverflowError, ValueError):
        raise InvalidRecord(
            "invalid audit record: execution_time is outside the representable range"
        ) from None
    resource_type = _kind(view.root_resource.type) or ""
    if not resource_type:
        raise InvalidRecord("invalid audit record: root_resource.type names no type")

    warnings: list[str] = []
    processed_text, processed_utc = _processed_at(ingested_at)
    ahead = as_utc(view.execution_time) - processed_utc
    if ahead > FUTURE_TOLERANCE:
        warnings.append(
            f"execution_time is {int(ahead.total_seconds())} s after the time it was processed"
            " (a clock or data error upstream); source health counts it as processed now"
        )
    actors, context, details = _sections(view, warnings)

    root = _ref(view.root_resource)
    fields = (details.fields if details else None) or []
    ref_lists = (details.references if details else None) or []
    changes = [
        Change(
            field=f.name,
            description=_text(f.description),
            before=f.before_value,
            after=f.value,
        )
        for f in fields
    ]
    added = [_ref_change(lst.name, r) for lst in ref_lists for r in lst.added or ()]
    removed = [_ref_change(lst.name, r) for lst in ref_lists for r in lst.removed or ()]
    changed_names = [f.name for f in fields] + [lst.name for lst in ref_lists]

    return OutputDocument(
        id=view.id,
        source_type=source_type,
        source_name=source_name,
        event_time=event_time,
        event_name=f"{resource_type}.{view.action}",
        action=view.action,
        resource_type=resource_type,
        category=categorize(resource_type, view.action, changed_names),
        ingested_at=processed_text,
        actor=actors[0] if actors else None,
        actors=actors,
        auth_method=view.method.type,
        auth_description=_text(view.method.description),
        truncated_token=_text(view.method.truncated_token),
        src_ip=_text(context.remote_address) if context else None,
        request_id=_text(context.request_id) if context else None,
        resource=_ref(details.resource) if details and details.resource else root,
        root_resource=root,
        changes=changes,
        references_added=added,
        references_removed=removed,
        warnings=warnings,
        # the value's bytes; whitespace around it is not part of the record
        raw=msgspec.Raw(data.strip(b" \t\r\n")),
    )


def _read(record: bytes) -> tuple[bytes, _Whole | _Record]:
    """The record's bytes and its view: whole when every section has the shape we read (one
    decode), else the required fields with the sections still raw. InvalidRecord if not."""
    if isinstance(record, bytes | bytearray | memoryview):
        data = bytes(record)
    else:
        raise InvalidRecord(f"invalid audit record: expected bytes, got {type(record).__name__}")
    try:
        # msgspec checks UTF-8 only in strings it decodes; raw must be valid UTF-8 throughout
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecord(_why(exc)) from None
    try:
        return data, _WHOLE.decode(data)
    except _READ_ERRORS:
        pass  # an odd section: read section by section below
    try:
        return data, _RECORD.decode(data)
    except _READ_ERRORS as exc:
        raise InvalidRecord(_why(exc)) from None


def _sections(
    view: _Whole | _Record, warnings: list[str]
) -> tuple[list[Actor], _Context | None, _Details | None]:
    """Actors, execution context and details; a section of a shape we cannot read is noted
    in ``warnings`` and left out (one odd actor spoils only itself)."""
    if isinstance(view, _Whole):
        return [_actor(ref) for ref in view.actors or ()], view.execution_context, view.details
    return (
        _actors(view.actors, warnings),
        _section(_CONTEXT, view.execution_context, "execution_context", warnings),
        _section(_DETAILS, view.details, "details", warnings),
    )


def _actor(ref: _Ref) -> Actor:
    return Actor(id=_text(ref.id), type=_kind(ref.type), name=_text(ref.summary))


def _actors(raw: Any, warnings: list[str]) -> list[Actor]:
    items: list[msgspec.Raw] | None = _section(_ACTORS, raw, "actors", warnings)
    actors = []
    for index, item in enumerate(items or ()):
        ref: _Ref | None = _section(_ACTOR, item, f"actors[{index}]", warnings)
        if ref is not None:
            actors.append(_actor(ref))
    return actors


def _ref_change(list_name: str, ref: _Ref) -> ReferenceChange:
    return ReferenceChange(
        field=list_name, id=_text(ref.id), type=_kind(ref.type), name=_text(ref.summary)
    )


def encode_document(doc: OutputDocument) -> bytes:
    """The UTF-8 JSON value published on ``pagerduty_audit_logs``."""
    return _ENCODER.encode(doc)


def decode_document(data: bytes) -> OutputDocument:
    """Read an output document back (consumers, tests)."""
    return _DOCUMENT.decode(data)

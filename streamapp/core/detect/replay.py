"""``rules test FILE``: what the rules would find in a file of records, for a person.

:func:`replay` reads PagerDuty audit records or output documents (a JSON array, JSON lines,
one JSON object, or an ``/audit/records`` response page), enriches the records, runs them
through a :class:`~streamapp.core.detect.engine.Detector` with an in-memory state in
execution order, and returns the findings; :func:`render_findings` turns them into lines.
No broker, nothing written, and the clock is read only when no ``ingested_at`` is given
(enrichment stamps documents with it and flags records from its future; it never changes a
finding).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from streamapp.core.detect.engine import Detector
from streamapp.core.detect.finding import SEVERITIES, Finding
from streamapp.core.detect.rules import RuleSet
from streamapp.core.enrich import InvalidRecord, decode_document, enrich
from streamapp.core.errors import StreamappError
from streamapp.core.output import OutputDocument

__all__ = [
    "ReplayInputError",
    "read_records",
    "render_findings",
    "replay",
    "replay_documents",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_RAW_LIST: Final = msgspec.json.Decoder(list[msgspec.Raw])
_RAW: Final = msgspec.json.Decoder(msgspec.Raw)
_ANY: Final = msgspec.json.Decoder()


class _Page(msgspec.Struct, frozen=True):
    records: list[msgspec.Raw]


_PAGE: Final = msgspec.json.Decoder(_Page)
_SHOWN_IDS: Final = 5
#: what msgspec raises on input it cannot read (deep nesting and bad UTF-8 included)
_UNREADABLE: Final = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    RecursionError,
    UnicodeDecodeError,
)


class ReplayInputError(StreamappError):
    """The file is not records we can read; the message names the file and the line or item."""


def read_records(
    data: bytes,
    *,
    origin: str | Path = "<records>",
    source_name: str = "pagerduty",
    ingested_at: datetime | None = None,
) -> list[OutputDocument]:
    """The output documents of ``data``: each item an audit record (enriched, as from
    source ``source_name`` at ``ingested_at``, default now) or an output document (taken as
    it is), in file order."""
    now = ingested_at if ingested_at is not None else datetime.now(UTC)
    return [_document(item, where, source_name, now) for where, item in _items(data, origin)]


def replay_documents(documents: Iterable[OutputDocument], detector: Detector) -> list[Finding]:
    """The findings of ``documents`` run in execution order (ties by id) with fresh state."""
    state: dict[bytes, bytes | None] = {}
    findings: list[Finding] = []
    for doc in sorted(documents, key=_execution_order):
        found, updates = detector.evaluate(doc, state.get)
        state.update(updates)
        findings.extend(found)
    return findings


def replay(
    data: bytes,
    *,
    rules: RuleSet | None = None,
    source_name: str = "pagerduty",
    origin: str | Path = "<records>",
    ingested_at: datetime | None = None,
) -> list[Finding]:
    """:func:`read_records` then :func:`replay_documents` with ``rules`` (None: built-in)."""
    documents = read_records(data, origin=origin, source_name=source_name, ingested_at=ingested_at)
    return replay_documents(documents, Detector(rules))


def render_findings(findings: Sequence[Finding], *, records: int | None = None) -> list[str]:
    """Lines a person reads: per finding its time, severity, rule and technique, the summary,
    and the records; then one line of totals (``records``: how many were read)."""
    lines = []
    for finding in findings:
        technique = "" if isinstance(finding.attack, msgspec.UnsetType) else finding.attack.id
        head = f"{finding.at}  {finding.severity.upper():<8}  {finding.rule_id}"
        lines.append(f"{head}  {technique}".rstrip() + f"  ({finding.source_name})")
        lines.append(f"    {finding.summary}")
        shown = ", ".join(finding.record_ids[:_SHOWN_IDS])
        if len(finding.record_ids) > _SHOWN_IDS:
            shown += f" and {len(finding.record_ids) - _SHOWN_IDS} more"
        lines.append(f"    records: {shown}; finding id {finding.id}")
    read = f" in {records} record{'' if records == 1 else 's'}" if records is not None else ""
    if not findings:
        lines.append(f"no rule fired{read}")
        return lines
    counts = Counter(finding.severity for finding in findings)
    by_severity = ", ".join(
        f"{counts[severity]} {severity}" for severity in reversed(SEVERITIES) if counts[severity]
    )
    total = len(findings)
    lines.append(f"{total} finding{'' if total == 1 else 's'}{read}: {by_severity}")
    return lines


# --- reading ---------------------------------------------------------------------------


def _items(data: bytes, origin: str | Path) -> list[tuple[str, bytes]]:
    text = data.strip()
    if not text:
        return []
    if text.startswith(b"["):
        try:
            items = _RAW_LIST.decode(text)
        except _UNREADABLE as exc:
            raise ReplayInputError(f"{origin}: not a JSON array of records: {_why(exc)}") from None
        return [(f"{origin}: item {i}", bytes(item)) for i, item in enumerate(items, 1)]
    try:
        whole = bytes(_RAW.decode(text))  # one object, however it is laid out
        shape = _ANY.decode(whole)
    except _UNREADABLE:
        return _lines(data, origin)
    if isinstance(shape, dict) and "records" in shape and "execution_time" not in shape:
        try:
            records = _PAGE.decode(whole).records  # an /audit/records response page
        except _UNREADABLE as exc:
            raise ReplayInputError(f"{origin}: not a page of records: {_why(exc)}") from None
        return [(f"{origin}: records[{i}]", bytes(r)) for i, r in enumerate(records)]
    return [(f"{origin}: line 1", whole)]


def _lines(data: bytes, origin: str | Path) -> list[tuple[str, bytes]]:
    items = []
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            items.append((f"{origin}: line {number}", line.strip()))
    return items


def _document(item: bytes, where: str, source_name: str, ingested_at: datetime) -> OutputDocument:
    try:
        shape: Any = _ANY.decode(item)
    except _UNREADABLE as exc:
        raise ReplayInputError(f"{where}: not JSON: {_why(exc)}") from None
    if isinstance(shape, dict) and {"event_name", "source_name", "raw"} <= shape.keys():
        try:
            return decode_document(item)
        except _UNREADABLE as exc:
            raise ReplayInputError(f"{where}: not an output document: {_why(exc)}") from None
    try:
        return enrich(item, source_name=source_name, ingested_at=ingested_at)
    except InvalidRecord as exc:
        raise ReplayInputError(f"{where}: {exc.reason}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "text that is not UTF-8"
    return " ".join(str(exc).split())


def _execution_order(doc: OutputDocument) -> tuple[datetime, str]:
    try:
        moment = datetime.fromisoformat(doc.event_time)
    except ValueError:
        moment = _EPOCH
    return moment, doc.id

"""Dead letters: what could not be processed, with the reason and the original bytes.

A dead letter is itself a Kafka message, so it is bounded like any other: when the
original would not fit in the room the topic gives, the letter keeps its size and SHA-256
instead (``original_encoding = "omitted"``), so it can still be matched with its source.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import msgspec

from streamapp.core.models import DateTime, Rejected

#: bytes a letter needs besides its original (reason, names, times, framing), generously
LETTER_OVERHEAD = 4096


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True):
    """A document on ``pagerduty_audit_logs_dlq``.

    ``original`` is the input as text when it is valid UTF-8, else base64 with
    ``original_encoding`` saying so; either way the exact bytes can be recovered. When the
    input was too large to carry, ``original`` is empty, ``original_encoding`` is
    ``"omitted"``, and ``original_size`` / ``original_sha256`` identify it.
    """

    reason: str
    stage: str
    source_name: str | None
    at: DateTime
    original: str
    original_encoding: str = "utf-8"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    #: the audit record's id, when it could be read
    record_id: str | None = None
    original_size: int | None = None
    original_sha256: str | None = None


def one_line(reason: str, limit: int = 1000) -> str:
    return " ".join(reason.split())[:limit]


def carried(original: bytes, room: int | None = None) -> tuple[str, str]:
    """``(text, encoding)`` of ``original`` for a letter: UTF-8 text, base64, or omitted
    when the text would take more than ``room`` bytes."""
    try:
        text, encoding = original.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(original).decode("ascii"), "base64"
    if room is not None and len(msgspec.json.encode(text)) > room:
        return "", "omitted"
    return text, encoding


def dead_letter(
    original: bytes,
    *,
    reason: str,
    stage: str,
    source_name: str | None,
    at: datetime,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    record_id: str | None = None,
    room: int | None = None,
    omitted: Rejected | None = None,
) -> DeadLetter:
    """A letter for ``original``; with ``room`` (bytes), one whose encoding fits in it.

    ``omitted``: the original is not at hand (the poller could not carry it); the letter
    takes its size and hash from that rejection instead.
    """
    if omitted is not None:
        text, encoding = "", "omitted"
        size, sha256 = omitted.original_size, omitted.original_sha256
    else:
        text, encoding = carried(original, None if room is None else room - LETTER_OVERHEAD)
        size, sha256 = len(original), hashlib.sha256(original).hexdigest()
    return DeadLetter(
        reason=one_line(reason),
        stage=stage,
        source_name=source_name,
        at=at,
        original=text,
        original_encoding=encoding,
        topic=topic,
        partition=partition,
        offset=offset,
        record_id=record_id,
        original_size=size,
        original_sha256=sha256,
    )


def rejected(original: bytes, *, reason: str, record_id: str | None, room: int) -> Rejected:
    """What the poller says of a record it cannot pass on, bounded to ``room`` bytes."""
    text, encoding = carried(original, room - LETTER_OVERHEAD)
    return Rejected(
        reason=one_line(reason),
        original=text,
        original_encoding=encoding,
        original_size=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        record_id=record_id,
    )


def original_of(rejection: Rejected) -> bytes | None:
    """The rejected record's bytes, or None when they were omitted."""
    if rejection.original_encoding == "omitted":
        return None
    if rejection.original_encoding == "base64":
        return base64.b64decode(rejection.original)
    return rejection.original.encode("utf-8")


def original_bytes(letter: DeadLetter) -> bytes:
    if letter.original_encoding == "base64":
        return base64.b64decode(letter.original)
    if letter.original_encoding == "omitted":
        return b""
    return letter.original.encode("utf-8")

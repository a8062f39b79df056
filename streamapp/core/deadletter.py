"""Dead letters: what could not be processed, with the reason and the original bytes."""

from __future__ import annotations

import base64
from datetime import datetime

import msgspec


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True):
    """A document on ``pagerduty_audit_logs_dlq``.

    ``original`` is the input as text when it is valid UTF-8, else base64 with
    ``original_encoding`` saying so; either way the exact bytes can be recovered.
    """

    reason: str
    stage: str
    source_name: str | None
    at: datetime
    original: str
    original_encoding: str = "utf-8"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


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
) -> DeadLetter:
    try:
        text, encoding = original.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(original).decode("ascii"), "base64"
    return DeadLetter(
        reason=reason.replace("\n", " ")[:1000],
        stage=stage,
        source_name=source_name,
        at=at,
        original=text,
        original_encoding=encoding,
        topic=topic,
        partition=partition,
        offset=offset,
    )


def original_bytes(letter: DeadLetter) -> bytes:
    if letter.original_encoding == "base64":
        return base64.b64decode(letter.original)
    return letter.original.encode("utf-8")

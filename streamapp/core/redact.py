"""Secrets that cannot leak by accident.

A ``Secret`` prints as ``Secret('****')`` everywhere (repr, str, f-strings, tracebacks,
msgspec) and hands out its value only through ``reveal()``. ``Redactor`` scrubs known
secret values out of free text (log lines, error messages from libraries) as a second line
of defence.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

MASK = "****"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """A stable, non-reversible name for the secret (rate-limit buckets, logs)."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str:  # never pickled into a changelog or a message
        raise TypeError("a Secret cannot be serialized")


class Redactor:
    """Replaces every registered secret value in a text with ``****``."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *secrets: Secret | str | None) -> None:
        for secret in secrets:
            value = secret.reveal() if isinstance(secret, Secret) else secret
            # very short values would turn ordinary words into stars; they are not real secrets
            if value and len(value) >= 6:
                self._values.add(value)

    def scrub(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text

    def values(self) -> Iterable[str]:
        return tuple(self._values)


#: the process-wide redactor; config registers every secret it loads
REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs registered secrets from every record's final message."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self._redactor.scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            # formatted tracebacks are rendered later; scrub the exception text now
            exc = record.exc_info[1]
            text = self._redactor.scrub(str(exc))
            if text != str(exc):
                record.exc_text = f"{type(exc).__name__}: {text}"
                record.exc_info = None
        if scrubbed != message:
            record.msg = scrubbed
            record.args = None
        return True


def install_log_redaction(redactor: Redactor = REDACTOR) -> None:
    """Attach the redacting filter to every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))


#: longest piece of foreign text (an exception's or PagerDuty's message) put in a message
MAX_DETAIL = 300


def one_line(text: str, *, hide: Iterable[str] = ()) -> str:
    """``text`` on one line, shortened, with every value of ``hide`` replaced by ``****``."""
    for value in sorted((v for v in hide if v), key=len, reverse=True):
        text = text.replace(value, MASK)
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"

"""Delivery of health notifications to the channels of a source: webhook, Slack, PagerDuty.

Renderers are pure (a ``Notification`` in, a JSON-ready dict out); ``Deliverer`` posts one
and retries what may succeed later:

- 2xx: delivered;
- 429, 5xx, a timeout or no connection: retried with capped, fully jittered exponential
  backoff (``random() * min(max_delay, base_delay * 2 ** (attempt - 1))``; a 429's
  ``Retry-After`` is honoured, capped at ``max_delay``), ``attempts`` tries in all;
- any other status (4xx, 3xx: redirects are not followed): final at once.

Each request runs under a hard ``asyncio.timeout(timeout)`` on top of httpx's own timeouts
(which bound each read, not the whole request, so a trickling server could outlast them):
a hanging channel costs at most ``timeout * attempts`` plus the backoff sleeps.

A channel's URL is a secret (Slack and most webhook URLs embed a token) and so is a
PagerDuty routing key: ``deliver`` never raises, and neither its ``DeliveryResult.error``
nor its log lines hold the URL, its path or the routing key. They name the channel's kind
and configured name (``webhook 'ops' answered 500``); a receiver's error body is quoted
only after those values are masked.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec

from streamapp.config import Channel
from streamapp.core.health import Notification, encode_notification
from streamapp.core.models import as_utc, rfc3339
from streamapp.core.redact import REDACTOR, RedactingFilter, one_line

__all__ = [
    "COMPONENT",
    "Deliverer",
    "DeliveryResult",
    "dedup_key",
    "pagerduty_event",
    "slack_payload",
    "webhook_payload",
]

log = logging.getLogger(__name__)

#: the ``component`` of every PagerDuty event
COMPONENT: Final = "pagerduty-audit"
#: PagerDuty refuses a longer summary
MAX_SUMMARY: Final = 1024
_MAX_QUOTE: Final = 200
_EMOJI: Final = {
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":white_check_mark:",
}
_JSON_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}
#: loggers of the HTTP stack that write request URLs (httpx logs each one at INFO)
_HTTP_LOGGERS: Final = ("httpx", "httpcore")


def _guard_http_logs() -> None:
    """Scrub registered secrets from the HTTP stack's own log records (idempotent).

    A logger-level filter runs before every handler, so a channel URL that httpx logs is
    masked whatever handlers the application (or a test's caplog) attaches.
    """
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter(REDACTOR))


# --------------------------------------------------------------------------- renderers


def webhook_payload(n: Notification) -> dict[str, Any]:
    """The notification document itself (exactly what the ``notifications`` topic carries)."""
    document: dict[str, Any] = msgspec.json.decode(encode_notification(n))
    return document


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(n: Notification) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (fallback, notifications) and one section block."""
    emoji = _EMOJI.get(n.severity, ":grey_question:")
    message = _slack_escape(n.message)
    source = _slack_escape(n.source_name)
    headline = f"{emoji} *{n.kind}* on `{source}`"
    if n.resolves:
        headline += f" (resolves {n.resolves})"
    return {
        "text": f"{emoji} {message}",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{headline}\n{message}\n_{rfc3339(as_utc(n.at))}_",
                },
            }
        ],
    }


def dedup_key(source_name: str, kind: str) -> str:
    """One PagerDuty alert per source and problem kind."""
    return f"streamapp/{source_name}/{kind}"


def pagerduty_event(n: Notification, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger for a problem, resolve for ``source_recovered``."""
    if n.kind == "source_recovered":
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key(n.source_name, n.resolves or n.kind),
        }
    custom: dict[str, Any] = {"message": n.message, "at": rfc3339(as_utc(n.at))}
    if n.error_kind is not None:
        custom["error_kind"] = n.error_kind
    if n.http_status is not None:
        custom["http_status"] = n.http_status
    custom.update(n.details)
    summary = n.message if len(n.message) <= MAX_SUMMARY else n.message[: MAX_SUMMARY - 1] + "…"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(n.source_name, n.kind),
        "payload": {
            "summary": summary,
            "source": f"streamapp:{n.source_name}",
            "severity": n.severity,
            "timestamp": rfc3339(as_utc(n.at)),
            "component": COMPONENT,
            "group": n.source_name,
            "class": n.kind,
            "custom_details": custom,
        },
    }


# --------------------------------------------------------------------------- delivery


class DeliveryResult(msgspec.Struct, kw_only=True, frozen=True):
    ok: bool
    #: requests sent (0 when the channel could not be addressed at all)
    attempts: int
    #: the last HTTP status received, None when no answer came
    status: int | None = None
    #: one line naming the channel by kind and name; never its URL or routing key
    error: str | None = None


def _secrets_of(channel: Channel) -> list[str]:
    """The channel's URL, its path and its routing key: never in a message or a log line."""
    hidden: list[str] = []
    for secret in (channel.url, channel.routing_key):
        if secret is None:
            continue
        value = secret.reveal()
        hidden.append(value)
        path = urlsplit(value).path if "://" in value else ""
        if len(path) > 1:
            hidden.append(path)
    return hidden


def _path_parts(hidden: Iterable[str]) -> list[str]:
    """Longer path segments too (a Slack token alone), hidden in quotes of error bodies."""
    parts: list[str] = []
    for value in hidden:
        if value.startswith("/"):
            parts.extend(part for part in value.split("/") if len(part) >= 6)
    return parts


def _quote(body: bytes, hide: Iterable[str]) -> str:
    """A short, masked excerpt of a receiver's error body (`` (says: ...)``) or ``""``."""
    text = body[:2000].decode("utf-8", errors="replace")
    text = one_line(REDACTOR.scrub(text), hide=hide)
    if not text:
        return ""
    if len(text) > _MAX_QUOTE:
        text = text[: _MAX_QUOTE - 1] + "…"
    return f" (says: {text})"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((as_utc(when) - datetime.now(UTC)).total_seconds(), 0.0)


@dataclass(eq=False, repr=False)
class Deliverer:
    """Posts notifications to channels; counts what was sent and what failed, per channel."""

    http: httpx.AsyncClient
    _: KW_ONLY
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float = 10.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = _random.random
    #: notifications delivered, per channel name
    sent: Counter[str] = field(default_factory=Counter, init=False)
    #: notifications given up on, per channel name
    failed: Counter[str] = field(default_factory=Counter, init=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        _guard_http_logs()

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        return ceiling * self.random()

    async def deliver(self, channel: Channel, n: Notification) -> DeliveryResult:
        """Deliver ``n`` to ``channel``; never raises."""
        try:
            result = await self._deliver(channel, n)
        except Exception as exc:  # a bug must not take the watchdog down, nor leak a URL
            result = DeliveryResult(
                ok=False,
                attempts=0,
                error=f"{channel.kind} {channel.name!r} failed ({type(exc).__name__})",
            )
        if result.ok:
            self.sent[channel.name] += 1
        else:
            self.failed[channel.name] += 1
            log.warning(
                "notification %s of source %r not delivered: %s",
                n.kind,
                n.source_name,
                result.error,
            )
        return result

    async def _deliver(self, channel: Channel, n: Notification) -> DeliveryResult:
        what = f"{channel.kind} {channel.name!r}"
        target = self._target(channel, n)
        if target is None:
            missing = "routing_key" if channel.kind == "pagerduty" else "url"
            return DeliveryResult(ok=False, attempts=0, error=f"{what} has no {missing}")
        url, body = target
        hidden = _secrets_of(channel)
        # config registers them already; a Channel built elsewhere gets the same protection
        REDACTOR.add(*(value for value in hidden if len(value) >= 8))
        hide = [*hidden, *_path_parts(hidden)]
        payload = msgspec.json.encode(body)
        attempt = 0
        status: int | None
        while True:
            attempt += 1
            error: str
            wait: float | None = None
            status = None
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self.http.post(
                        url,
                        content=payload,
                        headers=_JSON_HEADERS,
                        timeout=self.timeout,
                        follow_redirects=False,
                    )
                    content = await response.aread()
            except (TimeoutError, httpx.TimeoutException):
                error = f"{what} did not answer within {self.timeout:g}s"
            except (httpx.RequestError, OSError) as exc:
                error = f"{what} unreachable ({type(exc).__name__})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return DeliveryResult(ok=True, attempts=attempt, status=status)
                error = f"{what} answered {status}{_quote(content, hide)}"
                if status == 429:
                    after = _retry_after(response)
                    wait = min(after, self.max_delay) if after is not None else None
                elif status < 500:
                    return DeliveryResult(ok=False, attempts=attempt, status=status, error=error)
            # scrubbed once more: a library's text must never carry the URL out
            error = one_line(error, hide=hide)
            if attempt >= self.attempts:
                return DeliveryResult(
                    ok=False,
                    attempts=attempt,
                    status=status,
                    error=f"{error}; gave up after {attempt} attempt(s)",
                )
            delay = wait if wait is not None else self._backoff(attempt)
            log.info(
                "%s; retrying in %.2fs (attempt %d of %d)", error, delay, attempt, self.attempts
            )
            await self.sleep(delay)

    @staticmethod
    def _target(channel: Channel, n: Notification) -> tuple[str, dict[str, Any]] | None:
        if channel.kind == "pagerduty":
            if not channel.routing_key:
                return None
            return channel.events_url, pagerduty_event(n, channel.routing_key.reveal())
        if not channel.url:
            return None
        body = slack_payload(n) if channel.kind == "slack" else webhook_payload(n)
        return channel.url.reveal(), body

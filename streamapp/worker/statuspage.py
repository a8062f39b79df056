"""The status page at ``/``: server-side HTML for people, built from a plain model.

Pure: no faust, no clock of its own (ages are measured from the model's ``generated_at``),
no I/O. The worker's views do the rest:

``GET /``
    ``render_page(model, csrf_token=token)`` with ``PAGE_HEADERS``. ``model`` is a
    ``PageModel`` or a dict of the same shape (converted and checked with msgspec).
``POST VERIFY_PATH`` and ``POST TEST_NOTIFICATION_PATH``
    ``check_action(method, headers, host, token)`` first: a reason means answer 403 with
    ``{"ok": false, "message": reason}``. Else the body is an ``ActionRequest``
    (``decode_action_request``) and the answer an ``ActionAnswer``: its ``message`` is the
    one-line verdict (verify) or a summary, ``results`` one line per channel (test
    notification).

Guarding the actions (each POST costs a PagerDuty request or sends a notification):
a cross-site page cannot make them because they need the ``X-Streamapp-CSRF`` header with
the worker's token (a custom header makes a cross-origin ``fetch`` preflighted, which the
worker never approves, and a form cannot send it), a JSON body, and no evidence of another
origin (``Origin``, ``Sec-Fetch-Site``). The token is random per worker process
(``new_csrf_token``) and reaches only pages of this origin. ``PAGE_HEADERS`` forbids framing
(so the buttons cannot be clickjacked) and allows only this module's own script and style.

Nothing on the page is a secret: names, states, times, counts and messages that the
health rules already build without one; free text is passed through ``REDACTOR`` anyway,
and everything is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any, Final

import msgspec

from streamapp.core.health import SourceHealth
from streamapp.core.redact import REDACTOR

__all__ = [
    "CSRF_HEADER",
    "PAGE_HEADERS",
    "REFRESH_SECONDS",
    "TEST_NOTIFICATION_PATH",
    "VERIFY_PATH",
    "WINDOW_MINUTES",
    "ActionAnswer",
    "ActionRequest",
    "ChannelResult",
    "LastError",
    "MinuteCounter",
    "NotificationLine",
    "PageModel",
    "Pipeline",
    "SourceView",
    "WorkerView",
    "check_action",
    "decode_action_request",
    "new_csrf_token",
    "records_per_minute",
    "render_page",
    "status_since",
]

CSRF_HEADER: Final = "X-Streamapp-CSRF"
VERIFY_PATH: Final = "/actions/verify"
TEST_NOTIFICATION_PATH: Final = "/actions/test-notification"
#: the page reloads itself this often (a result on screen holds the reload for two minutes)
REFRESH_SECONDS: Final = 20
#: the chart's span: one bar per minute
WINDOW_MINUTES: Final = 60
#: notifications listed per source, newest first
MAX_NOTIFICATIONS: Final = 5
#: longest free text shown (the whole text stays in the tooltip)
MAX_TEXT: Final = 400


# --------------------------------------------------------------------------- the model


class Pipeline(msgspec.Struct, kw_only=True, frozen=True):
    #: ``ok`` or ``stalled``
    status: str
    message: str | None = None


class WorkerView(msgspec.Struct, kw_only=True, frozen=True):
    leader: bool
    ready: bool
    pipeline: Pipeline


class LastError(msgspec.Struct, kw_only=True, frozen=True):
    #: the error kind (``unauthorized``, ``timeout``, ``rate_limited`` …)
    kind: str
    message: str
    at: datetime | None = None


class NotificationLine(msgspec.Struct, kw_only=True, frozen=True):
    #: ``source_error``, ``source_degraded``, ``source_stale``, ``source_recovered``
    kind: str
    message: str
    at: datetime


class SourceView(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    #: ``ok``, ``stale``, ``degraded``, ``error`` or ``stalled``; anything else shows as is
    status: str
    #: when the source entered ``status`` (``status_since`` derives it from the health state)
    since: datetime | None = None
    last_record_at: datetime | None = None
    #: measured from ``generated_at`` when not given
    last_record_age_seconds: float | None = None
    checkpoint: datetime | None = None
    checkpoint_lag_seconds: float | None = None
    #: one count per minute, oldest first, the last the current minute (padded to 60)
    records_per_minute: list[int] = []
    last_error: LastError | None = None
    #: recent first or not: the page sorts them, newest first, and shows five
    notifications: list[NotificationLine] = []
    #: channel names only, never a URL or routing key
    channels: list[str] = []
    # additions to the first draft (all optional)
    #: consecutive failed polls (``health_summary``)
    consecutive_failures: int = 0
    #: the stale threshold (``health_summary``)
    health_check_seconds: float | None = None


class PageModel(msgspec.Struct, kw_only=True, frozen=True):
    generated_at: datetime
    worker: WorkerView
    sources: list[SourceView] = []


class ActionRequest(msgspec.Struct, kw_only=True, frozen=True):
    """The body the page's buttons POST."""

    source: str


class ChannelResult(msgspec.Struct, kw_only=True, frozen=True):
    channel: str
    ok: bool
    #: one line: ``delivered (HTTP 200)`` or the channel's error, never its URL
    message: str = ""


class ActionAnswer(msgspec.Struct, kw_only=True, frozen=True):
    """What an action answers; the page shows ``message`` and one line per result."""

    ok: bool
    #: the one-line verdict (``prod-us: ok``) or a summary of the test notification
    message: str
    source: str | None = None
    results: list[ChannelResult] = []


_decode_action_request = msgspec.json.Decoder(ActionRequest).decode


def decode_action_request(body: bytes | str) -> ActionRequest:
    """The action's JSON body; raises ``msgspec.DecodeError``/``ValidationError`` if not one."""
    return _decode_action_request(body)


def status_since(state: SourceHealth) -> datetime | None:
    """When the source entered the status ``health_summary`` reports for ``state``.

    The most severe active problem's raise time; when none is active, the last recovery, or
    when the source was first watched if it never had a problem.
    """
    for kind in ("source_error", "source_degraded", "source_stale"):
        if kind in state.active:
            return state.active_since.get(kind)
    if state.last_alert_kind == "source_recovered":
        return state.last_alert_at
    return state.watching_since


# --------------------------------------------------------------------------- records per minute


def _minute(epoch_seconds: float) -> int:
    return int(epoch_seconds // 60)


def records_per_minute(events: Iterable[tuple[float, int]], now: float) -> list[int]:
    """Counts per wall-clock minute for the last hour, oldest first, the current minute last.

    ``events`` are ``(epoch seconds, count)``; those older than the window or after ``now``
    are left out.
    """
    current = _minute(now)
    series = [0] * WINDOW_MINUTES
    for at, count in events:
        age = current - _minute(at)
        if 0 <= age < WINDOW_MINUTES:
            series[WINDOW_MINUTES - 1 - age] += count
    return series


class MinuteCounter:
    """Records per source per minute, in memory: at most ``WINDOW_MINUTES`` buckets a source.

    Fed by the worker as records are published (``add``); read by the page (``series``).
    Buckets older than an hour before the newest are dropped on every ``add``, so memory
    stays bounded however long the worker runs; a late ``add`` for a dropped minute is ignored.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, int]] = {}

    def add(self, source: str, n: int, now: float) -> None:
        if n < 0:
            raise ValueError(f"a record count cannot be negative: {n}")
        buckets = self._buckets.setdefault(source, {})
        minute = _minute(now)
        newest = max(minute, max(buckets, default=minute))
        oldest = newest - WINDOW_MINUTES + 1
        if minute < oldest or n == 0:
            return
        buckets[minute] = buckets.get(minute, 0) + n
        for old in [m for m in buckets if m < oldest]:
            del buckets[old]

    def series(self, source: str, now: float) -> list[int]:
        """The last hour's counts for ``source``, as ``records_per_minute`` gives them."""
        buckets = self._buckets.get(source, {})
        return records_per_minute(((m * 60.0, n) for m, n in buckets.items()), now)

    def buckets(self, source: str) -> int:
        """How many minutes are held for ``source`` (never more than ``WINDOW_MINUTES``)."""
        return len(self._buckets.get(source, {}))

    def sources(self) -> list[str]:
        return sorted(self._buckets)

    def forget(self, source: str) -> None:
        self._buckets.pop(source, None)


# --------------------------------------------------------------------------- guarding actions


def new_csrf_token() -> str:
    """A fresh random token for one worker process (put in the page, required on actions)."""
    return secrets.token_urlsafe(32)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup (aiohttp's headers are; a plain dict in a test is not)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, found in headers.items():
        if key.lower() == wanted:
            return found
    return None


def _shown(value: str) -> str:
    """A foreign value quoted in a reason: short, on one line, printable."""
    text = "".join(c if c.isprintable() else "?" for c in value[:80])
    return f"'{text}'" + ("…" if len(value) > 80 else "")


def check_action(method: str, headers: Mapping[str, str], host: str, csrf_token: str) -> str | None:
    """``None`` when an action request may run, else a one-line reason to refuse it (403).

    ``host`` is the request's ``Host`` (``127.0.0.1:6066``). Required: POST; the same origin
    (``Sec-Fetch-Site`` absent or ``same-origin``, ``Origin`` absent or ``http://<host>``);
    a JSON body; ``X-Streamapp-CSRF`` equal to ``csrf_token`` (compared in constant time).
    """
    if method.upper() != "POST":
        return f"actions need a POST, not {_shown(method)}"
    fetch_site = _header(headers, "Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() != "same-origin":
        return (
            f"refused a {_shown(fetch_site)} request (Sec-Fetch-Site): actions run only from"
            " this worker's own page"
        )
    origin = _header(headers, "Origin")
    expected = f"http://{host}".lower()
    if origin is not None and origin.lower() != expected:
        return f"refused a request from origin {_shown(origin)}: actions run only from {expected}"
    content_type = _header(headers, "Content-Type") or ""
    if content_type.split(";")[0].strip().lower() != "application/json":
        return "actions take a JSON body (Content-Type: application/json)"
    if not csrf_token:
        return "this worker has no CSRF token configured: actions are off"
    sent = _header(headers, CSRF_HEADER)
    if not sent:
        return f"the {CSRF_HEADER} header is missing: reload the status page and try again"
    if not hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), csrf_token.encode("utf-8", "surrogatepass")
    ):
        return (
            f"the {CSRF_HEADER} header does not match this worker's token: reload the status"
            " page and try again"
        )
    return None


# --------------------------------------------------------------------------- words


#: status → (css class, symbol, label); the symbol and label mean no one relies on colour
_STATUSES: Final[dict[str, tuple[str, str, str]]] = {
    "ok": ("ok", "✓", "OK"),
    "stale": ("stale", "◷", "Stale"),
    "degraded": ("degraded", "▲", "Degraded"),
    "error": ("error", "✕", "Error"),
    "stalled": ("stalled", "■", "Stalled"),
}
#: most severe first, for the page title and the summary line
_SEVERITY_ORDER: Final[tuple[str, ...]] = ("error", "stalled", "degraded", "stale", "ok")

_NOTIFICATION_KINDS: Final[dict[str, tuple[str, str]]] = {
    "source_error": ("error", "Error"),
    "source_degraded": ("degraded", "Degraded"),
    "source_stale": ("stale", "Stale"),
    "source_recovered": ("ok", "Recovered"),
}

#: error kind → what happened, in plain words (the message says the details)
_ERROR_WORDS: Final[dict[str, str]] = {
    "unauthorized": "PagerDuty refused the API token (401)",
    "plan_lacks_audit_trail": "The PagerDuty plan lacks Audit Trail (402)",
    "forbidden": "The API key lacks admin rights or the OAuth scope (403)",
    "bad_request": "PagerDuty refused the request (400)",
    "rate_limited": "PagerDuty rate-limited the requests (429)",
    "rate_limit_wait": "PagerDuty asked to wait longer than a poll can (429)",
    "server_error": "PagerDuty answered with a server error (5xx)",
    "unexpected_status": "PagerDuty gave an unexpected answer",
    "timeout": "PagerDuty did not answer in time",
    "unreachable": "PagerDuty's host could not be reached",
    "tls": "The TLS connection to PagerDuty failed",
    "transport": "The connection to PagerDuty failed",
    "protocol": "PagerDuty's answer could not be read",
    "bound_exceeded": "An answer went past one of the collector's bounds",
    "response_too_large": "An answer from PagerDuty was too large",
    "walk_too_long": "A window's page walk went on too long",
    "publish": "Kafka did not acknowledge the records",
    "internal": "The worker failed internally",
}


def _text(value: str) -> str:
    """Free text as shown: secrets scrubbed, on one line."""
    return " ".join(REDACTOR.scrub(value).split())


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _exact(moment: datetime, *, seconds: bool = True) -> str:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _seconds_between(later: datetime, earlier: datetime) -> float:
    if later.tzinfo is None:
        later = later.replace(tzinfo=UTC)
    if earlier.tzinfo is None:
        earlier = earlier.replace(tzinfo=UTC)
    return (later - earlier).total_seconds()


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2 h 5 min``, ``3 d 4 h``: two units at most, for people."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 5 else f"{_duration(seconds)} ago"


def _time_ago(moment: datetime, now: datetime, age: float | None = None) -> str:
    seconds = _seconds_between(now, moment) if age is None else age
    return (
        f'<time datetime="{_iso(moment)}" title="{_e(_exact(moment))}">{_e(_ago(seconds))}</time>'
    )


def _clip(text: str) -> str:
    """Escaped ``text``, shortened to MAX_TEXT characters with the whole text as a tooltip."""
    if len(text) <= MAX_TEXT:
        return _e(text)
    return f'<span title="{_e(text)}">{_e(text[: MAX_TEXT - 1])}…</span>'


def _status(status: str) -> tuple[str, str, str]:
    return _STATUSES.get(status, ("unknown", "?", status or "unknown"))


def _badge(status: str) -> str:
    css, symbol, label = _status(status)
    return f'<span class="badge {css}"><span aria-hidden="true">{symbol}</span> {_e(label)}</span>'


# --------------------------------------------------------------------------- pieces


def _chart(series: list[int], label_id: str) -> str:
    """An inline SVG bar chart of 60 minutes, with a text label for screen readers."""
    bars = ([0] * WINDOW_MINUTES + list(series))[-WINDOW_MINUTES:]
    total, peak = sum(bars), max(bars)
    width, gap, height = 6, 1, 48
    scale = (height - 2) / peak if peak else 0.0
    if total:
        label = (
            f"Records per minute over the last hour: {total:,} in total, peak {peak:,} a minute,"
            f" {bars[-1]:,} so far this minute"
        )
    else:
        label = "Records per minute over the last hour: none"
    rects = []
    for i, count in enumerate(bars):
        h = max(count * scale, 1.5) if count else 1.0
        minutes = WINDOW_MINUTES - 1 - i
        when = "this minute, so far" if minutes == 0 else f"{minutes} min ago"
        css = "bar zero" if not count else ("bar now" if minutes == 0 else "bar")
        rects.append(
            f'<rect class="{css}" x="{i * width}" y="{height - h:.1f}" width="{width - gap}"'
            f' height="{h:.1f}"><title>{count:,} records, {when}</title></rect>'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {WINDOW_MINUTES * width} {height}"'
        f' preserveAspectRatio="none" role="img" aria-labelledby="{label_id}">'
        f'<title id="{label_id}">{_e(label)}</title>{"".join(rects)}</svg>'
    )


def _last_error(source: SourceView, now: datetime) -> str:
    error = source.last_error
    if error is None:
        return '<p class="none">No error since the worker started watching.</p>'
    words = _ERROR_WORDS.get(error.kind, f"Failed ({error.kind})")
    when = f" · {_time_ago(error.at, now)}" if error.at is not None else ""
    resolved = source.status == "ok"
    state = ' · <span class="tag ok">Resolved</span>' if resolved else ""
    failures = ""
    if source.consecutive_failures > 1 and not resolved:
        failures = f" · {source.consecutive_failures} failed polls in a row"
    return (
        f'<div class="lasterror{" resolved" if resolved else ""}">'
        f'<p class="what"><strong>{_e(words)}</strong>'
        f'<span class="meta"> <code>{_e(error.kind)}</code>{when}{failures}{state}</span></p>'
        f'<p class="msg">{_clip(_text(error.message))}</p></div>'
    )


def _notifications(source: SourceView, now: datetime) -> str:
    if not source.notifications:
        return '<p class="none">None yet.</p>'
    newest = sorted(source.notifications, key=lambda n: _iso(n.at), reverse=True)
    items = []
    for n in newest[:MAX_NOTIFICATIONS]:
        css, label = _NOTIFICATION_KINDS.get(n.kind, ("unknown", n.kind))
        items.append(
            f'<li><span class="tag {css}">{_e(label)}</span>'
            f'<span class="note">{_clip(_text(n.message))}</span>'
            f'<span class="when">{_time_ago(n.at, now)}</span></li>'
        )
    more = len(source.notifications) - MAX_NOTIFICATIONS
    tail = f'<p class="none">and {more} older</p>' if more > 0 else ""
    return f'<ul class="notes">{"".join(items)}</ul>{tail}'


def _facts(source: SourceView, now: datetime) -> str:
    if source.last_record_at is not None:
        newest = _time_ago(source.last_record_at, now, source.last_record_age_seconds)
    else:
        newest = '<span class="none">none yet</span>'
    if source.checkpoint_lag_seconds is not None:
        lag = _e(_duration(source.checkpoint_lag_seconds))
        if source.checkpoint is not None:
            lag = f'<span title="checkpoint at {_e(_exact(source.checkpoint))}">{lag}</span>'
    elif source.checkpoint is not None:
        lag = _time_ago(source.checkpoint, now)
    else:
        lag = '<span class="none">no checkpoint yet</span>'
    if source.channels:
        channels = " ".join(f"<code>{_e(c)}</code>" for c in source.channels)
    else:
        channels = '<span class="none">none</span>'
    if source.status == "stale":
        newest = f'<strong class="late">{newest}</strong>'
    rows = [("Newest record", newest), ("Checkpoint lag", lag)]
    if source.health_check_seconds is not None:
        rows.append(("Stale after", _e(_duration(source.health_check_seconds))))
    rows.append(("Channels", channels))
    return "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)


def _source(source: SourceView, index: int, now: datetime) -> str:
    css = _status(source.status)[0]
    sid = f"source-{index}"
    since = ""
    if source.since is not None:
        for_how_long = _duration(_seconds_between(now, source.since))
        since = (
            f'<span class="since">for {_e(for_how_long)}, since <time'
            f' datetime="{_iso(source.since)}" title="{_e(_exact(source.since))}">'
            f"{_e(_exact(source.since, seconds=False))}</time></span>"
        )
    series = ([0] * WINDOW_MINUTES + list(source.records_per_minute))[-WINDOW_MINUTES:]
    total, peak = sum(series), max(series)
    stats = f"{total:,} in the last hour · peak {peak:,}/min" if total else "none in the last hour"
    name = _e(source.name)
    return f"""
<section class="source s-{css}" id="{sid}" aria-labelledby="{sid}-name">
<header class="head"><h2 id="{sid}-name">{name}</h2>{_badge(source.status)}{since}</header>
<div class="body">
<dl class="facts">{_facts(source, now)}</dl>
<figure class="rate"><figcaption>Records per minute <span class="muted">· {stats}</span>
</figcaption>{_chart(series, f"{sid}-chart")}
<div class="axis" aria-hidden="true"><span>60 min ago</span><span>now</span></div></figure>
</div>
<div class="cols">
<div class="col"><h3>Last error</h3>{_last_error(source, now)}</div>
<div class="col"><h3>Recent notifications</h3>{_notifications(source, now)}</div>
</div>
<div class="actions">
<button type="button" data-action="{VERIFY_PATH}" data-source="{name}" data-output="{sid}-answer"
 data-busy="Asking PagerDuty…" disabled>Verify settings</button>
<button type="button" data-action="{TEST_NOTIFICATION_PATH}" data-source="{name}"
 data-output="{sid}-answer" data-busy="Sending…" disabled>Send test notification</button>
<div class="answer" id="{sid}-answer" role="status" aria-live="polite"></div>
</div>
</section>"""


def _worker(model: PageModel) -> str:
    w = model.worker
    role = "Leader" if w.leader else "Follower"
    ready = ("ok", "✓", "Ready") if w.ready else ("stale", "…", "Not ready (recovering)")
    stalled = w.pipeline.status != "ok"
    pipe = ("stalled", "■", "Pipeline stalled") if stalled else ("ok", "✓", "Pipeline OK")
    pills = [
        f'<span class="pill">{role}</span>',
        *(
            f'<span class="pill {css}"><span aria-hidden="true">{sym}</span> {_e(text)}</span>'
            for css, sym, text in (ready, pipe)
        ),
    ]
    generated = model.generated_at
    return (
        f'<p class="worker">{"".join(pills)}<span class="generated">updated '
        f'<time datetime="{_iso(generated)}" title="{_e(_exact(generated))}">'
        f"{_e(_exact(generated))}</time></span></p>"
    )


def _banner(model: PageModel) -> str:
    pipeline = model.worker.pipeline
    if pipeline.status == "ok":
        return ""
    message = _text(pipeline.message or "the record pipeline makes no progress")
    return (
        f'<div class="banner" role="alert"><strong>Pipeline {_e(pipeline.status)}:</strong> '
        f"{_clip(message)}</div>"
    )


def _summary(sources: list[SourceView]) -> str:
    counts: dict[str, int] = {}
    for s in sources:
        counts[s.status] = counts.get(s.status, 0) + 1
    order: list[str] = [s for s in _SEVERITY_ORDER if s in counts]
    order += sorted(s for s in counts if s not in _SEVERITY_ORDER)
    parts = [f"{counts[s]} {_status(s)[2].lower()}" for s in order]
    noun = "source" if len(sources) == 1 else "sources"
    return f"{len(sources)} {noun}: " + ", ".join(parts) if parts else "no sources configured"


# --------------------------------------------------------------------------- the page

_STYLE: Final = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--card:#fff;
--ok:#1a7f37;--ok-bg:#dafbe1;--stale:#8a5a00;--stale-bg:#fff3c4;--degraded:#b24700;
--degraded-bg:#ffe9d6;--error:#cf222e;--error-bg:#ffebe9;--stalled:#8250df;
--stalled-bg:#f3e8ff;--unknown:#59636e;--unknown-bg:#eaeef2;--bar:#0969da}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif}
.page{max-width:1100px;margin:0 auto;padding:20px 24px 28px}
.top{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:8px}
h1{font-size:22px;margin:0}
h2{font-size:18px;margin:0}
h3{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:0 0 6px}
.worker{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:0;font-size:13px}
.pill{border:1px solid var(--line);border-radius:999px;padding:1px 9px;background:var(--card)}
.generated{color:var(--muted);margin-left:4px}
.summary{color:var(--muted);margin:6px 0 14px}
.banner{background:var(--stalled-bg);border:1px solid var(--stalled);border-radius:8px;
padding:10px 14px;margin:12px 0}
.source{background:var(--card);border:1px solid var(--line);border-left:6px solid var(--unknown);
border-radius:8px;padding:14px 18px;margin:0 0 14px}
.s-ok{border-left-color:var(--ok)}.s-stale{border-left-color:var(--stale)}
.s-degraded{border-left-color:var(--degraded)}.s-error{border-left-color:var(--error)}
.s-stalled{border-left-color:var(--stalled)}
.head{display:flex;flex-wrap:wrap;align-items:center;gap:10px;margin-bottom:10px}
.badge,.tag{display:inline-block;border-radius:999px;font-weight:600;white-space:nowrap}
.badge{padding:1px 10px;font-size:13px}
.tag{padding:0 8px;font-size:12px;margin-right:8px}
.ok{color:var(--ok);background:var(--ok-bg)}.stale{color:var(--stale);background:var(--stale-bg)}
.degraded{color:var(--degraded);background:var(--degraded-bg)}
.error{color:var(--error);background:var(--error-bg)}
.stalled{color:var(--stalled);background:var(--stalled-bg)}
.unknown{color:var(--unknown);background:var(--unknown-bg)}
.since,.muted,.none,.when,.meta,.axis{color:var(--muted)}
.since{font-size:13px}
.body{display:grid;grid-template-columns:minmax(230px,1fr) minmax(300px,1.4fr);gap:8px 28px}
.facts{display:grid;grid-template-columns:auto 1fr;gap:4px 14px;margin:0;align-content:start}
.facts dt{color:var(--muted)}.facts dd{margin:0}.facts code{margin-right:4px}
.late{color:var(--stale)}
.rate{margin:0}.rate figcaption{font-size:13px;margin-bottom:4px}
.chart{display:block;width:100%;height:48px;border-bottom:1px solid var(--line)}
.bar{fill:var(--bar)}.bar.now{fill:#54aeff}.bar.zero{fill:#d1d9e0}
.axis{display:flex;justify-content:space-between;font-size:11px}
.cols{display:grid;grid-template-columns:1fr 1.4fr;gap:8px 28px;margin-top:12px;
border-top:1px solid var(--line);padding-top:10px}
.col p{margin:0}
.lasterror .what{margin-bottom:2px}.lasterror .msg{font-size:13px;overflow-wrap:anywhere}
.lasterror:not(.resolved) .what strong{color:var(--error)}
.resolved{color:var(--muted)}
.notes{list-style:none;margin:0;padding:0;font-size:13px}
.notes li{display:grid;grid-template-columns:auto 1fr auto;gap:8px;align-items:baseline;
padding:2px 0}
.notes .tag{margin:0}.note{overflow-wrap:anywhere}.when{white-space:nowrap}
code{font:12px ui-monospace,"DejaVu Sans Mono",monospace;background:var(--bg);padding:0 4px;
border-radius:4px}
.actions{display:flex;flex-wrap:wrap;align-items:center;gap:8px;margin-top:12px}
button{font:inherit;font-size:13px;padding:4px 12px;border-radius:6px;cursor:pointer;
border:1px solid var(--line);background:var(--bg);color:var(--fg)}
button:hover:not(:disabled){background:#eef1f4}
button:disabled{cursor:default;opacity:.6}
.answer{font-size:13px;flex:1 1 300px;overflow-wrap:anywhere}
.answer ul{margin:2px 0 0;padding-left:18px}
.answer.good{color:var(--ok)}.answer.bad{color:var(--error)}
.answer li.good{color:var(--ok)}.answer li.bad{color:var(--error)}
footer{color:var(--muted);font-size:12px;margin-top:6px}
@media (max-width:720px){.body,.cols{grid-template-columns:1fr}
.notes li{grid-template-columns:auto 1fr}.notes .when{grid-column:2}}
"""

_SCRIPT: Final = """
"use strict";
(() => {
  const token = document.querySelector('meta[name="streamapp-csrf"]').content;
  let quietUntil = 0;
  setInterval(() => {
    if (Date.now() >= quietUntil) location.reload();
  }, Number(document.body.dataset.refresh) * 1000);
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.disabled = false;
    button.addEventListener("click", async () => {
      const out = document.getElementById(button.dataset.output);
      quietUntil = Date.now() + 120000;
      button.disabled = true;
      out.className = "answer";
      out.textContent = button.dataset.busy;
      let ok = false, text = "", results = [];
      try {
        const response = await fetch(button.dataset.action, {
          method: "POST", credentials: "same-origin", cache: "no-store",
          headers: {"Content-Type": "application/json", "X-Streamapp-CSRF": token},
          body: JSON.stringify({source: button.dataset.source}),
        });
        const answer = await response.json();
        ok = response.ok && answer.ok !== false;
        text = String(answer.verdict ?? answer.message ?? response.statusText);
        results = Array.isArray(answer.results) ? answer.results : [];
      } catch (error) {
        text = "no answer from the worker (" + error + ")";
      }
      out.className = "answer " + (ok ? "good" : "bad");
      out.textContent = button.textContent + ": " + text;
      if (results.length) {
        const list = document.createElement("ul");
        for (const r of results) {
          const item = document.createElement("li");
          item.className = r.ok ? "good" : "bad";
          item.textContent = r.channel + ": " + (r.ok ? "sent" : "failed")
            + (r.message ? " (" + r.message + ")" : "");
          list.append(item);
        }
        out.append(list);
      }
      button.disabled = false;
    });
  }
})();
"""


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


#: headers for the page's response: only this module's script and style run, no framing
PAGE_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src '{_sha256(_SCRIPT)}'; style-src '{_sha256(_STYLE)}';"
        " connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _as_model(model: PageModel | Mapping[str, Any]) -> PageModel:
    if isinstance(model, PageModel):
        return model
    return msgspec.convert(model, PageModel)


def render_page(model: PageModel | Mapping[str, Any], *, csrf_token: str) -> str:
    """The whole HTML document for ``model``; every value from the model is escaped."""
    page = _as_model(model)
    now = page.generated_at
    worst = next((s for s in _SEVERITY_ORDER if any(src.status == s for src in page.sources)), None)
    title = "streamapp status"
    if worst is not None and worst != "ok":
        title = f"{_status(worst)[2]} · {title}"
    sources = "".join(_source(s, i, now) for i, s in enumerate(page.sources))
    if not sources:
        sources = '<p class="none">No source is configured.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="streamapp-csrf" content="{_e(csrf_token)}">
<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS + 10}"></noscript>
<title>{_e(title)}</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body data-refresh="{REFRESH_SECONDS}">
<div class="page">
<header class="top"><h1>streamapp status</h1>{_worker(page)}</header>
{_banner(page)}
<p class="summary">{_e(_summary(page.sources))}</p>
<main>{sources}
</main>
<footer>Refreshes every {REFRESH_SECONDS} s. Verify settings makes one request to PagerDuty per
click; Send test notification posts to every channel of the source. The buttons need
JavaScript; everything else reads without it. Hover a time for the exact moment (UTC).</footer>
</div>
<script>{_SCRIPT}</script>
</body>
</html>
"""

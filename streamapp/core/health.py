"""Source health: state and alert rules as pure functions with an explicit ``now``.

No faust, no Kafka, no clock of its own. The faust shell keeps one ``SourceHealth`` per
source in a changelog table (msgspec JSON), feeds it the poller's outcomes and a periodic
tick, and publishes whatever ``Notification`` comes back on the ``notifications`` topic.

Every event function returns ``(new_state, notifications)``. A notification is emitted once
per change of state: ``state.active`` holds the problem kinds currently raised, so ticks and
polls that find the same problem again stay silent, and replaying events from a restored
state (worker restart, failover) raises nothing new.

Problems and how they clear
    ``source_error`` (critical)
        PagerDuty refused the credentials: 401 (wrong or revoked token, or wrong region),
        402 (the plan lacks Audit Trail), 403 (the key lacks admin rights or the OAuth token
        the ``audit_records.read`` scope). Raised on the first such answer: retrying will not
        fix it. Raised again only when the refusal changes (401 then 403: the operator fixed
        one thing and now needs to fix another).
    ``source_degraded`` (error)
        Every other failure (rate_limited, server_error, timeout, unreachable, transport,
        protocol, publish, internal and any kind not named above) once ``degraded_after``
        polls in a row have failed. At once, with the failure's own message (which names the
        bound), for what waiting will not cure by itself: a bound tripped by the answer
        (``response_too_large``, ``walk_too_long``), a rate-limit pause longer than the poll
        interval (``rate_limit_wait``) and a poll that makes no progress (``poll_stalled``,
        see :func:`on_poll_stalled`).
    ``source_stale`` (warning)
        No record for ``health_check``, measured from the newest record's
        ``execution_time`` (``last_record_at``). When no record was ever seen it is measured
        from ``watching_since`` (set by ``new_state``: when the source was first watched,
        kept across restarts), or from the worker's ``started_at`` for a state without it.
        Independent of poll failures: the data is late whatever the reason.
    ``source_recovered`` (info)
        One per cleared problem, naming it in ``resolves``. A successful poll clears
        ``source_error`` and ``source_degraded``; a poll (or tick) that finds a record
        younger than ``health_check`` clears ``source_stale``.

Mixed failures, kept simple: while ``source_error`` is active, transient failures do not
raise ``source_degraded`` (the error is the more severe alert and stays until a success).
An auth failure while ``source_degraded`` is active raises ``source_error`` and leaves
``source_degraded`` active, so the next success resolves both (each with its own
``source_recovered``, which closes both PagerDuty incidents).

Messages are one line, actionable, and never hold a secret: they are built from fixed text,
the source name, times and counts; the error text handed in is only put in ``details``,
on one line and scrubbed by ``REDACTOR``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from streamapp.core.durations import format_duration
from streamapp.core.models import DateTime, as_utc, rfc3339
from streamapp.core.redact import REDACTOR, one_line
from streamapp.core.urls import EU_API_URL, US_API_URL

__all__ = [
    "AUTH_ERROR_KINDS",
    "PROBLEM_KINDS",
    "SEVERITY",
    "TRANSIENT_ERROR_KINDS",
    "Notification",
    "NotificationKind",
    "Severity",
    "SourceHealth",
    "decode_notification",
    "decode_state",
    "encode_notification",
    "encode_state",
    "health_summary",
    "new_state",
    "notification",
    "on_poll_failure",
    "on_poll_success",
    "on_tick",
]

STALE: Final = "source_stale"
ERROR: Final = "source_error"
DEGRADED: Final = "source_degraded"
RECOVERED: Final = "source_recovered"
PIPELINE_STALLED: Final = "pipeline_stalled"

NotificationKind = Literal[
    "source_stale",
    "source_error",
    "source_degraded",
    "source_recovered",
    "pipeline_stalled",
    "test_notification",
    "finding",
]
Severity = Literal["critical", "error", "warning", "info"]

#: the problem kinds a state can hold in ``active``
PROBLEM_KINDS: Final = (STALE, ERROR, DEGRADED)
SEVERITY: Final[dict[str, Severity]] = {
    ERROR: "critical",
    DEGRADED: "error",
    STALE: "warning",
    RECOVERED: "info",
    PIPELINE_STALLED: "error",
    "test_notification": "info",
    "finding": "warning",
}

#: error kind → what the operator must fix (401, 402, 403)
_AUTH_HINTS: Final[dict[str, str]] = {
    "unauthorized": (
        "PagerDuty refused the API token (401): wrong or revoked token, or wrong region "
        f"(an EU account needs {EU_API_URL}, a US account {US_API_URL})"
    ),
    "plan_lacks_audit_trail": (
        "PagerDuty answered 402: the account's plan lacks the Audit Trail feature "
        "(Business or Enterprise plans have it)"
    ),
    "forbidden": (
        "PagerDuty answered 403: the API key needs account admin/owner rights, or the OAuth "
        "app the audit_records.read scope"
    ),
}
AUTH_ERROR_KINDS: Final = frozenset(_AUTH_HINTS)
_AUTH_STATUS: Final = {401: "unauthorized", 402: "plan_lacks_audit_trail", 403: "forbidden"}
#: failures that raise source_degraded at the first one, with their own message
IMMEDIATE_KINDS: Final = frozenset(
    {"response_too_large", "walk_too_long", "bound_exceeded", "rate_limit_wait", "poll_stalled"}
)
#: named for documentation; any kind that is not an auth kind is treated as transient
TRANSIENT_ERROR_KINDS: Final = frozenset(
    {
        "rate_limited",
        "server_error",
        "timeout",
        "unreachable",
        "transport",
        "protocol",
        "publish",
        "internal",
    }
)


class SourceHealth(msgspec.Struct, kw_only=True, frozen=True):
    """What the watchdog knows of one source (a changelog-table value: new fields need defaults)."""

    source_name: str
    #: the newest record's execution_time seen so far
    last_record_at: datetime | None = None
    last_success_at: datetime | None = None
    last_poll_at: datetime | None = None
    last_error_kind: str | None = None
    last_error_status: int | None = None
    last_error_message: str | None = None
    consecutive_failures: int = 0
    first_failure_at: datetime | None = None
    #: problem kinds currently raised (alerted and not yet recovered)
    active: list[str] = []
    last_alert_kind: str | None = None
    last_alert_at: datetime | None = None
    #: when the source was first watched: the stale clock when no record was ever seen
    watching_since: datetime | None = None
    #: the auth error kind the active source_error was raised for
    alerted_error_kind: str | None = None
    #: when each active problem was raised (kind → time)
    active_since: dict[str, datetime] = {}


class Notification(msgspec.Struct, kw_only=True, frozen=True):
    """A health alert: the document on the ``notifications`` topic."""

    kind: NotificationKind
    source_name: str
    #: one line, actionable, never a secret
    message: str
    #: RFC 3339 UTC
    at: DateTime
    severity: Severity
    #: for source_recovered: the problem kind that cleared
    resolves: str | None = None
    error_kind: str | None = None
    http_status: int | None = None
    details: dict[str, str | int | None] = {}


_NOTIFICATION_ENCODER = msgspec.json.Encoder()
_NOTIFICATION_DECODER = msgspec.json.Decoder(Notification)
_STATE_ENCODER = _NOTIFICATION_ENCODER
_STATE_DECODER = msgspec.json.Decoder(SourceHealth)


def encode_notification(n: Notification) -> bytes:
    """UTF-8 JSON; ``at`` as RFC 3339 UTC (``...Z``)."""
    return _NOTIFICATION_ENCODER.encode(n)


def decode_notification(data: bytes | str) -> Notification:
    return _NOTIFICATION_DECODER.decode(data)


def encode_state(state: SourceHealth) -> bytes:
    return _STATE_ENCODER.encode(state)


def decode_state(data: bytes | str) -> SourceHealth:
    return _STATE_DECODER.decode(data)


def notification(
    kind: NotificationKind,
    source_name: str,
    *,
    at: datetime,
    message: str,
    resolves: str | None = None,
    error_kind: str | None = None,
    http_status: int | None = None,
    details: dict[str, str | int | None] | None = None,
) -> Notification:
    """A notification of ``kind``, at the severity ``SEVERITY`` gives that kind."""
    return Notification(
        kind=kind,
        source_name=source_name,
        message=message,
        at=at,
        severity=SEVERITY[kind],
        resolves=resolves,
        error_kind=error_kind,
        http_status=http_status,
        details=details or {},
    )


def new_state(source_name: str, *, now: datetime | None = None) -> SourceHealth:
    """The state of a source never seen before; ``now`` starts its stale clock."""
    return SourceHealth(
        source_name=source_name, watching_since=as_utc(now) if now is not None else None
    )


# --------------------------------------------------------------------------- helpers


def _ts(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _age(now: datetime, moment: datetime) -> str:
    """``2d3h``, ``1h5m``, ``42s``: the two largest units, for people."""
    seconds = max(int((now - moment).total_seconds()), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


def _scrubbed(text: str) -> str:
    return one_line(REDACTOR.scrub(text))


def _auth_kind(error_kind: str, http_status: int | None) -> str | None:
    if error_kind in AUTH_ERROR_KINDS:
        return error_kind
    if http_status is not None:
        return _AUTH_STATUS.get(http_status)
    return None


def _raise(
    state: SourceHealth,
    notifications: list[Notification],
    *,
    kind: NotificationKind,
    now: datetime,
    message: str,
    error_kind: str | None = None,
    http_status: int | None = None,
    details: dict[str, str | int | None] | None = None,
) -> SourceHealth:
    notifications.append(
        notification(
            kind,
            state.source_name,
            at=now,
            message=message,
            error_kind=error_kind,
            http_status=http_status,
            details=details,
        )
    )
    active = [k for k in state.active if k != kind] + [kind]
    since = {**state.active_since, kind: now}
    return msgspec.structs.replace(
        state, active=active, active_since=since, last_alert_kind=kind, last_alert_at=now
    )


def _recover(
    state: SourceHealth,
    notifications: list[Notification],
    *,
    resolves: str,
    now: datetime,
    message: str,
    details: dict[str, str | int | None] | None = None,
) -> SourceHealth:
    raised = state.active_since.get(resolves)
    info: dict[str, str | int | None] = {"problem_since": _ts(raised)}
    info.update(details or {})
    notifications.append(
        notification(
            RECOVERED, state.source_name, at=now, message=message, resolves=resolves, details=info
        )
    )
    since = {k: v for k, v in state.active_since.items() if k != resolves}
    changes: dict[str, Any] = {
        "active": [k for k in state.active if k != resolves],
        "active_since": since,
        "last_alert_kind": RECOVERED,
        "last_alert_at": now,
    }
    if resolves == ERROR:
        changes["alerted_error_kind"] = None
    return msgspec.structs.replace(state, **changes)


def _stale_reference(state: SourceHealth, started_at: datetime | None) -> datetime | None:
    if state.last_record_at is not None:
        return state.last_record_at
    if state.watching_since is not None:
        return state.watching_since
    return as_utc(started_at) if started_at is not None else None


def _is_stale(
    state: SourceHealth, now: datetime, health_check: timedelta, started_at: datetime | None
) -> bool:
    reference = _stale_reference(state, started_at)
    return reference is not None and now - reference >= health_check


def _clear_stale_if_fresh(
    state: SourceHealth,
    notifications: list[Notification],
    *,
    now: datetime,
    health_check: timedelta,
    started_at: datetime | None,
) -> SourceHealth:
    if STALE not in state.active or _is_stale(state, now, health_check, started_at):
        return state
    if state.last_record_at is not None:
        what = f"records arrive again (newest at {rfc3339(state.last_record_at)})"
    else:
        what = f"no longer past the {format_duration(health_check)} health check"
    return _recover(
        state,
        notifications,
        resolves=STALE,
        now=now,
        message=f"source '{state.source_name}' recovered from source_stale: {what}",
        details={"last_record_at": _ts(state.last_record_at)},
    )


# --------------------------------------------------------------------------- events


def on_poll_success(
    state: SourceHealth,
    *,
    now: datetime,
    newest_record_at: datetime | None,
    health_check: timedelta,
) -> tuple[SourceHealth, list[Notification]]:
    """A poll succeeded (its records acknowledged); ``newest_record_at`` is its newest record.

    Clears the failure count, recovers source_error / source_degraded (one notification
    each), and recovers source_stale when the newest record is younger than health_check.
    """
    now = as_utc(now)
    notes: list[Notification] = []
    last_record_at = state.last_record_at
    if last_record_at is not None and last_record_at > now:
        last_record_at = now  # a future time kept by an older version
    if newest_record_at is not None:
        newest = min(as_utc(newest_record_at), now)
        if last_record_at is None or newest > last_record_at:
            last_record_at = newest
    failures, failed_since = state.consecutive_failures, state.first_failure_at
    state = msgspec.structs.replace(
        state,
        last_record_at=last_record_at,
        last_success_at=now,
        last_poll_at=now,
        consecutive_failures=0,
        first_failure_at=None,
        watching_since=state.watching_since or now,
    )
    for kind in (ERROR, DEGRADED):
        if kind in state.active:
            state = _recover(
                state,
                notes,
                resolves=kind,
                now=now,
                message=(
                    f"source '{state.source_name}' recovered from {kind}: polling PagerDuty"
                    f" succeeds again after {failures} failed poll(s)"
                ),
                details={
                    "consecutive_failures": failures,
                    "first_failure_at": _ts(failed_since),
                    "last_error_kind": state.last_error_kind,
                },
            )
    state = _clear_stale_if_fresh(state, notes, now=now, health_check=health_check, started_at=None)
    return state, notes


def on_poll_failure(
    state: SourceHealth,
    *,
    now: datetime,
    error_kind: str,
    http_status: int | None,
    message: str,
    degraded_after: int = 3,
) -> tuple[SourceHealth, list[Notification]]:
    """A poll failed with an error of ``error_kind`` (``PagerDutyError.kind`` or our own).

    401/402/403 raise source_error at once; anything else raises source_degraded when
    ``degraded_after`` polls in a row have failed (see the module docstring for mixes).
    """
    now = as_utc(now)
    notes: list[Notification] = []
    failures = state.consecutive_failures + 1
    scrubbed = _scrubbed(message)
    state = msgspec.structs.replace(
        state,
        last_poll_at=now,
        last_error_kind=error_kind,
        last_error_status=http_status,
        last_error_message=scrubbed,
        consecutive_failures=failures,
        first_failure_at=state.first_failure_at or now,
        watching_since=state.watching_since or now,
    )
    alert = _failure_alert(
        state,
        now=now,
        error_kind=error_kind,
        http_status=http_status,
        scrubbed=scrubbed,
        degraded_after=degraded_after,
    )
    if alert is None:
        return state, notes
    kind, text = alert
    details: dict[str, str | int | None] = {
        "consecutive_failures": failures,
        "first_failure_at": _ts(state.first_failure_at),
        "last_success_at": _ts(state.last_success_at),
        "last_record_at": _ts(state.last_record_at),
        "error": scrubbed,
    }
    state = _raise(
        state,
        notes,
        kind=kind,
        now=now,
        message=text,
        error_kind=error_kind,
        http_status=http_status,
        details=details,
    )
    auth_kind = _auth_kind(error_kind, http_status)
    if auth_kind is not None:
        state = msgspec.structs.replace(state, alerted_error_kind=auth_kind)
    return state, notes


def _failure_alert(
    state: SourceHealth,
    *,
    now: datetime,
    error_kind: str,
    http_status: int | None,
    scrubbed: str,
    degraded_after: int,
) -> tuple[NotificationKind, str] | None:
    """The alert (kind, message) a failed poll raises, given the state that counts it, or
    None: an auth failure at once (again when its cause changes), anything else once
    ``degraded_after`` polls in a row failed, and nothing while an alert is active."""
    name = state.source_name
    auth_kind = _auth_kind(error_kind, http_status)
    if auth_kind is not None:
        if ERROR in state.active and state.alerted_error_kind == auth_kind:
            return None
        return "source_error", (
            f"source '{name}' cannot read audit records: {_AUTH_HINTS[auth_kind]};"
            " fix the source's credentials or API URL"
        )
    if ERROR in state.active or DEGRADED in state.active:
        return None
    if error_kind in IMMEDIATE_KINDS:
        return "source_degraded", f"source '{name}': {scrubbed}"
    failures = state.consecutive_failures
    if failures < max(degraded_after, 1):
        return None
    status = f", HTTP {http_status}" if http_status is not None else ""
    return "source_degraded", (
        f"source '{name}': {failures} polls in a row failed ({error_kind}{status})"
        f" since {rfc3339(state.first_failure_at or now)}; retrying with backoff."
        f" Last error: {scrubbed}"
    )


def on_poll_stalled(
    state: SourceHealth, *, now: datetime, running_for: float, idle_for: float
) -> tuple[SourceHealth, list[Notification]]:
    """A poll has run ``running_for`` seconds without a page or window done for ``idle_for``:
    raise source_degraded once (the next successful poll recovers it)."""
    now = as_utc(now)
    if ERROR in state.active or DEGRADED in state.active:
        return state, []
    message = (
        f"poll has made no progress for {_fmt_seconds(idle_for)} (running for"
        f" {_fmt_seconds(running_for)}): PagerDuty or the broker is not answering; the"
        " checkpoint has not moved since"
    )
    return on_poll_failure(
        state, now=now, error_kind="poll_stalled", http_status=None, message=message
    )


def _fmt_seconds(seconds: float) -> str:
    moment = datetime.fromtimestamp(0, UTC)
    return _age(moment + timedelta(seconds=seconds), moment)


def pipeline_stalled(
    source_name: str, *, now: datetime, seconds: float, error: str | None
) -> Notification:
    """The pipeline on a worker has waited ``seconds`` for its outputs to be acknowledged."""
    return notification(
        PIPELINE_STALLED,
        source_name,
        message=(
            f"the pipeline has waited {_fmt_seconds(seconds)} for the broker to acknowledge"
            f" its outputs: no record of source '{source_name}' (or any other) reaches the"
            " output topic until it does; check the Kafka cluster"
        ),
        at=as_utc(now),
        error_kind="pipeline_stalled",
        details={"stalled_seconds": int(seconds), "error": _scrubbed(error or "")},
    )


def pipeline_recovered(source_name: str, *, now: datetime, seconds: float) -> Notification:
    return notification(
        RECOVERED,
        source_name,
        message=(
            f"the pipeline's outputs are acknowledged again after {_fmt_seconds(seconds)};"
            f" records of source '{source_name}' flow again"
        ),
        at=as_utc(now),
        resolves=PIPELINE_STALLED,
        details={"stalled_seconds": int(seconds)},
    )


def on_tick(
    state: SourceHealth,
    *,
    now: datetime,
    health_check: timedelta,
    started_at: datetime,
) -> tuple[SourceHealth, list[Notification]]:
    """The watchdog's periodic check: raise source_stale once, or clear it if fresh again."""
    now = as_utc(now)
    notes: list[Notification] = []
    if STALE in state.active:
        state = _clear_stale_if_fresh(
            state, notes, now=now, health_check=health_check, started_at=started_at
        )
        return state, notes
    if not _is_stale(state, now, health_check, started_at):
        return state, notes
    name = state.source_name
    limit = format_duration(health_check)
    if state.last_record_at is not None:
        what = (
            f"no audit record for {_age(now, state.last_record_at)} (newest at"
            f" {rfc3339(state.last_record_at)}; health check {limit})"
        )
    else:
        since = _stale_reference(state, started_at) or now
        what = f"no audit record since watching began at {rfc3339(since)} (health check {limit})"
    hint = (
        "polls are failing, see the source's errors"
        if state.consecutive_failures
        else "check that the worker polls this source and the account has audit activity"
    )
    state = _raise(
        state,
        notes,
        kind="source_stale",
        now=now,
        message=f"source '{name}' is stale: {what}; {hint}",
        details={
            "last_record_at": _ts(state.last_record_at),
            "last_success_at": _ts(state.last_success_at),
            "health_check_seconds": int(health_check.total_seconds()),
            "consecutive_failures": state.consecutive_failures,
        },
    )
    return state, notes


# --------------------------------------------------------------------------- web view


def _seconds_since(now: datetime, moment: datetime | None) -> float | None:
    return round((now - moment).total_seconds(), 3) if moment is not None else None


def health_summary(
    state: SourceHealth, *, now: datetime, health_check: timedelta
) -> dict[str, Any]:
    """A JSON-ready summary for the web endpoint.

    ``status`` is the most severe active problem: ``error`` > ``degraded`` > ``stale`` >
    ``ok`` (alerts and status never disagree: both come from ``active``).
    """
    now = as_utc(now)
    if ERROR in state.active:
        status = "error"
    elif DEGRADED in state.active:
        status = "degraded"
    elif STALE in state.active:
        status = "stale"
    else:
        status = "ok"
    last_error = None
    if state.last_error_kind is not None:
        last_error = {
            "kind": state.last_error_kind,
            "status": state.last_error_status,
            "message": state.last_error_message,
        }
    return {
        "source_name": state.source_name,
        "status": status,
        "active": list(state.active),
        "health_check_seconds": health_check.total_seconds(),
        "last_record_at": _ts(state.last_record_at),
        "last_record_age_seconds": _seconds_since(now, state.last_record_at),
        "last_success_at": _ts(state.last_success_at),
        "last_success_age_seconds": _seconds_since(now, state.last_success_at),
        "last_poll_at": _ts(state.last_poll_at),
        "last_poll_age_seconds": _seconds_since(now, state.last_poll_at),
        "consecutive_failures": state.consecutive_failures,
        "first_failure_at": _ts(state.first_failure_at),
        "last_error": last_error,
        "last_alert_kind": state.last_alert_kind,
        "last_alert_at": _ts(state.last_alert_at),
    }

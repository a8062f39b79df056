"""Health rules with a fake clock: one alert per change of state, and replay-safe state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from streamapp.core.health import (
    Notification,
    SourceHealth,
    decode_notification,
    decode_state,
    encode_notification,
    encode_state,
    health_summary,
    new_state,
    on_poll_failure,
    on_poll_success,
    on_tick,
)
from streamapp.core.redact import REDACTOR

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HEALTH_CHECK = timedelta(hours=1)
TOKEN = "y_NbAkKc66ryYTWUXYEu"
REDACTOR.add(TOKEN)  # as config does for every token it loads


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def kinds(notes: list[Notification]) -> list[str]:
    return [n.kind for n in notes]


def success(
    state: SourceHealth, clock: Clock, newest: datetime | None = None
) -> tuple[SourceHealth, list[Notification]]:
    return on_poll_success(state, now=clock.now, newest_record_at=newest, health_check=HEALTH_CHECK)


def failure(
    state: SourceHealth, clock: Clock, kind: str, status: int | None = None, message: str = "boom"
) -> tuple[SourceHealth, list[Notification]]:
    return on_poll_failure(
        state, now=clock.now, error_kind=kind, http_status=status, message=message
    )


def tick(state: SourceHealth, clock: Clock) -> tuple[SourceHealth, list[Notification]]:
    return on_tick(state, now=clock.now, health_check=HEALTH_CHECK, started_at=START)


def test_stale_after_health_check_then_recovered_once() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    state, notes = success(state, clock, newest=clock.now - timedelta(minutes=5))
    assert notes == []
    clock.advance(minutes=50)
    state, notes = tick(state, clock)
    assert notes == []  # 55 min since the newest record: not yet
    clock.advance(minutes=10)
    state, notes = tick(state, clock)
    assert kinds(notes) == ["source_stale"]
    stale = notes[0]
    assert stale.severity == "warning"
    assert stale.source_name == "acme"
    assert stale.at == clock.now
    assert "no audit record for 1h5m" in stale.message
    assert stale.details["last_record_at"] == "2026-03-01T11:55:00.000Z"
    assert state.active == ["source_stale"]

    for _ in range(5):  # ticks and empty polls find the same problem: silent
        clock.advance(minutes=10)
        state, notes = tick(state, clock)
        assert notes == []
        state, notes = success(state, clock)
        assert notes == []

    clock.advance(minutes=1)
    state, notes = success(state, clock, newest=clock.now - timedelta(seconds=30))
    assert kinds(notes) == ["source_recovered"]
    assert notes[0].resolves == "source_stale"
    assert notes[0].severity == "info"
    assert state.active == []
    state, notes = tick(state, clock)
    assert notes == []


def test_a_newer_record_that_is_still_old_does_not_clear_stale() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    clock.advance(hours=2)
    state, notes = tick(state, clock)
    assert kinds(notes) == ["source_stale"]
    state, notes = success(state, clock, newest=clock.now - timedelta(hours=3))
    assert notes == []
    assert state.active == ["source_stale"]


def test_stale_is_measured_from_watching_since_when_no_record_was_ever_seen() -> None:
    clock = Clock()
    state = new_state("quiet", now=clock.now)
    clock.advance(minutes=59)
    state, notes = tick(state, clock)
    assert notes == []
    clock.advance(minutes=1)
    state, notes = tick(state, clock)
    assert kinds(notes) == ["source_stale"]
    assert "since watching began at 2026-03-01T12:00:00.000Z" in notes[0].message
    assert notes[0].details["last_record_at"] is None


def test_stale_falls_back_to_started_at_for_a_state_without_watching_since() -> None:
    clock = Clock()
    state = SourceHealth(source_name="old")
    started = clock.now
    clock.advance(minutes=61)
    state, notes = on_tick(state, now=clock.now, health_check=HEALTH_CHECK, started_at=started)
    assert kinds(notes) == ["source_stale"]


@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("unauthorized", 401, "wrong or revoked token, or wrong region"),
        ("plan_lacks_audit_trail", 402, "plan lacks the Audit Trail feature"),
        ("forbidden", 403, "audit_records.read scope"),
        ("api_error", 403, "admin/owner rights"),  # the status alone is enough
    ],
)
def test_auth_failure_is_an_error_at_once_then_recovered(
    kind: str, status: int, words: str
) -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    state, notes = failure(state, clock, kind, status, message=f"token {TOKEN} refused")
    assert kinds(notes) == ["source_error"]
    error = notes[0]
    assert error.severity == "critical"
    assert error.http_status == status
    assert error.error_kind == kind
    assert words in error.message
    assert "\n" not in error.message
    assert TOKEN not in encode_notification(error).decode()
    assert state.active == ["source_error"]

    for _ in range(5):  # the same refusal again and again: silent
        clock.advance(minutes=1)
        state, notes = failure(state, clock, kind, status)
        assert notes == []
        state, notes = tick(state, clock)
        assert notes == []
    assert state.consecutive_failures == 6

    clock.advance(minutes=1)
    state, notes = success(state, clock, newest=clock.now)
    assert kinds(notes) == ["source_recovered"]
    assert notes[0].resolves == "source_error"
    assert notes[0].details["consecutive_failures"] == 6
    assert state.active == []
    assert state.consecutive_failures == 0
    state, notes = success(state, clock, newest=clock.now)
    assert notes == []


def test_auth_refusal_that_changes_kind_is_reported_again() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    state, notes = failure(state, clock, "unauthorized", 401)
    assert kinds(notes) == ["source_error"]
    state, notes = failure(state, clock, "forbidden", 403)
    assert kinds(notes) == ["source_error"]
    assert notes[0].http_status == 403
    assert state.active == ["source_error"]
    state, notes = failure(state, clock, "forbidden", 403)
    assert notes == []


def test_degraded_only_after_n_transient_failures_then_recovered() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    state, notes = failure(state, clock, "server_error", 503)
    assert notes == []
    clock.advance(minutes=1)
    state, notes = failure(state, clock, "timeout")
    assert notes == []
    clock.advance(minutes=1)
    state, notes = failure(state, clock, "rate_limited", 429)
    assert kinds(notes) == ["source_degraded"]
    degraded = notes[0]
    assert degraded.severity == "error"
    assert "3 polls in a row failed (rate_limited, HTTP 429)" in degraded.message
    assert degraded.details["first_failure_at"] == "2026-03-01T12:00:00.000Z"
    for _ in range(5):
        state, notes = failure(state, clock, "unreachable")
        assert notes == []
    state, notes = success(state, clock, newest=clock.now)
    assert kinds(notes) == ["source_recovered"]
    assert notes[0].resolves == "source_degraded"
    assert state.active == []


def test_a_success_between_transient_failures_resets_the_count() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    for _ in range(3):
        state, _ = failure(state, clock, "timeout")
        state, _ = failure(state, clock, "timeout")
        state, notes = success(state, clock)
        assert notes == []
    state, notes = on_poll_failure(
        state, now=clock.now, error_kind="timeout", http_status=None, message="x", degraded_after=1
    )
    assert kinds(notes) == ["source_degraded"]


def test_transient_failures_during_an_error_raise_nothing_more() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    state, notes = failure(state, clock, "unauthorized", 401)
    assert kinds(notes) == ["source_error"]
    for _ in range(5):
        state, notes = failure(state, clock, "timeout")
        assert notes == []
    assert state.active == ["source_error"]


def test_auth_failure_while_degraded_keeps_both_and_a_success_resolves_both() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    for _ in range(3):
        state, notes = failure(state, clock, "server_error", 500)
    assert kinds(notes) == ["source_degraded"]
    state, notes = failure(state, clock, "unauthorized", 401)
    assert kinds(notes) == ["source_error"]
    assert state.active == ["source_degraded", "source_error"]
    state, notes = success(state, clock, newest=clock.now)
    assert sorted(n.resolves or "" for n in notes) == ["source_degraded", "source_error"]
    assert state.active == []


def test_state_round_trips_and_replay_after_restart_raises_nothing_new() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    state, _ = success(state, clock, newest=clock.now)
    clock.advance(hours=2)
    state, notes = tick(state, clock)
    assert kinds(notes) == ["source_stale"]
    state, notes = failure(state, clock, "unauthorized", 401, message=f"key {TOKEN} bad")
    assert kinds(notes) == ["source_error"]
    for _ in range(3):
        state, notes = failure(state, clock, "timeout")
    assert notes == []

    stored = encode_state(state)
    assert TOKEN not in stored.decode()
    restored = decode_state(stored)
    assert restored == state

    # the new worker replays the last events and ticks: nothing new is raised
    again, notes = failure(restored, clock, "timeout")
    assert notes == []
    again, notes = failure(again, clock, "unauthorized", 401)
    assert notes == []
    again, notes = tick(again, clock)
    assert notes == []
    # and recovery still works from the restored state
    again, notes = success(again, clock, newest=clock.now)
    assert sorted(n.resolves or "" for n in notes) == ["source_error", "source_stale"]


def test_state_decodes_an_older_document_without_the_newer_fields() -> None:
    old = json.dumps({"source_name": "acme", "active": ["source_stale"]}).encode()
    state = decode_state(old)
    assert state.active == ["source_stale"]
    assert state.watching_since is None
    assert state.active_since == {}
    assert msgspec.json.decode(msgspec.json.encode(state), type=SourceHealth) == state


def test_notification_document_is_rfc3339_utc_json() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    _, notes = failure(state, clock, "forbidden", 403)
    data = encode_notification(notes[0])
    document = json.loads(data)
    assert document["kind"] == "source_error"
    assert document["source_name"] == "acme"
    assert document["at"] == "2026-03-01T12:00:00Z"
    assert document["severity"] == "critical"
    assert document["http_status"] == 403
    assert document["details"]["consecutive_failures"] == 1
    assert decode_notification(data) == notes[0]


def test_naive_and_offset_times_are_reported_in_utc() -> None:
    state = new_state("acme", now=START)
    local = START.astimezone(timezone(timedelta(hours=2))) + timedelta(minutes=1)
    _, notes = on_poll_failure(
        state, now=local, error_kind="unauthorized", http_status=401, message="x"
    )
    assert json.loads(encode_notification(notes[0]))["at"] == "2026-03-01T12:01:00Z"


def test_health_summary_reports_status_and_ages() -> None:
    clock = Clock()
    state = new_state("acme", now=clock.now)
    state, _ = success(state, clock, newest=clock.now - timedelta(seconds=30))
    clock.advance(seconds=90)
    summary = health_summary(state, now=clock.now, health_check=HEALTH_CHECK)
    assert summary["status"] == "ok"
    assert summary["last_record_age_seconds"] == 120.0
    assert summary["last_success_age_seconds"] == 90.0
    assert summary["health_check_seconds"] == 3600.0
    assert summary["last_error"] is None
    json.dumps(summary)

    for _ in range(3):
        state, _ = failure(state, clock, "server_error", 502)
    summary = health_summary(state, now=clock.now, health_check=HEALTH_CHECK)
    assert summary["status"] == "degraded"
    assert summary["last_error"] == {"kind": "server_error", "status": 502, "message": "boom"}
    state, _ = failure(state, clock, "unauthorized", 401)
    assert health_summary(state, now=clock.now, health_check=HEALTH_CHECK)["status"] == "error"
    state, _ = success(state, clock)
    clock.advance(hours=2)
    state, _ = tick(state, clock)
    assert health_summary(state, now=clock.now, health_check=HEALTH_CHECK)["status"] == "stale"

"""The PagerDuty audit simulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest

from streamapp.core.models import AuditRecordView, Reference, ReferenceChange
from streamapp.devtools.simulator import (
    FaultRule,
    Simulator,
    SimulatorThread,
    error_body,
    example_records,
    fingerprint,
    generate_records,
)

TOKEN = "tok-ok"
AUTH = {
    "Authorization": f"Token token={TOKEN}",
    "Accept": "application/vnd.pagerduty+json;version=2",
}
NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


class FieldView(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    value: str | None = None  # the OpenAPI schema: string, nullable
    before_value: str | None = None


class DetailsView(msgspec.Struct, kw_only=True):
    resource: Reference
    fields: list[FieldView] | None = None
    references: list[ReferenceChange] | None = None


class RecordSchema(AuditRecordView, kw_only=True, frozen=True):
    """The OpenAPI AuditRecord schema, required fields required, unknown fields allowed: the
    pipeline's view, with the field values the schema types (string, nullable) and ``self``.
    """

    details: DetailsView | None = None  # type: ignore[assignment]  # stricter values
    self_url: str | None = msgspec.field(default=None, name="self")


class Clock:
    def __init__(self, moment: datetime = NOW) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[Simulator]:
    simulator = Simulator(tokens={TOKEN: "ok"}, now=clock, rate_limit_per_minute=None)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=5) as http:
        yield http


async def walk(client: httpx.AsyncClient, **params: Any) -> tuple[list[dict], list[bytes]]:
    """Every record of a window, following next_cursor with the same since/until."""
    records: list[dict] = []
    bodies: list[bytes] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = await client.get("/audit/records", params=query)
        assert response.status_code == 200, response.text
        bodies.append(response.content)
        page = response.json()
        assert set(page) == {"records", "limit", "next_cursor", "response_metadata"}
        records.extend(page["records"])
        cursor = page["next_cursor"]
        if cursor is None:
            return records, bodies


def in_window(records: list[dict], since: datetime, until: datetime) -> list[dict]:
    return [r for r in records if since <= parse(r["execution_time"]) < until]


# --------------------------------------------------------------------------- paging


async def test_walk_is_newest_first_and_returns_every_record_once(sim, client, clock):
    records = generate_records(537, start=NOW - timedelta(days=2), end=NOW, seed=7)
    sim.add_records(records)
    since, until = NOW - timedelta(hours=30), NOW - timedelta(hours=1)
    got, _ = await walk(client, since=iso(since), until=iso(until), limit=50)
    expected = in_window(records, since, until)
    assert len(got) == len(expected) > 100
    assert Counter(r["id"] for r in got) == Counter(r["id"] for r in expected)
    keys = [(parse(r["execution_time"]), r["id"]) for r in got]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by id (descending)
    assert got == expected  # generate_records sorts the same way


async def test_cursor_is_keyset_and_walk_survives_new_records(sim, client):
    records = generate_records(120, start=NOW - timedelta(hours=5), end=NOW, seed=2)
    sim.add_records(records)
    params = {"since": iso(NOW - timedelta(hours=6)), "until": iso(NOW), "limit": 40}
    first = (await client.get("/audit/records", params=params)).json()
    last = first["records"][-1]
    ms = (parse(last["execution_time"]) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )
    assert first["next_cursor"] == f"{ms}-{last['id']}"
    # a record newer than the cursor position appears meanwhile: the walk neither repeats
    # nor skips anything older than the cursor
    sim.add_records(generate_records(1, start=NOW - timedelta(minutes=1), end=NOW, seed=99))
    rest, _ = await walk_from(client, params, first["next_cursor"])
    assert [r["id"] for r in first["records"] + rest] == [r["id"] for r in records]


async def walk_from(client, params, cursor):
    out: list[dict] = []
    bodies = []
    while cursor:
        response = await client.get("/audit/records", params=dict(params, cursor=cursor))
        bodies.append(response.content)
        page = response.json()
        out.extend(page["records"])
        cursor = page["next_cursor"]
    return out, bodies


async def test_records_are_served_byte_for_byte(sim, client):
    odd = (
        b'{ "id" : "-odd-bytes",\n "execution_time":"2026-03-10T11:00:00.000001Z",'
        b'"action":"update","method":{"type":"other"},"root_resource":{"id":"P1","type":'
        b'"team_reference","summary":"\\u00c9quipe \xc3\xa9"}, "x_future_field": [1, 2.50]}'
    )
    sim.add_records([odd])
    sim.add_records(generate_records(30, start=NOW - timedelta(hours=2), end=NOW, seed=5))
    first = await client.get("/audit/records", params={"limit": 100})
    second = await client.get("/audit/records", params={"limit": 100})
    assert first.content == second.content
    assert odd in first.content
    assert sim.stored_bytes("-odd-bytes") == odd


async def test_limit_defaults_to_100_is_capped_and_echoed(sim, client):
    sim.add_records(generate_records(250, start=NOW - timedelta(hours=20), end=NOW, seed=1))
    default = (await client.get("/audit/records")).json()
    assert default["limit"] == 100 and len(default["records"]) == 100
    capped = (await client.get("/audit/records", params={"limit": 1000})).json()
    assert capped["limit"] == 100 and len(capped["records"]) == 100
    small = (await client.get("/audit/records", params={"limit": 7})).json()
    assert small["limit"] == 7 and len(small["records"]) == 7
    assert small["response_metadata"] is None


async def test_empty_window_and_exactly_full_last_page(sim, client):
    empty = (await client.get("/audit/records")).json()
    assert empty == {"records": [], "limit": 100, "next_cursor": None, "response_metadata": None}
    sim.add_records(generate_records(20, start=NOW - timedelta(hours=2), end=NOW, seed=4))
    page = (await client.get("/audit/records", params={"limit": 20})).json()
    assert len(page["records"]) == 20 and page["next_cursor"] is None


async def test_default_window_is_last_24_hours(sim, client):
    old = generate_records(
        5, start=NOW - timedelta(hours=30), end=NOW - timedelta(hours=25), seed=1
    )
    new = generate_records(5, start=NOW - timedelta(hours=23), end=NOW, seed=2)
    sim.add_records(old + new)
    page = (await client.get("/audit/records")).json()
    assert {r["id"] for r in page["records"]} == {r["id"] for r in new}


def edge_records() -> list[dict]:
    at_since, at_until = generate_records(2, start=NOW, end=NOW + timedelta(hours=1), seed=3)
    at_since["execution_time"] = "2026-03-10T10:00:00.000Z"
    at_until["execution_time"] = "2026-03-10T11:00:00.000Z"
    return [at_since, at_until]


@pytest.mark.parametrize(
    ("since_inclusive", "until_inclusive", "expected"),
    [(True, False, {0}), (False, False, set()), (True, True, {0, 1}), (False, True, {1})],
)
async def test_window_bound_inclusivity_is_switchable(
    clock, since_inclusive, until_inclusive, expected
):
    records = edge_records()
    async with Simulator(
        tokens={TOKEN: "ok"},
        now=clock,
        since_inclusive=since_inclusive,
        until_inclusive=until_inclusive,
    ) as sim:
        sim.add_records(records)
        async with httpx.AsyncClient(base_url=sim.base_url, headers=AUTH) as http:
            # offsets and microsecond fractions parse too
            page = (
                await http.get(
                    "/audit/records",
                    params={
                        "since": "2026-03-10T11:00:00.000000+01:00",
                        "until": "2026-03-10T11:00:00Z",
                    },
                )
            ).json()
    assert {r["id"] for r in page["records"]} == {records[i]["id"] for i in expected}


# --------------------------------------------------------------------------- 400s


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
        {"since": "2026-03-10T00:00:00Z", "until": "2026-03-09T00:00:00Z"},
        {"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00.001Z"},
        {"cursor": "not-a-cursor"},
        {"limit": "zero"},
    ],
)
async def test_bad_parameters_answer_400_with_pagerduty_error_body(client, params):
    response = await client.get("/audit/records", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 2001 and error["message"]
    assert isinstance(error["errors"], list) and error["errors"]


async def test_exactly_31_days_is_allowed(client):
    response = await client.get(
        "/audit/records", params={"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}
    )
    assert response.status_code == 200


# --------------------------------------------------------------------------- auth


async def test_auth_states(sim):
    sim.set_token_state("revoked", "revoked")
    sim.set_token_state("no-plan", "no_plan")
    sim.set_token_state("read-only", "forbidden")
    cases = [
        (None, 401, 2006),
        ("Token token=unknown", 401, 2006),
        ("Token token=revoked", 401, 2006),
        ("Token token=no-plan", 402, 2012),
        ("Token token=read-only", 403, 2010),
        ("Basic dXNlcjpwYXNz", 401, 2006),
        (f"Token token={TOKEN}", 200, None),
        (f"Bearer {TOKEN}", 200, None),
    ]
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        for header, status, code in cases:
            headers = {"Authorization": header} if header else {}
            response = await http.get("/audit/records", headers=headers)
            assert response.status_code == status, header
            if code is not None:
                assert response.json()["error"]["code"] == code
                assert response.json()["error"]["message"]
        # revoke and restore at run time
        sim.set_token_state(TOKEN, "revoked")
        bad = await http.get("/audit/records", headers={"Authorization": f"Token token={TOKEN}"})
        assert bad.status_code == 401
        assert bad.json()["error"]["message"] == "Invalid Credentials"
        sim.set_token_state(TOKEN, "ok")
        good = await http.get("/audit/records", headers={"Authorization": f"Token token={TOKEN}"})
        assert good.status_code == 200
    log = sim.requests
    assert [e.auth_scheme for e in log[:2]] == [None, "token"]
    assert log[7].auth_scheme == "bearer"
    assert log[6].token_fingerprint == fingerprint(TOKEN) != TOKEN
    assert all(TOKEN not in json.dumps(e.to_json()) for e in log)
    with pytest.raises(ValueError):
        sim.set_token_state(TOKEN, "sleepy")


async def test_accept_header_is_recorded_not_enforced(sim, client):
    await client.get("/audit/records", headers={"Accept": "text/plain"})
    await client.get("/audit/records")
    assert [e.accept for e in sim.requests] == [
        "text/plain",
        "application/vnd.pagerduty+json;version=2",
    ]
    assert [e.status for e in sim.requests] == [200, 200]


# --------------------------------------------------------------------------- rate limit


async def test_rate_limit_headers_and_429():
    async with Simulator(
        tokens={TOKEN: "ok", "other": "ok"}, rate_limit_per_minute=3, rate_limit_window=0.6
    ) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url, headers=AUTH) as http:
            answers = [await http.get("/audit/records") for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
            assert all(a.headers["ratelimit-limit"] == "3" for a in answers)
            assert answers[3].headers["ratelimit-reset"] == "1"
            assert answers[3].json()["error"]["code"] == 2020
            # per token: another token still has its budget
            other = await http.get("/audit/records", headers={"Authorization": "Token token=other"})
            assert other.status_code == 200
            await asyncio.sleep(0.65)
            again = await http.get("/audit/records")
            assert again.status_code == 200 and again.headers["ratelimit-remaining"] == "2"


async def test_rate_limit_off_sends_no_headers(client):
    response = await client.get("/audit/records")
    assert "ratelimit-limit" not in response.headers


# --------------------------------------------------------------------------- faults


async def test_fault_429_with_headers(sim, client):
    headers = {"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": "3"}
    sim.add_fault(FaultRule(status=429, headers=headers, body=error_body(429)))
    limited = await client.get("/audit/records")
    assert limited.status_code == 429
    assert limited.headers["ratelimit-reset"] == "3"
    assert limited.json()["error"]["code"] == 2020
    assert (await client.get("/audit/records")).status_code == 200  # consumed


async def test_fault_429_bare_and_5xx_with_and_without_body(sim, client):
    sim.add_fault(FaultRule(status=429))
    sim.add_fault(FaultRule(status=503, body=error_body(503, "Service Unavailable")))
    sim.add_fault(
        FaultRule(
            status=502,
            body="<html><h1>502 Bad Gateway</h1></html>",
            headers={"Content-Type": "text/html"},
        )
    )
    sim.add_fault(FaultRule(status=500, times=2))
    bare = await client.get("/audit/records")
    assert bare.status_code == 429 and bare.content == b""
    assert not [h for h in bare.headers if h.startswith("ratelimit")]
    unavailable = await client.get("/audit/records")
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["message"] == "Service Unavailable"
    gateway = await client.get("/audit/records")
    assert gateway.status_code == 502 and b"Bad Gateway" in gateway.content
    assert [(await client.get("/audit/records")).status_code for _ in range(3)] == [500, 500, 200]
    assert sim.faults_pending == 0
    assert [e.fault for e in sim.requests] == ["429", "503", "502", "500", "500", None]


async def test_fault_delay_triggers_client_timeout(sim, client):
    sim.add_fault(FaultRule(delay=0.5))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/audit/records", timeout=0.15)
    assert time.monotonic() - started < 0.45
    slow_then_fine = FaultRule(delay=0.2)
    sim.add_fault(slow_then_fine)
    started = time.monotonic()
    response = await client.get("/audit/records")
    assert response.status_code == 200 and time.monotonic() - started >= 0.2


async def test_fault_drop_connection(sim, client):
    sim.add_fault(FaultRule(drop_connection=True))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/audit/records")
    assert (await client.get("/audit/records")).status_code == 200
    assert [e.status for e in sim.requests] == [None, 200]


async def test_fault_invalid_json(sim, client):
    sim.add_fault(FaultRule(invalid_json=True))
    response = await client.get("/audit/records")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_fault_on_page_k_of_a_walk(sim, client):
    records = generate_records(250, start=NOW - timedelta(hours=10), end=NOW, seed=8)
    sim.add_records(records)
    sim.add_fault(FaultRule(status=500, page=3, times=1))
    params = {"since": iso(NOW - timedelta(hours=12)), "until": iso(NOW), "limit": 50}
    statuses, got, cursor = [], [], None
    while True:
        response = await client.get(
            "/audit/records", params=dict(params, **({"cursor": cursor} if cursor else {}))
        )
        statuses.append(response.status_code)
        if response.status_code != 200:
            continue  # retry the same cursor
        page = response.json()
        got.extend(page["records"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert statuses == [200, 200, 500, 200, 200, 200]
    assert [r["id"] for r in got] == [r["id"] for r in records]
    log = sim.requests
    assert (log[2].page, log[2].status, log[2].fault) == (3, 500, "500")
    assert log[3].query["cursor"] == log[2].query["cursor"] and log[3].status == 200
    sim.clear_requests()
    sim.add_fault(FaultRule(status=503, page=2, times=None))
    first = (await client.get("/audit/records", params=params)).json()
    second = await client.get("/audit/records", params=dict(params, cursor=first["next_cursor"]))
    assert second.status_code == 503
    assert [e.page for e in sim.requests] == [1, 2]
    sim.clear_faults()


async def test_latency_range(clock):
    async with Simulator(tokens={TOKEN: "ok"}, latency=(0.05, 0.1), now=clock) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url, headers=AUTH) as http:
            for _ in range(3):
                assert (await http.get("/audit/records")).status_code == 200
        assert all(0.05 <= e.duration < 0.5 for e in sim.requests)


# --------------------------------------------------------------------------- visibility


async def test_late_visible_records(sim, client, clock):
    record = generate_records(1, start=NOW - timedelta(minutes=10), end=NOW, seed=11)
    sim.add_records(record, visible_at=NOW + timedelta(seconds=30))
    params = {"since": iso(NOW - timedelta(hours=1)), "until": iso(NOW + timedelta(hours=1))}
    assert (await client.get("/audit/records", params=params)).json()["records"] == []
    clock.advance(seconds=30)
    assert [
        r["id"] for r in (await client.get("/audit/records", params=params)).json()["records"]
    ] == [record[0]["id"]]
    sim.add_records(
        generate_records(1, start=NOW, end=NOW + timedelta(seconds=1), seed=12), visible_after=5
    )
    assert sim.stats()["visible_record_count"] == 1 and sim.record_count == 2


# --------------------------------------------------------------------------- OAuth


async def test_oauth_issue_use_and_expiry(clock):
    async with Simulator(oauth_clients={"cid": "csecret"}, oauth_expires_in=600, now=clock) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": "cid",
                "client_secret": "csecret",
                "scope": "as_account-us.acme audit_records.read",
            }
            issued = await http.post("/oauth/token", data=form)
            assert issued.status_code == 200
            body = issued.json()
            assert body["token_type"] == "bearer" and body["expires_in"] == 600
            assert body["scope"] == form["scope"]
            bearer = {"Authorization": f"Bearer {body['access_token']}"}
            assert (await http.get("/audit/records", headers=bearer)).status_code == 200
            clock.advance(seconds=600)
            expired = await http.get("/audit/records", headers=bearer)
            assert expired.status_code == 401 and expired.json()["error"]["code"] == 2006

            wrong = await http.post("/oauth/token", data=dict(form, client_secret="nope"))
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
            grant = await http.post("/oauth/token", data=dict(form, grant_type="password"))
            assert grant.status_code == 400
            unscoped = await http.post("/oauth/token", data=dict(form, scope="users.read"))
            token = unscoped.json()["access_token"]
            denied = await http.get("/audit/records", headers={"Authorization": f"Bearer {token}"})
            assert denied.status_code == 403
        assert all(body["access_token"] not in json.dumps(e.to_json()) for e in sim.requests)


# --------------------------------------------------------------------------- admin API


async def test_admin_api_round_trip(sim, client, clock):
    async with httpx.AsyncClient(base_url=sim.base_url) as admin:
        generated = await admin.post(
            "/_sim/generate",
            json={"count": 40, "start": iso(NOW - timedelta(hours=3)), "end": iso(NOW), "seed": 3},
        )
        assert generated.json() == {"added": 40, "record_count": 40}
        extra = generate_records(2, start=NOW - timedelta(hours=1), end=NOW, seed=4)
        added = await admin.post("/_sim/records", json={"records": extra, "visible_after": 60})
        assert added.json()["record_count"] == 42
        stats = (await admin.get("/_sim/stats")).json()
        assert stats["record_count"] == 42 and stats["visible_record_count"] == 40
        assert (
            await admin.post("/_sim/tokens", json={"token": "t2", "state": "no_plan"})
        ).status_code == 200
        assert (
            await admin.post("/_sim/tokens", json={"token": "t2", "state": "bogus"})
        ).status_code == 400
        fault = await admin.post("/_sim/faults", json={"status": 503, "page": 1, "times": 1})
        assert fault.json() == {"faults_pending": 1}
        assert (await admin.post("/_sim/faults", json={"colour": 1})).status_code == 400

        assert (await client.get("/audit/records")).status_code == 503
        page = (await client.get("/audit/records")).json()
        assert len(page["records"]) == 40
        no_plan = await client.get("/audit/records", headers={"Authorization": "Token token=t2"})
        assert no_plan.status_code == 402

        log = (await admin.get("/_sim/requests")).json()["requests"]
        assert [e["status"] for e in log] == [503, 200, 402]
        assert log[0]["fault"] == "503" and log[0]["page"] == 1
        assert log[1]["path"] == "/audit/records" and log[1]["records"] == 40
        assert "Z" in log[0]["wall"] and isinstance(log[0]["monotonic"], float)
        await admin.delete("/_sim/requests")
        assert (await admin.get("/_sim/requests")).json() == {"requests": []}
        await admin.delete("/_sim/records")
        assert (await admin.get("/_sim/stats")).json()["record_count"] == 0


# --------------------------------------------------------------------------- thread


def test_simulator_thread_from_sync_code():
    records = generate_records(30, start=NOW - timedelta(hours=1), end=NOW, seed=5)
    with SimulatorThread(tokens={TOKEN: "ok"}, now=lambda: NOW) as sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.base_url)
        sim.add_records(records)
        with httpx.Client(base_url=sim.base_url, headers=AUTH) as http:
            assert len(http.get("/audit/records").json()["records"]) == 30
            sim.set_token_state(TOKEN, "revoked")
            assert http.get("/audit/records").status_code == 401
            sim.restore_token(TOKEN)
            sim.add_fault(FaultRule(status=504))
            assert http.get("/audit/records").status_code == 504
        assert sim.record_count == 30
        assert [e.status for e in sim.requests] == [200, 401, 504]
        sim.clear_requests()
        assert sim.requests == []
        url = sim.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/audit/records", timeout=1)


# --------------------------------------------------------------------------- data


def test_generate_records_is_deterministic_and_valid():
    start, end = NOW - timedelta(days=3), NOW
    one = generate_records(1500, start=start, end=end, seed=42)
    two = generate_records(1500, start=start, end=end, seed=42)
    assert json.dumps(one) == json.dumps(two)
    assert json.dumps(generate_records(1500, start=start, end=end, seed=43)) != json.dumps(one)
    assert len({r["id"] for r in one}) == 1500

    for record in one:
        view = msgspec.json.decode(json.dumps(record).encode(), type=RecordSchema)
        assert start <= view.execution_time < end
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", view.id)
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{3}|\d{6})Z", record["execution_time"]
        )
        for f in (record.get("details") or {}).get("fields") or []:
            if record["action"] == "create":
                assert "value" in f
            if record["action"] == "delete":
                assert "before_value" in f and "value" not in f
            if record["action"] == "update":
                assert "before_value" in f and "value" in f

    dashed = [r for r in one if r["id"].startswith("-")]
    assert 0.03 < len(dashed) / len(one) < 0.15
    groups = Counter(
        (r["execution_time"], (r.get("execution_context") or {}).get("request_id")) for r in one
    )
    assert any(2 <= n <= 5 for n in groups.values())
    tied = Counter(r["execution_time"] for r in one)
    assert max(tied.values()) <= 5 and sum(n for n in tied.values() if n > 1) > 150
    assert any(len(r["execution_time"]) == len("2026-01-01T00:00:00.000000Z") for r in one)

    text = json.dumps(one, ensure_ascii=False)
    assert "x_future_field" in text and "pre-auth" in text and "🚒" in text
    assert {r["root_resource"]["type"] for r in one} == {
        "user_reference",
        "team_reference",
        "service_reference",
        "schedule_reference",
        "escalation_policy_reference",
        "ip_allow_list_reference",
    }
    assert {r["action"] for r in one} >= {"create", "update", "delete"}
    actor_types = {a["type"] for r in one for a in (r.get("actors") or [])}
    assert actor_types == {"user_reference", "api_key_reference", "app_reference"}
    assert any("actors" not in r for r in one) and any(r.get("actors", 1) is None for r in one)
    assert {r["method"]["type"] for r in one} == {
        "browser",
        "oauth",
        "api_token",
        "identity_provider",
        "other",
    }
    assert any(r["method"].get("truncated_token", 1) is None for r in one)
    contexts = [r.get("execution_context") for r in one]
    assert any(c and "remote_address" not in c for c in contexts)


def test_generate_records_tiny_window_and_edges():
    start = NOW
    ties = generate_records(7, start=start, end=start + timedelta(milliseconds=1), seed=4)
    assert {r["execution_time"] for r in ties} <= {"2026-03-10T12:00:00.000Z"} | {
        f"2026-03-10T12:00:00.000{us:03d}Z" for us in range(1000)
    }
    assert generate_records(0, start=start, end=start + timedelta(hours=1)) == []
    with pytest.raises(ValueError):
        generate_records(1, start=start, end=start)


def test_example_records_come_from_the_openapi_examples(tmp_path):
    examples = example_records()
    ids = {r["id"] for r in examples}
    assert {"PDRECORDID1_TEAM_CREATED", "Hf8-zEm", "PD_CREATE_USER"} <= ids
    assert len(examples) >= 20
    for record in examples:
        msgspec.json.decode(json.dumps(record).encode(), type=RecordSchema)
    fallback = example_records(tmp_path / "missing.json")
    assert [r["id"] for r in fallback] == ["PDRECORD_TEAM_CREATED"]


def test_shipped_examples_equal_the_openapi_documents_examples():
    from streamapp.devtools.simulator.data import OPENAPI_PATH

    assert OPENAPI_PATH.exists(), f"the API reference is expected at {OPENAPI_PATH}"
    assert example_records() == example_records(OPENAPI_PATH)


async def test_example_records_are_served(sim, client):
    sim.add_records(example_records())
    params = {"since": "2020-06-01T00:00:00Z", "until": "2020-07-01T00:00:00Z", "limit": 3}
    got, _ = await walk(client, **params)
    assert len(got) == 9  # the 2020-06-04 examples (deduplicated by id)
    keys = [(parse(r["execution_time"]), r["id"]) for r in got]
    assert keys == sorted(keys, reverse=True)

"""The PagerDuty client against httpx.MockTransport, with a fake clock: no server, no waiting."""

from __future__ import annotations

import asyncio
import json
import ssl
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import msgspec
import pytest

from streamapp.core.credentials import ApiKey, OAuthClient
from streamapp.core.errors import (
    AuditTrailUnavailable,
    AuthenticationFailed,
    BadRequest,
    ConnectFailed,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    ServerError,
    UnexpectedStatus,
)
from streamapp.core.models import Page
from streamapp.core.redact import Secret
from streamapp.pagerduty.auth import ApiKeyAuth, OAuthAuth, TokenProvider, make_auth
from streamapp.pagerduty.client import ACCEPT, PagerDutyClient
from streamapp.pagerduty.ratelimit import TRANSIT_MARGIN, Gates, RequestGate
from streamapp.pagerduty.retry import RetryPolicy

API_TOKEN = "y_NbAkKc66ryYTWUXYEu"
CLIENT_SECRET = "pdus+_0XBPWQQ_client_secret_value"
OAUTH_TOKEN = "pdus+_0XBPWQQ_access_token_one"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
UNTIL = datetime(2026, 1, 2, tzinfo=UTC)

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]
AsyncHandler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class FakeClock:
    """A monotonic clock that moves only when someone sleeps on it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


class Recorder:
    """Wraps a handler; remembers each request and the fake time it was sent at."""

    def __init__(self, handler: Handler, clock: FakeClock) -> None:
        self.handler = handler
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.clock.now)
        result = self.handler(request)
        if not isinstance(result, httpx.Response):
            result = await result
        # the client streams bodies: hand back an unread response, as a server would
        return httpx.Response(
            result.status_code, headers=result.headers, stream=httpx.ByteStream(result.content)
        )

    def params(self, index: int = -1) -> dict[str, list[str]]:
        return parse_qs(self.requests[index].url.query.decode(), keep_blank_values=True)


def record(id_: str = "kRm-tyP", at: str = "2026-01-01T10:00:00.123Z") -> dict[str, Any]:
    return {
        "id": id_,
        "execution_time": at,
        "method": {"type": "api_token", "truncated_token": "abcd"},
        "root_resource": {"id": "PXYZ", "type": "user_reference"},
        "action": "update",
    }


def page_response(
    records: list[dict[str, Any]] | None = None,
    next_cursor: str | None = None,
    limit: int = 100,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {
        "records": records if records is not None else [record()],
        "limit": limit,
        "next_cursor": next_cursor,
        "response_metadata": None,
    }
    return httpx.Response(200, json=body, headers=headers)


def error_response(
    status: int, message: str, code: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"error": {"message": message, "code": code, "errors": ["detail one"]}}
    return httpx.Response(status, json=body, headers=headers)


def make_client(
    handler: Handler,
    *,
    clock: FakeClock | None = None,
    auth: TokenProvider | None = None,
    gate: RequestGate | None = None,
    retry: RetryPolicy | None = None,
    base_url: str = "https://api.pagerduty.com",
) -> tuple[PagerDutyClient, Recorder, FakeClock]:
    clock = clock or FakeClock()
    recorder = Recorder(handler, clock)
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    client = PagerDutyClient(
        http,
        base_url=base_url,
        auth=auth or ApiKeyAuth(ApiKey(Secret(API_TOKEN))),
        gate=gate or RequestGate(clock=clock, sleep=clock.sleep),
        retry=retry or RetryPolicy(random=lambda: 0.5),
        sleep=clock.sleep,
        clock=clock,
    )
    return client, recorder, clock


def sequence(*responses: httpx.Response | Exception) -> Handler:
    """A handler answering with ``responses`` in turn, then repeating the last one."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def full_text(exc: BaseException) -> str:
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


# --- request shape ---------------------------------------------------------------------------


async def test_accept_header() -> None:
    client, rec, _ = make_client(sequence(page_response()))
    await client.get_page(since=SINCE, until=UNTIL)
    assert rec.requests[0].headers["Accept"] == ACCEPT == "application/vnd.pagerduty+json;version=2"
    assert rec.requests[0].url.path == "/audit/records"


async def test_bearer_vs_token_header() -> None:
    client, rec, _ = make_client(sequence(page_response()))
    await client.get_page(since=SINCE, until=UNTIL)
    assert rec.requests[0].headers["Authorization"] == f"Token token={API_TOKEN}"

    clock = FakeClock()
    handler = oauth_handler(sequence(page_response()))
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    oauth = OAuthAuth(oauth_creds(), http, clock=clock)
    client, rec, _ = make_client(handler, clock=clock, auth=oauth)
    await client.get_page(since=SINCE, until=UNTIL)
    assert rec.requests[-1].headers["Authorization"] == f"Bearer {OAUTH_TOKEN}"


async def test_query_has_limit_and_millisecond_utc_window() -> None:
    client, rec, _ = make_client(sequence(page_response()))
    since = datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=timezone_plus_2())
    await client.get_page(since=since, until=since + timedelta(hours=1), limit=50)
    assert rec.params() == {
        "limit": ["50"],
        "since": ["2026-01-01T08:00:00.123Z"],
        "until": ["2026-01-01T09:00:00.123Z"],
    }


def timezone_plus_2() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


async def test_limit_echo_is_information_only() -> None:
    client, rec, _ = make_client(
        sequence(page_response(next_cursor="c1", limit=25), page_response(limit=25))
    )
    pages = [page async for page in client.pages(since=SINCE, until=UNTIL, limit=100)]
    assert [p.limit for p in pages] == [25, 25]
    assert [rec.params(i)["limit"] for i in range(2)] == [["100"], ["100"]]


async def test_http_only_for_loopback() -> None:
    for url in (
        "http://127.0.0.1:8080",
        "http://localhost:9000/",
        "http://[::1]:1",
        "https://api.eu.pagerduty.com",
    ):
        make_client(sequence(page_response()), base_url=url)
    for url in (
        "http://api.pagerduty.com",
        "http://10.0.0.1",
        "ftp://api.pagerduty.com",
        "https://user:pw@api.pagerduty.com",
        "api.pagerduty.com",
    ):
        with pytest.raises(ValueError):
            make_client(sequence(page_response()), base_url=url)


async def test_http_loopback_url_is_used_without_trailing_slash() -> None:
    client, rec, _ = make_client(sequence(page_response()), base_url="http://127.0.0.1:8080/")
    await client.get_page(since=SINCE, until=UNTIL)
    assert str(rec.requests[0].url).startswith("http://127.0.0.1:8080/audit/records?")


async def test_window_over_31_days_refused() -> None:
    client, rec, _ = make_client(sequence(page_response()))
    with pytest.raises(ValueError, match="31 days"):
        await client.get_page(since=SINCE, until=SINCE + timedelta(days=31, milliseconds=1))
    with pytest.raises(ValueError, match="31 days"):
        async for _ in client.pages(since=SINCE, until=SINCE + timedelta(days=32)):
            pass
    assert rec.requests == []
    await client.get_page(since=SINCE, until=SINCE + timedelta(days=31))  # exactly 31: fine
    assert len(rec.requests) == 1


async def test_since_not_before_until_refused() -> None:
    client, rec, _ = make_client(sequence(page_response()))
    with pytest.raises(ValueError, match="before"):
        await client.get_page(since=UNTIL, until=UNTIL)
    with pytest.raises(ValueError, match="before"):
        await client.get_page(since=UNTIL, until=SINCE)
    with pytest.raises(ValueError, match="limit"):
        await client.get_page(since=SINCE, until=UNTIL, limit=0)
    assert rec.requests == []


# --- paging ---------------------------------------------------------------------------------


async def test_cursor_is_resent_with_original_window() -> None:
    client, rec, _ = make_client(
        sequence(
            page_response(next_cursor="1631124211900-qc1K"),
            page_response(next_cursor="1631124211000-abc"),
            page_response(next_cursor=None),
        )
    )
    pages = [page async for page in client.pages(since=SINCE, until=UNTIL)]
    assert len(pages) == 3
    window = {"since": ["2026-01-01T00:00:00.000Z"], "until": ["2026-01-02T00:00:00.000Z"]}
    for index, cursor in enumerate([None, "1631124211900-qc1K", "1631124211000-abc"]):
        params = rec.params(index)
        assert {k: params[k] for k in ("since", "until")} == window
        assert params.get("cursor") == (None if cursor is None else [cursor])


@pytest.mark.parametrize("last_cursor", [None, ""])
async def test_last_page_null_cursor_ends_walk(last_cursor: str | None) -> None:
    client, rec, _ = make_client(
        sequence(page_response(next_cursor="c1"), page_response(next_cursor=last_cursor))
    )
    pages = [page async for page in client.pages(since=SINCE, until=UNTIL)]
    assert [p.next_cursor for p in pages] == ["c1", last_cursor]
    assert len(rec.requests) == 2


async def test_repeating_cursor_is_protocol_error() -> None:
    client, rec, _ = make_client(
        sequence(
            page_response(next_cursor="a"),
            page_response(next_cursor="b"),
            page_response(next_cursor="a"),
        )
    )
    seen: list[Page] = []
    with pytest.raises(ProtocolError, match="already returned"):
        async for page in client.pages(since=SINCE, until=UNTIL):
            seen.append(page)
    assert len(seen) == 3 and len(rec.requests) == 3


# --- decoding -------------------------------------------------------------------------------


async def test_raw_bytes_kept_exactly() -> None:
    first = (
        b'{ "id" :"-hsCcLItpyf07FVWE0TPsY7Lbpjv9l5Jh75Igf_HjMI",\n\t"execution_time":'
        b'"2026-01-01T10:00:00.123456Z", "brand_new_field": {"x": [1, 2.50, null]},'
        b' "action":"update" , "method":{"type":"browser"},"root_resource":{}}'
    )
    second = b'{"id":"kRm-tyP","execution_time":"2026-01-01T09:00:00Z","details":null}'
    body = b'{"records": [ ' + first + b" ,\n  " + second + b'],"limit":100,"next_cursor":null}'
    client, _, _ = make_client(sequence(httpx.Response(200, content=body)))
    page = await client.get_page(since=SINCE, until=UNTIL)
    assert [bytes(r.raw) for r in page.records] == [first, second]
    assert page.records[0].id == "-hsCcLItpyf07FVWE0TPsY7Lbpjv9l5Jh75Igf_HjMI"
    assert page.records[0].execution_time == datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert page.records[1].execution_time == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert page.malformed == [] and page.status == 200 and page.request_count == 1


async def test_malformed_record_goes_to_malformed_not_failure() -> None:
    records: list[Any] = [
        record("good"),
        {"execution_time": "2026-01-01T10:00:00Z"},
        {"id": "no-time"},
        {"id": "bad-time", "execution_time": "yesterday"},
        {"id": "", "execution_time": "2026-01-01T10:00:00Z"},
        None,
        42,
    ]
    client, _, _ = make_client(sequence(page_response(records)))
    page = await client.get_page(since=SINCE, until=UNTIL)
    assert [r.id for r in page.records] == ["good"]
    assert len(page.malformed) == 6
    assert [json.loads(m.raw) for m in page.malformed] == records[1:]
    for bad in page.malformed:
        assert bad.reason and "\n" not in bad.reason
    assert "id" in page.malformed[0].reason and "execution_time" in page.malformed[1].reason


@pytest.mark.parametrize(
    "body",
    [
        b"<html>maintenance</html>",
        b'{"limit": 100}',
        b'{"records": null}',
        b'{"records": [], "next_cursor": 7}',
        b"",
    ],
)
async def test_unreadable_body_is_protocol_error_and_retried(body: bytes) -> None:
    client, rec, _ = make_client(sequence(httpx.Response(200, content=body), page_response()))
    page = await client.get_page(since=SINCE, until=UNTIL)
    assert page.request_count == 2 and len(rec.requests) == 2

    client, rec, _ = make_client(
        sequence(httpx.Response(200, content=body)),
        retry=RetryPolicy(max_attempts=3, random=lambda: 0.5),
    )
    with pytest.raises(ProtocolError, match="not an audit-records page"):
        await client.get_page(since=SINCE, until=UNTIL)
    assert len(rec.requests) == 3


# --- retries and rate limits ------------------------------------------------------------------


async def test_429_waits_ratelimit_reset_before_next_request() -> None:
    client, rec, clock = make_client(
        sequence(
            error_response(429, "Rate Limit Exceeded", 2020, headers={"ratelimit-reset": "7"}),
            page_response(),
        )
    )
    start = clock.now
    page = await client.get_page(since=SINCE, until=UNTIL)
    assert rec.times == [start, start + 7]
    assert clock.sleeps == [7]
    assert page.request_count == 2


async def test_429_blocks_every_client_sharing_the_gate() -> None:
    clock = FakeClock()
    gate = RequestGate(clock=clock, sleep=clock.sleep)
    once = RetryPolicy(max_attempts=1)
    a, _, _ = make_client(
        sequence(httpx.Response(429, headers={"ratelimit-reset": "12.5"})),
        clock=clock,
        gate=gate,
        retry=once,
    )
    b, rec_b, _ = make_client(sequence(page_response()), clock=clock, gate=gate)
    start = clock.now
    with pytest.raises(RateLimited) as info:
        await a.get_page(since=SINCE, until=UNTIL)
    assert info.value.reset_after == 12.5 and "12.5 s" in str(info.value)
    await b.get_page(since=SINCE, until=UNTIL)
    assert rec_b.times == [start + 12.5]


async def test_429_without_headers_uses_capped_backoff() -> None:
    client, rec, clock = make_client(
        sequence(httpx.Response(429)), retry=RetryPolicy(max_attempts=9, random=lambda: 0.0)
    )
    with pytest.raises(RateLimited) as info:
        await client.get_page(since=SINCE, until=UNTIL)
    # no jitter on the fallback: a throttled client never comes back sooner
    assert clock.sleeps == [1, 2, 4, 8, 16, 32, 60, 60]
    assert len(rec.requests) == 9
    assert info.value.reset_after is None and "no ratelimit-reset" in str(info.value)


async def test_429_with_non_numeric_reset_uses_fallback() -> None:
    client, _, clock = make_client(
        sequence(httpx.Response(429, headers={"ratelimit-reset": "soon"}), page_response())
    )
    await client.get_page(since=SINCE, until=UNTIL)
    assert clock.sleeps == [1]


async def test_spent_budget_holds_the_gate_until_reset() -> None:
    spent = {"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": "20"}
    client, rec, clock = make_client(sequence(page_response(headers=spent), page_response()))
    start = clock.now
    await client.get_page(since=SINCE, until=UNTIL)
    await client.get_page(since=SINCE, until=UNTIL)
    assert rec.times == [start, start + 20]


async def test_5xx_retried_with_jittered_backoff_then_gives_up() -> None:
    client, rec, clock = make_client(
        sequence(error_response(503, "Service Unavailable", 5003)),
        retry=RetryPolicy(random=lambda: 0.5),
    )
    with pytest.raises(ServerError) as info:
        await client.get_page(since=SINCE, until=UNTIL)
    assert len(rec.requests) == 6
    assert clock.sleeps == [0.25, 0.5, 1.0, 2.0, 4.0]  # half of the ceilings 0.5, 1, 2, 4, 8
    assert "503" in str(info.value) and "Service Unavailable" in str(info.value)
    assert info.value.status == 503 and info.value.code == 5003


async def test_backoff_is_capped_at_max_delay() -> None:
    client, _, clock = make_client(
        sequence(httpx.Response(500)), retry=RetryPolicy(max_attempts=10, random=lambda: 1.0)
    )
    with pytest.raises(ServerError):
        await client.get_page(since=SINCE, until=UNTIL)
    assert clock.sleeps == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


async def test_5xx_then_success_counts_requests() -> None:
    client, _, _ = make_client(sequence(httpx.Response(502), httpx.Response(500), page_response()))
    page = await client.get_page(since=SINCE, until=UNTIL)
    assert page.request_count == 3 and len(page.records) == 1


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(random=lambda: 0.25)
    assert policy.delay_for(1, ServerError("x", status=500)) == 0.125
    assert policy.delay_for(3, ConnectFailed("x")) == 0.5
    assert policy.delay_for(50, ServerError("x", status=500)) == 7.5
    assert policy.delay_for(2, RateLimited("x", reset_after=3.0)) == 3.0
    assert policy.delay_for(2, RateLimited("x")) == 2.0
    assert policy.delay_for(10_000, RateLimited("x")) == 60.0
    assert RetryPolicy(jitter=False).delay_for(2, ServerError("x", status=500)) == 1.0
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


async def test_timeout_maps_to_request_timeout() -> None:
    client, rec, clock = make_client(
        sequence(httpx.ReadTimeout("timed out")),
        retry=RetryPolicy(max_attempts=2, random=lambda: 1),
    )
    with pytest.raises(RequestTimeout, match=r"api\.pagerduty\.com did not answer in time"):
        await client.get_page(since=SINCE, until=UNTIL)
    assert len(rec.requests) == 2 and clock.sleeps == [0.5]


async def test_connect_error_maps_to_connect_failed_unreachable() -> None:
    client, _, _ = make_client(
        sequence(
            httpx.ConnectError("[Errno -2] Name or service not known"),
            httpx.RemoteProtocolError("Server disconnected"),
            page_response(),
        )
    )
    assert (await client.get_page(since=SINCE, until=UNTIL)).request_count == 3

    client, _, _ = make_client(
        sequence(httpx.ConnectError("[Errno 111] Connection refused")),
        retry=RetryPolicy(max_attempts=1),
    )
    with pytest.raises(ConnectFailed, match="unreachable") as info:
        await client.get_page(since=SINCE, until=UNTIL)
    assert "TLS" not in str(info.value) and "Connection refused" in str(info.value)


async def test_ssl_error_maps_to_connect_failed_tls() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed: self-signed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("handshake failed") from exc

    client, _, _ = make_client(handler, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ConnectFailed, match="TLS") as info:
        await client.get_page(since=SINCE, until=UNTIL)
    assert info.value.__cause__ is None and info.value.__context__ is None


async def test_transport_error_never_chains_or_echoes_token() -> None:
    client, _, _ = make_client(
        sequence(httpx.ConnectError(f"proxy said {API_TOKEN}")), retry=RetryPolicy(max_attempts=1)
    )
    with pytest.raises(ConnectFailed) as info:
        await client.get_page(since=SINCE, until=UNTIL)
    assert API_TOKEN not in full_text(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


# --- error statuses -------------------------------------------------------------------------


async def test_401_message_names_region_not_token() -> None:
    client, rec, _ = make_client(sequence(error_response(401, "Unauthorized", 2006)))
    with pytest.raises(AuthenticationFailed) as info:
        await client.get_page(since=SINCE, until=UNTIL)
    exc = info.value
    message = str(exc)
    assert "api.pagerduty.com" in message and "https://api.eu.pagerduty.com" in message
    assert "wrong or revoked token" in message and "code 2006" in message
    assert "\n" not in message
    assert API_TOKEN not in full_text(exc)
    assert exc.__cause__ is None and exc.__context__ is None
    assert len(rec.requests) == 1  # an API key is not retried


async def test_401_on_eu_host_names_that_host() -> None:
    client, _, _ = make_client(
        sequence(httpx.Response(401)), base_url="https://api.eu.pagerduty.com"
    )
    with pytest.raises(AuthenticationFailed, match=r"PagerDuty at api\.eu\.pagerduty\.com"):
        await client.get_page(since=SINCE, until=UNTIL)


async def test_402_message_names_audit_trail_plan() -> None:
    client, rec, _ = make_client(sequence(error_response(402, "Payment Required", 2012)))
    with pytest.raises(AuditTrailUnavailable, match="plan lacks the Audit Trail feature") as info:
        await client.get_page(since=SINCE, until=UNTIL)
    assert info.value.status == 402 and info.value.code == 2012 and len(rec.requests) == 1


async def test_403_message_names_admin_or_scope() -> None:
    client, rec, _ = make_client(sequence(error_response(403, "Access Denied", 2010)))
    with pytest.raises(PermissionDenied) as info:
        await client.get_page(since=SINCE, until=UNTIL)
    assert "admin/owner" in str(info.value) and "audit_records.read" in str(info.value)
    assert "Access Denied" in str(info.value) and len(rec.requests) == 1


async def test_400_is_bad_request_with_pagerduty_message_not_retried() -> None:
    client, rec, _ = make_client(sequence(error_response(400, "Invalid Input Provided", 2001)))
    with pytest.raises(BadRequest, match="Invalid Input Provided, code 2001: detail one"):
        await client.get_page(since=SINCE, until=UNTIL)
    assert len(rec.requests) == 1


async def test_other_status_is_unexpected_and_redirect_not_followed() -> None:
    client, rec, _ = make_client(
        sequence(httpx.Response(302, headers={"location": "https://evil.example/x"}))
    )
    with pytest.raises(UnexpectedStatus, match=r"302 to evil\.example"):
        await client.get_page(since=SINCE, until=UNTIL)
    assert len(rec.requests) == 1


async def test_probe_sends_limit_1_and_does_not_retry_4xx() -> None:
    client, rec, _ = make_client(sequence(page_response()))
    page = await client.probe()
    assert rec.params() == {"limit": ["1"]} and page.request_count == 1

    client, rec, _ = make_client(sequence(httpx.Response(429, headers={"ratelimit-reset": "5"})))
    with pytest.raises(RateLimited):
        await client.probe()
    assert len(rec.requests) == 1

    client, rec, _ = make_client(sequence(httpx.Response(503), page_response()))
    assert (await client.probe()).request_count == 2


# --- OAuth ----------------------------------------------------------------------------------


def oauth_creds() -> OAuthClient:
    return OAuthClient(
        client_id="my-client-id", client_secret=Secret(CLIENT_SECRET), subdomain="acme", region="eu"
    )


class TokenEndpoint:
    def __init__(self, *tokens: str, expires_in: int = 86400) -> None:
        self.tokens = list(tokens) or [OAUTH_TOKEN]
        self.expires_in = expires_in
        self.forms: list[dict[str, list[str]]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(parse_qs(request.content.decode()))
        await asyncio.sleep(0)  # let concurrent callers pile up
        token = self.tokens[min(len(self.forms), len(self.tokens)) - 1]
        return httpx.Response(
            200,
            json={
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.expires_in,
                "scope": "x",
            },
        )


def oauth_handler(api: Handler, token_endpoint: Handler | None = None) -> AsyncHandler:
    """Routes token requests to ``token_endpoint`` and the rest to ``api``."""
    endpoint = token_endpoint or TokenEndpoint()

    async def handler(request: httpx.Request) -> httpx.Response:
        target = endpoint if request.url.host == "identity.pagerduty.com" else api
        result = target(request)
        return result if isinstance(result, httpx.Response) else await result

    return handler


async def test_oauth_grant_sends_client_credentials_and_scope() -> None:
    endpoint = TokenEndpoint()
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    auth = make_auth(oauth_creds(), http)
    assert isinstance(auth, OAuthAuth)
    assert await auth.authorization() == f"Bearer {OAUTH_TOKEN}"
    assert endpoint.forms == [
        {
            "grant_type": ["client_credentials"],
            "client_id": ["my-client-id"],
            "client_secret": [CLIENT_SECRET],
            "scope": ["as_account-eu.acme audit_records.read"],
        }
    ]
    assert CLIENT_SECRET not in repr(auth) and OAUTH_TOKEN not in repr(auth)
    assert isinstance(make_auth(ApiKey(Secret(API_TOKEN)), http), ApiKeyAuth)


async def test_oauth_token_refreshed_before_expiry() -> None:
    clock = FakeClock()
    endpoint = TokenEndpoint("first", "second")
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    auth = OAuthAuth(oauth_creds(), http, clock=clock, refresh_margin=300)
    assert await auth.authorization() == "Bearer first"
    clock.now += 86400 - 301
    assert await auth.authorization() == "Bearer first"
    clock.now += 2  # now inside the 300 s margin before expiry
    assert await auth.authorization() == "Bearer second"
    assert len(endpoint.forms) == 2


async def test_oauth_concurrent_callers_share_one_refresh() -> None:
    endpoint = TokenEndpoint()
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    auth = OAuthAuth(oauth_creds(), http, clock=FakeClock())
    headers = await asyncio.gather(*(auth.authorization() for _ in range(5)))
    assert set(headers) == {f"Bearer {OAUTH_TOKEN}"} and len(endpoint.forms) == 1


async def test_oauth_401_invalidates_once() -> None:
    clock = FakeClock()
    # distinctive values: the traceback also holds file paths, which may contain plain words
    endpoint = TokenEndpoint("stale-b7Qx2", "fresh-Kp9w4")
    handler = oauth_handler(sequence(httpx.Response(401)), endpoint)
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client, rec, _ = make_client(
        handler, clock=clock, auth=OAuthAuth(oauth_creds(), http, clock=clock)
    )
    with pytest.raises(AuthenticationFailed) as info:
        await client.get_page(since=SINCE, until=UNTIL)
    assert [r.headers["Authorization"] for r in rec.requests] == [
        "Bearer stale-b7Qx2",
        "Bearer fresh-Kp9w4",
    ]
    assert len(endpoint.forms) == 2
    text = full_text(info.value)
    assert "stale-b7Qx2" not in text and "fresh-Kp9w4" not in text


async def test_oauth_401_then_fresh_token_succeeds() -> None:
    clock = FakeClock()
    endpoint = TokenEndpoint("stale", "fresh")
    handler = oauth_handler(sequence(httpx.Response(401), page_response()), endpoint)
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = OAuthAuth(oauth_creds(), http, clock=clock)
    client, _, _ = make_client(handler, clock=clock, auth=auth)
    page = await client.get_page(since=SINCE, until=UNTIL)
    assert page.request_count == 2 and clock.sleeps == []


async def test_oauth_token_endpoint_refusal_names_client_and_region() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            json={"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"},
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    auth = OAuthAuth(oauth_creds(), http)
    with pytest.raises(AuthenticationFailed) as info:
        await auth.authorization()
    message = str(info.value)
    assert "my-client-id" in message and "'acme'" in message and "'eu'" in message
    assert "invalid_client" in message and "identity.pagerduty.com" in message
    assert CLIENT_SECRET not in full_text(info.value)


async def test_oauth_token_endpoint_unreachable_is_transport_error() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("connect timed out")

    http = httpx.AsyncClient(transport=httpx.MockTransport(down))
    with pytest.raises(RequestTimeout, match=r"identity\.pagerduty\.com") as info:
        await OAuthAuth(oauth_creds(), http).authorization()
    assert info.value.__context__ is None


def test_oauth_token_url_must_be_https() -> None:
    creds = OAuthClient(
        client_id="c",
        client_secret=Secret(CLIENT_SECRET),
        subdomain="a",
        token_url="http://identity.example/oauth/token",
    )
    with pytest.raises(ValueError):
        OAuthAuth(creds, httpx.AsyncClient())


# --- the gate -------------------------------------------------------------------------------


async def test_gate_never_exceeds_960_per_minute() -> None:
    clock = FakeClock()
    gate = RequestGate(clock=clock, sleep=clock.sleep)
    starts: list[float] = []
    for _ in range(3000):
        async with gate.slot():
            starts.append(clock.now)
    assert starts[959] == starts[0]  # the first 960 go at once
    for i in range(len(starts) - 960):
        # a minute, and a margin for one request taking longer on the way than another
        assert starts[i + 960] - starts[i] >= 60.0 + TRANSIT_MARGIN
    assert starts[-1] - starts[0] <= 3 * (60.0 + TRANSIT_MARGIN)  # and no longer than needed


async def test_gate_serialises_requests() -> None:
    clock = FakeClock()
    gate = RequestGate(clock=clock, sleep=clock.sleep)
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return page_response()

    a, rec_a, _ = make_client(slow, clock=clock, gate=gate)
    b, rec_b, _ = make_client(slow, clock=clock, gate=gate)
    await asyncio.gather(*(c.get_page(since=SINCE, until=UNTIL) for c in (a, b, a, b)))
    assert peak == 1 and len(rec_a.requests) + len(rec_b.requests) == 4


async def test_gate_block_until_holds_every_slot() -> None:
    clock = FakeClock()
    gate = RequestGate(clock=clock, sleep=clock.sleep)
    gate.block_until(clock.now + 30)
    gate.block_until(clock.now + 10)  # an earlier deadline does not shorten the block
    async with gate.slot():
        assert clock.now == 1030


def test_gates_share_one_gate_per_fingerprint() -> None:
    key = ApiKeyAuth(ApiKey(Secret(API_TOKEN)))
    other = ApiKeyAuth(ApiKey(Secret("another-token-value")))
    gates = Gates()
    assert gates.for_token(key.fingerprint) is gates.for_token(key.fingerprint)
    assert gates.for_token(key.fingerprint) is not gates.for_token(other.fingerprint)
    assert API_TOKEN not in key.fingerprint


def test_page_is_a_frozen_msgspec_struct() -> None:
    page = Page(records=[], malformed=[], next_cursor=None, limit=1, status=200, request_count=1)
    with pytest.raises(AttributeError):
        page.status = 500  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(page), type=Page) == page

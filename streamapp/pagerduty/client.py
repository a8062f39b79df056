"""``GET /audit/records``: pages of raw records, retried, rate-limited, with actionable errors.

The client knows nothing of checkpoints or Kafka. It hands out pages whose records keep
their exact bytes (``msgspec.Raw``) beside the id and time the collector needs; a record it
cannot key (no ``id`` / ``execution_time``, not an object) is put aside as ``Malformed``
instead of failing the page, for a dead-letter topic.

Errors are those of ``streamapp.core.errors``; their messages are one line, name the host (never
the token), and add PagerDuty's own message and code when it sent one. No exception of the
HTTP layer is chained to them: those hold the request, and the request holds the token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from streamapp.core.errors import (
    ApiError,
    AuditTrailUnavailable,
    AuthenticationFailed,
    BadRequest,
    PagerDutyError,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    ServerError,
    UnexpectedStatus,
)
from streamapp.core.models import AuditPage, PolledRecord, RecordKey, as_utc, rfc3339
from streamapp.pagerduty.auth import TokenProvider
from streamapp.pagerduty.ratelimit import RequestGate, gate_for, parse_reset
from streamapp.pagerduty.retry import RetryPolicy, one_line, transport_error
from streamapp.pagerduty.urls import EU_API_URL, US_API_URL, check_api_url

ACCEPT = "application/vnd.pagerduty+json;version=2"
#: PagerDuty refuses a wider window with 400
MAX_WINDOW = timedelta(days=31)
AUDIT_RECORDS_PATH = "/audit/records"


class Malformed(msgspec.Struct, kw_only=True, frozen=True):
    """A record of a page that cannot be keyed: its exact bytes and why (one line)."""

    raw: bytes
    reason: str


class Page(msgspec.Struct, kw_only=True, frozen=True):
    records: list[PolledRecord]
    malformed: list[Malformed]
    #: None on the last page
    next_cursor: str | None
    #: the page size PagerDuty says it used (information only)
    limit: int | None
    status: int
    #: HTTP requests this page took, retries included
    request_count: int


_PAGE = msgspec.json.Decoder(AuditPage)
_KEY = msgspec.json.Decoder(RecordKey)
_ANY = msgspec.json.Decoder()

Params = Sequence[tuple[str, str]]


class PagerDutyClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        auth: TokenProvider,
        gate: RequestGate | None = None,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 30.0,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self._base_url = check_api_url(base_url)
        #: told of every attempt's outcome: the HTTP status, or the transport error's kind
        self._on_answer = on_answer
        host = urlsplit(self._base_url).hostname or self._base_url
        self._what = f"PagerDuty at {host}"
        self._url = self._base_url + AUDIT_RECORDS_PATH
        self._http = http
        self._auth = auth
        self._gate = gate if gate is not None else gate_for(auth.fingerprint)
        self._retry = retry
        self._sleep = sleep
        self._clock = clock
        self._timeout = timeout

    @property
    def base_url(self) -> str:
        return self._base_url

    def __repr__(self) -> str:
        return f"PagerDutyClient(base_url={self._base_url!r})"

    # --- public ---------------------------------------------------------------------------

    async def get_page(
        self,
        *,
        since: datetime,
        until: datetime,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """One page of ``[since, until)``, retried on 429, 5xx, transport and protocol errors."""
        params = _page_params(since, until, cursor, limit)
        return await self._request(params, probe=False)

    async def pages(
        self, *, since: datetime, until: datetime, limit: int = 100
    ) -> AsyncIterator[Page]:
        """Every page of the window, following ``next_cursor`` to the last page.

        The original ``since``/``until`` go with every cursor. A cursor that comes back a
        second time would loop forever: ProtocolError.
        """
        _page_params(since, until, None, limit)  # refuse a bad window before any request
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.get_page(since=since, until=until, cursor=cursor, limit=limit)
            yield page
            if not page.next_cursor:
                return
            if page.next_cursor in seen:
                raise ProtocolError(
                    f"{self._what} returned a next_cursor it had already returned in this"
                    " walk; stopping instead of looping"
                )
            seen.add(page.next_cursor)
            cursor = page.next_cursor

    async def probe(self) -> Page:
        """``GET /audit/records?limit=1`` to verify settings: a 4xx is raised at once."""
        return await self._request([("limit", "1")], probe=True)

    # --- one page, retried ----------------------------------------------------------------

    async def _request(self, params: Params, *, probe: bool) -> Page:
        retry = self._retry
        attempt = 0
        reauthenticated = False
        while True:
            attempt += 1
            authorization: str | None = None
            try:
                authorization = await self._auth.authorization()
                response = await self._send(params, authorization)
                return self._read(response, authorization, attempt)
            except PagerDutyError as exc:
                failure = exc
            # decided outside the ``except`` so nothing gets chained to what is raised
            from_api = authorization is not None
            if (
                isinstance(failure, AuthenticationFailed)
                and authorization is not None
                and authorization.startswith("Bearer ")
                and not reauthenticated
                and not probe
            ):
                # a cached OAuth token may have been revoked early: fetch a new one, once
                self._auth.invalidate()
                reauthenticated = True
                continue
            delay: float | None = None
            if isinstance(failure, RateLimited):
                delay = retry.delay_for(attempt, failure)
                if from_api:  # every user of this token waits, not only this request
                    self._gate.block_until(self._clock() + delay)
            client_error = isinstance(failure, ApiError) and 400 <= failure.status < 500
            if not failure.retryable or attempt >= retry.max_attempts or (probe and client_error):
                raise failure
            if delay is None:
                delay = retry.delay_for(attempt, failure)
            await self._sleep(delay)

    async def _send(self, params: Params, authorization: str) -> httpx.Response:
        headers = {"Accept": ACCEPT, "Authorization": authorization}
        failure: PagerDutyError | None = None
        async with self._gate.slot():
            try:
                response = await self._http.get(
                    self._url,
                    params=list(params),
                    headers=headers,
                    timeout=self._timeout,
                    follow_redirects=False,  # never carry the token to another host
                )
            except (httpx.RequestError, OSError) as exc:
                failure = transport_error(exc, what=self._what, hide=_secrets(authorization))
        if self._on_answer is not None:
            self._on_answer(failure.kind if failure is not None else str(response.status_code))
        if failure is not None:
            raise failure
        return response

    def _read(self, response: httpx.Response, authorization: str, attempt: int) -> Page:
        status = response.status_code
        reset = parse_reset(response.headers)
        if reset is not None and response.headers.get("ratelimit-remaining", "").strip() == "0":
            # the budget is spent: hold every user of the token until the window resets
            self._gate.block_until(self._clock() + reset)
        if 200 <= status < 300:
            return self._decode(response.content, status, attempt)
        raise self._status_error(response, _secrets(authorization))

    def _decode(self, body: bytes, status: int, attempt: int) -> Page:
        failure: ProtocolError | None = None
        try:
            page = _PAGE.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            failure = ProtocolError(
                f"{self._what} answered {status} with a body that is not an audit-records page"
                f" ({one_line(str(exc))})"
            )
        if failure is not None:
            raise failure
        records: list[PolledRecord] = []
        malformed: list[Malformed] = []
        for raw in page.records:
            try:
                key = _KEY.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                malformed.append(Malformed(raw=bytes(raw), reason=one_line(str(exc))))
                continue
            if not key.id:
                malformed.append(Malformed(raw=bytes(raw), reason="record has an empty `id`"))
                continue
            records.append(
                PolledRecord(id=key.id, execution_time=as_utc(key.execution_time), raw=raw)
            )
        return Page(
            records=records,
            malformed=malformed,
            next_cursor=page.next_cursor,
            limit=page.limit,
            status=status,
            request_count=attempt,
        )

    # --- errors ---------------------------------------------------------------------------

    def _status_error(self, response: httpx.Response, hide: Sequence[str]) -> ApiError:
        status = response.status_code
        said, code = _pagerduty_says(response.content, hide)
        what = self._what
        if status == 400:
            return BadRequest(
                f"{what} refused the request as invalid (400){said}: since must be before"
                " until and at most 31 days earlier, and limit a positive number",
                status=status,
                code=code,
            )
        if status == 401:
            return AuthenticationFailed(
                f"{what} answered 401 Unauthorized{said}: wrong or revoked token, or wrong"
                f" region: an EU account needs {EU_API_URL}, a US account {US_API_URL}",
                status=status,
                code=code,
            )
        if status == 402:
            return AuditTrailUnavailable(
                f"{what} answered 402 Payment Required{said}: the account's plan lacks the"
                " Audit Trail feature (Business or Enterprise plans have it)",
                status=status,
                code=code,
            )
        if status == 403:
            return PermissionDenied(
                f"{what} answered 403 Forbidden{said}: the key needs account admin/owner"
                " rights, or the OAuth token the audit_records.read scope",
                status=status,
                code=code,
            )
        if status == 429:
            reset = parse_reset(response.headers)
            wait = (
                f"ratelimit-reset asks to wait {reset:g} s"
                if reset is not None
                else "no ratelimit-reset given, backing off"
            )
            return RateLimited(
                f"{what} rate-limited this token (429){said}; {wait}",
                status=status,
                code=code,
                reset_after=reset,
            )
        if status >= 500:
            return ServerError(
                f"{what} failed with {status}{said}; a transient server error, retried with"
                " backoff",
                status=status,
                code=code,
            )
        where = ""
        if 300 <= status < 400 and (location := response.headers.get("location")):
            where = f" to {urlsplit(location).hostname or 'a relative URL'} (not followed)"
        return UnexpectedStatus(
            f"{what} answered an unexpected {status}{where}{said}", status=status, code=code
        )


def _secrets(authorization: str) -> tuple[str, str]:
    token = authorization.removeprefix("Bearer ").removeprefix("Token token=")
    return authorization, token


def _pagerduty_says(body: bytes, hide: Sequence[str]) -> tuple[str, int | None]:
    """`` (PagerDuty: <message>, code <code>: <errors>)`` and the code, from an error body."""
    try:
        document: Any = _ANY.decode(body)
    except msgspec.DecodeError:
        return "", None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, str):
        return f" (PagerDuty: {one_line(error, hide=hide)})", None
    if not isinstance(error, dict):
        return "", None
    message = error.get("message")
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    details = [str(e) for e in error.get("errors") or () if isinstance(e, str | int | float)]
    parts = []
    if isinstance(message, str) and message:
        parts.append(message)
    if code is not None:
        parts.append(f"code {code}")
    text = ", ".join(parts)
    if details:
        text = f"{text}: {'; '.join(details)}" if text else "; ".join(details)
    if not text:
        return "", code
    return f" (PagerDuty: {one_line(text, hide=hide)})", code


def _to_millisecond(moment: datetime) -> datetime:
    moment = as_utc(moment)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _page_params(
    since: datetime, until: datetime, cursor: str | None, limit: int
) -> list[tuple[str, str]]:
    """Query parameters of one page; ValueError for a window PagerDuty would refuse."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    # sent with millisecond precision (the documented precision), so checked as sent
    start, end = _to_millisecond(since), _to_millisecond(until)
    if start >= end:
        raise ValueError(f"since ({rfc3339(start)}) must be before until ({rfc3339(end)})")
    if end - start > MAX_WINDOW:
        raise ValueError(
            f"window {rfc3339(start)} .. {rfc3339(end)} spans {end - start}; PagerDuty allows"
            " at most 31 days: walk it in smaller windows"
        )
    params = [("limit", str(limit)), ("since", rfc3339(start)), ("until", rfc3339(end))]
    if cursor is not None:
        params.append(("cursor", cursor))
    return params

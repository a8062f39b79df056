"""``GET /audit/records``: pages of raw records, retried, rate-limited, with actionable errors.

The client knows nothing of checkpoints or Kafka. It hands out pages whose records keep
their exact bytes (``msgspec.Raw``) beside the id and time the collector needs; a record it
cannot key (no ``id`` / ``execution_time``, not an object) is put aside as ``Malformed``
instead of failing the page, for a dead-letter topic.

Hostile or broken answers are bounded: every request has one deadline for all of it and a
cap on the body's size (``streamapp.pagerduty.body``); a record nested deeper than
``max_depth`` is put aside as malformed, and a page too deep for the decoder is split by an
iterative scanner so its other records still arrive; a window's walk stops after
``max_pages`` pages or a run of empty pages that each name a next one. A 429 asking to wait
longer than ``max_wait`` fails at once (``RateLimitWait``) instead of blocking for it.

Errors are those of ``streamapp.core.errors``; their messages are one line, name the host
(never the token), and add PagerDuty's own message and code when it sent one. No exception
of the HTTP layer is chained to them: those hold the request, and the request holds the
token.
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
    RateLimitWait,
    ServerError,
    UnexpectedStatus,
    WalkTooLong,
)
from streamapp.core.jsonscan import NotAPage, nesting_depth, split_page
from streamapp.core.models import (
    AuditPage,
    Malformed,
    Page,
    PolledRecord,
    RecordKey,
    as_utc,
    rfc3339,
)
from streamapp.core.redact import one_line
from streamapp.core.urls import EU_API_URL, US_API_URL, check_api_url
from streamapp.pagerduty.auth import TokenProvider
from streamapp.pagerduty.body import Answer, Limits, exchange
from streamapp.pagerduty.ratelimit import RequestGate, TokenPaused, parse_reset
from streamapp.pagerduty.retry import RetryPolicy

ACCEPT = "application/vnd.pagerduty+json;version=2"
#: PagerDuty refuses a wider window with 400
MAX_WINDOW = timedelta(days=31)
AUDIT_RECORDS_PATH = "/audit/records"
#: deepest nesting of arrays and objects a record may have (PagerDuty's records nest ~6)
DEFAULT_MAX_DEPTH = 64
#: empty pages in a row that each name a next page before the walk is given up
MAX_EMPTY_PAGES = 10
#: a body this large is decoded off the event loop
LARGE_BODY = 1024 * 1024


_PAGE = msgspec.json.Decoder(AuditPage)
_KEY = msgspec.json.Decoder(RecordKey)
_ANY = msgspec.json.Decoder()


class _IdOnly(msgspec.Struct):
    id: str


_ID = msgspec.json.Decoder(_IdOnly)

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
        max_response_bytes: int = 16 * 1024 * 1024,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_wait: float | None = None,
        on_pause: Callable[[str, float], None] | None = None,
    ) -> None:
        self._base_url = check_api_url(base_url)
        #: told (token fingerprint, epoch seconds) when PagerDuty asks the token to pause, so
        #: the pause can outlive this process
        self._on_pause = on_pause
        #: told of every attempt's outcome: the HTTP status, or the transport error's kind
        self._on_answer = on_answer
        host = urlsplit(self._base_url).hostname or self._base_url
        self._what = f"PagerDuty at {host}"
        self._url = self._base_url + AUDIT_RECORDS_PATH
        self._http = http
        self._auth = auth
        self._gate = gate if gate is not None else RequestGate()
        self._retry = retry
        self._sleep = sleep
        self._clock = clock
        self._timeout = timeout
        self._limits = Limits(timeout, max_response_bytes, max_response_bytes)
        self._max_depth = max_depth
        #: the longest pause (429 ``ratelimit-reset``) a request waits out; None = any
        self.max_wait = max_wait

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def gate(self) -> RequestGate:
        return self._gate

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
        self,
        *,
        since: datetime,
        until: datetime,
        limit: int = 100,
        max_pages: int | None = None,
    ) -> AsyncIterator[Page]:
        """Every page of the window, following ``next_cursor`` to the last page.

        The original ``since``/``until`` go with every cursor. A cursor that comes back a
        second time would loop forever: ProtocolError. More than ``max_pages`` pages (default:
        :func:`page_bound` of the window), or ``MAX_EMPTY_PAGES`` empty pages in a row that
        each name a next page: WalkTooLong.
        """
        _page_params(since, until, None, limit)  # refuse a bad window before any request
        bound = max_pages if max_pages is not None else page_bound(until - since, limit)
        cursor: str | None = None
        seen: set[str] = set()
        count = empty = 0
        while True:
            page = await self.get_page(since=since, until=until, cursor=cursor, limit=limit)
            count += 1
            empty = empty + 1 if not page.records and not page.malformed else 0
            yield page
            if not page.next_cursor:
                return
            if page.next_cursor in seen:
                raise ProtocolError(
                    f"{self._what} returned a next_cursor it had already returned in this"
                    " walk; stopping instead of looping"
                )
            if count >= bound or empty >= MAX_EMPTY_PAGES:
                what = (
                    f"{empty} empty pages in a row that each named a next page"
                    if empty >= MAX_EMPTY_PAGES
                    else f"more than {bound:,} pages for a window of {until - since}"
                    " (STREAMAPP_MAX_PAGES_PER_WINDOW)"
                )
                raise WalkTooLong(
                    f"{self._what} kept paging: {what}; the walk was stopped and the window"
                    " will be asked for again at the next poll"
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
                answer = await self._send(params, authorization)
                return await self._read(answer, authorization, attempt)
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
            if isinstance(failure, RateLimited) and not isinstance(failure, RateLimitWait):
                delay = retry.delay_for(attempt, failure)
                if from_api:  # every user of this token waits, not only this request
                    self._gate.block_until(self._clock() + delay)
                    if self._on_pause is not None and failure.reset_after is not None:
                        self._on_pause(self._auth.fingerprint, time.time() + delay)
            client_error = isinstance(failure, ApiError) and 400 <= failure.status < 500
            if not failure.retryable or attempt >= retry.max_attempts or (probe and client_error):
                raise failure
            if delay is not None and self.max_wait is not None and delay > self.max_wait:
                raise self._paused(delay)
            if delay is None:
                delay = retry.delay_for(attempt, failure)
            await self._sleep(delay)

    def _paused(self, seconds: float) -> RateLimitWait:
        return RateLimitWait(
            f"{self._what} asked this token to pause for {seconds:.0f} s (ratelimit-reset),"
            f" longer than the {self.max_wait:g} s a poll waits; no request is sent with it"
            " until then",
            reset_after=seconds,
        )

    async def _send(self, params: Params, authorization: str) -> Answer:
        headers = {"Accept": ACCEPT, "Authorization": authorization}
        failure: PagerDutyError | None = None
        try:
            async with self._gate.slot(max_block=self.max_wait):
                try:
                    answer = await exchange(
                        self._http,
                        self._url,
                        params=params,
                        headers=headers,
                        limits=self._limits,
                        what=self._what,
                        hide=_secrets(authorization),
                    )
                except PagerDutyError as exc:
                    failure = exc
        except TokenPaused as paused:
            failure = self._paused(paused.seconds)
            raise failure from None
        if self._on_answer is not None:
            self._on_answer(failure.kind if failure is not None else str(answer.status))
        if failure is not None:
            raise failure
        return answer

    async def _read(self, answer: Answer, authorization: str, attempt: int) -> Page:
        status = answer.status
        reset = parse_reset(answer.headers)
        if reset is not None and answer.headers.get("ratelimit-remaining", "").strip() == "0":
            # the budget is spent: hold every user of the token until the window resets
            self._gate.block_until(self._clock() + reset)
        if 200 <= status < 300:
            if len(answer.body) > LARGE_BODY:  # keep the loop answering while a big one decodes
                return await asyncio.to_thread(self._decode, answer.body, status, attempt)
            return self._decode(answer.body, status, attempt)
        raise self._status_error(answer, _secrets(authorization))

    def _decode(self, body: bytes, status: int, attempt: int) -> Page:
        failure: ProtocolError | None = None
        raws: list[bytes] | list[msgspec.Raw] = []
        ids: list[str | None] = []
        next_cursor: str | None = None
        page_limit: int | None = None
        try:
            page = _PAGE.decode(body)
            raws, next_cursor, page_limit = page.records, page.next_cursor, page.limit
        except RecursionError:
            # a record nests too deeply for the decoder: take the page apart without one
            try:
                split = split_page(body, max_depth=self._max_depth)
                raws, ids = split.records, split.ids
                next_cursor, page_limit = split.next_cursor, split.limit
            except NotAPage as exc:
                failure = self._not_a_page(status, str(exc))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            failure = self._not_a_page(status, one_line(str(exc)))
        if failure is not None:
            raise failure
        records: list[PolledRecord] = []
        malformed: list[Malformed] = []
        for index, raw in enumerate(raws):
            known_id = ids[index] if ids else None
            item = self._record(bytes(raw) if ids else raw, known_id)
            if isinstance(item, Malformed):
                malformed.append(item)
            else:
                records.append(item)
        return Page(
            records=records,
            malformed=malformed,
            next_cursor=next_cursor,
            limit=page_limit,
            status=status,
            request_count=attempt,
        )

    def _not_a_page(self, status: int, why: str) -> ProtocolError:
        return ProtocolError(
            f"{self._what} answered {status} with a body that is not an audit-records page ({why})"
        )

    def _record(self, raw: bytes | msgspec.Raw, known_id: str | None) -> PolledRecord | Malformed:
        """A record keyed by id and time, or put aside with why."""
        data = bytes(raw)
        if nesting_depth(data, self._max_depth) > self._max_depth:
            return Malformed(
                raw=data,
                reason=f"the record nests deeper than {self._max_depth} levels"
                " (STREAMAPP_MAX_JSON_DEPTH)",
                id=known_id or _id_of(data),
            )
        try:
            key = _KEY.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Malformed(raw=data, reason=one_line(str(exc)), id=known_id or _id_of(data))
        if not key.id:
            return Malformed(raw=data, reason="record has an empty `id`")
        raw_value = raw if isinstance(raw, msgspec.Raw) else msgspec.Raw(raw)
        return PolledRecord(id=key.id, execution_time=as_utc(key.execution_time), raw=raw_value)

    # --- errors ---------------------------------------------------------------------------

    def _status_error(self, response: Answer, hide: Sequence[str]) -> ApiError:
        status = response.status
        said, code = _pagerduty_says(response.body, hide)
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


def page_bound(span: timedelta, limit: int = 100) -> int:
    """The most pages a walk of a window of ``span`` may take.

    PagerDuty documents no maximum rate of audit records. A hundred records a second,
    sustained over the whole window, is ten times what a very busy account produces at its
    peak; that many pages plus a hundred is generous and still stops a server that pages
    for ever.
    """
    seconds = max(span.total_seconds(), 1.0)
    return int(seconds * 100 // max(limit, 1)) + 100


def _id_of(data: bytes) -> str | None:
    try:
        found = _ID.decode(data).id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return found or None


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

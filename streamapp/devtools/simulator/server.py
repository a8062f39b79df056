"""A fake PagerDuty Audit Records API over real HTTP (aiohttp.web on loopback).

See the package docstring (``streamapp.devtools.simulator``) for the behaviour and the admin API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import secrets
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from aiohttp import web

from streamapp.devtools.simulator.data import EPOCH, generate_records

__all__ = [
    "TOKEN_STATES",
    "FaultRule",
    "RequestLogEntry",
    "Simulator",
    "SimulatorThread",
    "error_body",
    "fingerprint",
]

AUDIT_PATH = "/audit/records"
OAUTH_PATH = "/oauth/token"
AUDIT_SCOPE = "audit_records.read"
MAX_WINDOW = timedelta(days=31)
TOKEN_STATES = ("ok", "revoked", "no_plan", "forbidden")

# PagerDuty error codes. 2001 (Invalid Input Provided), 2006 (Authentication failed), 2010
# (Access Denied), 2020 (rate limit) and 2100 (Not Found) are documented ones; for 402 the
# public docs give no audit-specific code, 2012 is a plausible pick (an "account cannot use
# this" code), not a confirmed one.
_STATUS_ERRORS: dict[int, tuple[str, int]] = {
    400: ("Invalid Input Provided", 2001),
    401: ("Invalid Credentials", 2006),
    402: ("Payment Required: the account's plan lacks the Audit Trail feature", 2012),
    403: ("Access Denied", 2010),
    404: ("Not Found", 2100),
    429: ("Rate Limit Exceeded", 2020),
    500: ("Internal Server Error", 2000),
}
_STATE_STATUS = {"revoked": 401, "no_plan": 402, "forbidden": 403}

_JSON = "application/json; charset=utf-8"
_CURSOR = re.compile(r"^(\d{1,16})-(.+)$", re.DOTALL)


def error_body(
    status: int, message: str | None = None, code: int | None = None, errors: Sequence[str] = ()
) -> dict[str, Any]:
    """PagerDuty's error body: ``{"error": {"message", "code", "errors"}}``."""
    default_message, default_code = _STATUS_ERRORS.get(status, ("Error", 2000))
    return {
        "error": {
            "message": message if message is not None else default_message,
            "code": code if code is not None else default_code,
            "errors": list(errors),
        }
    }


def fingerprint(token: str) -> str:
    """What the request log keeps of a token: the first 12 hex digits of its sha256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _real_now() -> datetime:
    return datetime.now(UTC)


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def _parse_time(text: str) -> datetime:
    """ISO 8601 with ``Z`` or an offset, any fraction; naive is UTC. ValueError otherwise."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass
class FaultRule:
    """A fault injected into ``GET /audit/records`` answers (rules are tried in order).

    * ``status``: answer with this status instead of the real answer. The body is ``body``
      (``None`` = empty; ``str``/``bytes`` sent as is; anything else as JSON, e.g.
      ``error_body(503)``) and the headers are exactly ``headers`` (``None`` = none beyond
      Content-Type: a "429 without headers"). No ratelimit headers unless given here.
    * ``delay``: seconds to wait before answering (alone: a slow but correct answer).
    * ``drop_connection``: close the connection without any answer.
    * ``invalid_json``: answer ``status`` (default 200) with a truncated JSON body.
    * ``page``: only the k-th page of a walk (1 = no cursor); ``None`` = any request.
    * ``times``: how many requests the rule applies to; ``None`` = forever.
    """

    status: int | None = None
    times: int | None = 1
    page: int | None = None
    delay: float = 0.0
    headers: Mapping[str, str] | None = None
    body: Any = None
    drop_connection: bool = False
    invalid_json: bool = False
    path: str = AUDIT_PATH

    def describe(self) -> str:
        parts = []
        if self.drop_connection:
            parts.append("drop")
        if self.invalid_json:
            parts.append("invalid_json")
        if self.status is not None:
            parts.append(str(self.status))
        if self.delay:
            parts.append(f"delay={self.delay:g}")
        return "+".join(parts) or "noop"


@dataclass(frozen=True)
class RequestLogEntry:
    """One request the simulator received (admin ``/_sim/`` requests are not logged)."""

    monotonic: float  # time.monotonic() when the request arrived
    wall: datetime  # real UTC time when the request arrived
    method: str
    path: str
    query: dict[str, str]  # the first value of each parameter
    query_string: str
    token_fingerprint: str | None  # sha256(token)[:12]; never the token
    auth_scheme: str | None  # "token", "bearer", or None when absent/unreadable
    accept: str | None
    status: int | None  # None: no answer was sent (dropped, or the client went away)
    duration: float  # seconds from arrival to answer
    page: int | None = None  # the walk page number, when computed
    records: int | None = None  # records in a 200 answer
    next_cursor: str | None = None
    fault: str | None = None  # the injected fault, if any

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["wall"] = self.wall.isoformat().replace("+00:00", "Z")
        return data


@dataclass
class _Stored:
    key: tuple[int, str]  # (execution_time in µs since epoch, id)
    raw: bytes
    visible_us: int


@dataclass
class _Query:
    limit: int
    since_us: int
    until_us: int
    cursor_key: tuple[int, str] | None


class _BadRequest(Exception):
    def __init__(self, *errors: str) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass
class _RateWindow:
    started: float
    count: int = 0


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    records: int | None = None
    next_cursor: str | None = None


class Simulator:
    """The fake PagerDuty. All state is guarded by one ``threading.Lock``."""

    def __init__(
        self,
        *,
        tokens: Mapping[str, str] | None = None,
        rate_limit_per_minute: int | None = 960,
        rate_limit_window: float = 60.0,
        latency: tuple[float, float] | None = None,
        now: Callable[[], datetime] | None = None,
        since_inclusive: bool = True,
        until_inclusive: bool = False,
        oauth_clients: Mapping[str, str] | None = None,
        oauth_expires_in: int = 86400,
        max_limit: int = 100,
        default_limit: int = 100,
        seed: int = 0,
    ) -> None:
        for state in (tokens or {}).values():
            _check_state(state)
        self._tokens: dict[str, str] = dict(tokens or {})
        self.rate_limit_per_minute = rate_limit_per_minute
        self.rate_limit_window = rate_limit_window
        self.latency = latency
        self._now = now or _real_now
        self.since_inclusive = since_inclusive
        self.until_inclusive = until_inclusive
        self._oauth_clients: dict[str, str] = dict(oauth_clients or {})
        self.oauth_expires_in = oauth_expires_in
        self.max_limit = max_limit
        self.default_limit = default_limit
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._keys: list[tuple[int, str]] = []  # ascending; served in reverse
        self._items: list[_Stored] = []  # parallel to _keys
        self._by_id: dict[str, tuple[int, str]] = {}
        self._latest_visible_us = -(2**62)  # every record is visible from here on
        self._faults: list[tuple[FaultRule, list[int | None]]] = []
        self._oauth_expiry: dict[str, datetime] = {}
        self._windows: dict[str, _RateWindow] = {}
        self._log: list[RequestLogEntry] = []
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not started")
        return self._base_url

    def now(self) -> datetime:
        return self._now()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port); returns ``http://host:port``."""
        if self._runner is not None:
            return self.base_url
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get(AUDIT_PATH, self._handle_audit)
        app.router.add_post(OAUTH_PATH, self._handle_oauth)
        self._add_admin_routes(app)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        self._base_url = f"http://{host}:{bound[1]}"
        return self._base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ records

    def add_records(
        self,
        records: Iterable[Mapping[str, Any] | bytes | str],
        visible_at: datetime | None = None,
        *,
        visible_after: float | None = None,
    ) -> int:
        """Store records (dicts, or raw JSON bytes/str served exactly as given).

        ``visible_at`` (default: now, or now + ``visible_after`` seconds) is when requests
        start seeing them. A record whose id is already stored replaces it.
        """
        if visible_at is None:
            visible_at = self._now()
            if visible_after is not None:
                visible_at = visible_at + timedelta(seconds=visible_after)
        visible_us = _to_us(visible_at)
        prepared: list[_Stored] = []
        for record in records:
            if isinstance(record, bytes | str):
                raw = record.encode() if isinstance(record, str) else bytes(record)
                parsed = json.loads(raw)
            else:
                parsed = record
                raw = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
            try:
                rid = parsed["id"]
                when = _parse_time(parsed["execution_time"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"not an audit record (id, execution_time): {exc!r}") from exc
            if not isinstance(rid, str):
                raise ValueError("record id must be a string")
            prepared.append(_Stored((_to_us(when), rid), raw, visible_us))
        with self._lock:
            for item in prepared:
                old = self._by_id.get(item.key[1])
                if old is not None:
                    index = bisect_left(self._keys, old)
                    del self._keys[index]
                    del self._items[index]
            if len(prepared) > 64:
                merged = {item.key[1]: item for item in self._items}
                merged.update({item.key[1]: item for item in prepared})
                self._items = sorted(merged.values(), key=lambda item: item.key)
                self._keys = [item.key for item in self._items]
            else:
                for item in prepared:
                    index = bisect_left(self._keys, item.key)
                    self._keys.insert(index, item.key)
                    self._items.insert(index, item)
            for item in prepared:
                self._by_id[item.key[1]] = item.key
                self._latest_visible_us = max(self._latest_visible_us, item.visible_us)
        return len(prepared)

    def generate(
        self,
        count: int,
        *,
        start: datetime,
        end: datetime,
        seed: int = 0,
        visible_at: datetime | None = None,
        visible_after: float | None = None,
    ) -> int:
        """Add ``generate_records(count, start=, end=, seed=)``."""
        records = generate_records(count, start=start, end=end, seed=seed)
        return self.add_records(records, visible_at, visible_after=visible_after)

    def clear_records(self) -> None:
        with self._lock:
            self._keys.clear()
            self._items.clear()
            self._by_id.clear()
            self._latest_visible_us = -(2**62)

    @property
    def record_count(self) -> int:
        with self._lock:
            return len(self._items)

    def visible_record_count(self) -> int:
        now_us = _to_us(self._now())
        with self._lock:
            return sum(1 for item in self._items if item.visible_us <= now_us)

    def stored_bytes(self, record_id: str) -> bytes | None:
        """The exact bytes served for a record."""
        with self._lock:
            key = self._by_id.get(record_id)
            if key is None:
                return None
            return self._items[bisect_left(self._keys, key)].raw

    # ------------------------------------------------------------------ tokens

    def set_token_state(self, token: str, state: str) -> None:
        _check_state(state)
        with self._lock:
            self._tokens[token] = state

    def revoke_token(self, token: str) -> None:
        self.set_token_state(token, "revoked")

    def restore_token(self, token: str) -> None:
        self.set_token_state(token, "ok")

    def token_state(self, token: str) -> str | None:
        with self._lock:
            return self._tokens.get(token)

    def add_oauth_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._oauth_clients[client_id] = client_secret

    # ------------------------------------------------------------------ faults

    def add_fault(self, rule: FaultRule) -> None:
        if rule.times is not None and rule.times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._faults.append((rule, [rule.times]))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults_pending(self) -> int:
        with self._lock:
            return len(self._faults)

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[RequestLogEntry]:
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def stats(self) -> dict[str, Any]:
        now_us = _to_us(self._now())
        with self._lock:
            return {
                "record_count": len(self._items),
                "visible_record_count": sum(1 for i in self._items if i.visible_us <= now_us),
                "request_count": len(self._log),
                "faults_pending": len(self._faults),
                "tokens": len(self._tokens),
            }

    # ------------------------------------------------------------------ internals: query

    def _parse_query(self, query: Mapping[str, str], now: datetime) -> _Query:
        errors: list[str] = []
        limit = self.default_limit
        if "limit" in query:
            try:
                limit = int(query["limit"])
                if limit < 1:
                    raise ValueError
            except ValueError:
                errors.append("limit must be a positive integer")
            limit = min(limit, self.max_limit)
        since = now - timedelta(hours=24)
        until = now
        for name in ("since", "until"):
            if name in query:
                try:
                    moment = _parse_time(query[name])
                except ValueError:
                    errors.append(f"{name} is not a valid ISO 8601 date-time")
                    continue
                if name == "since":
                    since = moment
                else:
                    until = moment
        if not errors:
            if since > until:
                errors.append("since must be before until")
            elif until - since > MAX_WINDOW:
                errors.append("until must be within 31 days of since")
        cursor_key: tuple[int, str] | None = None
        if "cursor" in query:
            match = _CURSOR.match(query["cursor"])
            if match is None:
                errors.append("cursor is invalid")
            else:
                ms, rid = int(match.group(1)), match.group(2)
                with self._lock:
                    cursor_key = self._by_id.get(rid)
                if cursor_key is None or cursor_key[0] // 1000 != ms:
                    cursor_key = (ms * 1000 + 999, rid)  # unknown record: position by ms
        if errors:
            raise _BadRequest(*errors)
        return _Query(limit, _to_us(since), _to_us(until), cursor_key)

    def _bounds(self, q: _Query) -> tuple[int, int]:
        """Index range of ``_keys`` inside the window (caller holds the lock)."""
        lo = bisect_left(self._keys, (q.since_us if self.since_inclusive else q.since_us + 1,))
        hi = bisect_left(self._keys, (q.until_us + 1 if self.until_inclusive else q.until_us,))
        return lo, hi

    def _page_number(self, q: _Query, now_us: int) -> int:
        if q.cursor_key is None:
            return 1
        with self._lock:
            lo, hi = self._bounds(q)
            cut = max(lo, bisect_left(self._keys, q.cursor_key))
            if now_us >= self._latest_visible_us:
                newer = max(0, hi - cut)
            else:
                newer = sum(1 for i in range(cut, hi) if self._items[i].visible_us <= now_us)
        return newer // q.limit + 1

    def _page(self, q: _Query, now_us: int) -> _Answer:
        raws: list[bytes] = []
        last: _Stored | None = None
        more = False
        with self._lock:
            lo, hi = self._bounds(q)
            if q.cursor_key is not None:
                hi = min(hi, bisect_left(self._keys, q.cursor_key))
            for index in range(hi - 1, lo - 1, -1):
                item = self._items[index]
                if item.visible_us > now_us:
                    continue
                if len(raws) == q.limit:
                    more = True
                    break
                raws.append(item.raw)
                last = item
        next_cursor = None
        if more and last is not None:
            next_cursor = f"{last.key[0] // 1000}-{last.key[1]}"
        body = b"".join(
            (
                b'{"records":[',
                b",".join(raws),
                b'],"limit":',
                str(q.limit).encode(),
                b',"next_cursor":',
                json.dumps(next_cursor).encode(),
                b',"response_metadata":null}',
            )
        )
        return _Answer(200, body, {"Content-Type": _JSON}, len(raws), next_cursor)

    # ------------------------------------------------------------------ internals: auth etc.

    def _take_fault(self, path: str, page: int | None) -> FaultRule | None:
        with self._lock:
            for index, (rule, remaining) in enumerate(self._faults):
                if rule.path != path or (rule.page is not None and rule.page != page):
                    continue
                if remaining[0] is not None:
                    remaining[0] -= 1
                    if remaining[0] <= 0:
                        del self._faults[index]
                return rule
        return None

    def _wants_page(self, path: str) -> bool:
        with self._lock:
            return any(rule.page is not None and rule.path == path for rule, _ in self._faults)

    def _rate(self, key: str) -> tuple[bool, dict[str, str]]:
        limit = self.rate_limit_per_minute
        if limit is None:
            return True, {}
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now >= window.started + self.rate_limit_window:
                window = self._windows[key] = _RateWindow(now)
            window.count += 1
            count, started = window.count, window.started
        reset = max(1, math.ceil(started + self.rate_limit_window - now))
        headers = {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(max(0, limit - count)),
            "ratelimit-reset": str(reset),
        }
        return count <= limit, headers

    def _auth_state(self, token: str | None, now: datetime) -> str | None:
        """The token's state, or None when unknown; expired OAuth tokens read as revoked."""
        if token is None:
            return None
        with self._lock:
            state = self._tokens.get(token)
            expiry = self._oauth_expiry.get(token)
        if state is not None and expiry is not None and now >= expiry:
            return "revoked"
        return state

    # ------------------------------------------------------------------ handlers

    async def _handle_audit(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        wall = datetime.now(UTC)
        token, scheme = _read_authorization(request.headers.get("Authorization"))
        query = {key: request.query.getone(key) for key in request.query}
        status: int | None = None
        page: int | None = None
        fault: FaultRule | None = None
        answer: _Answer | None = None
        try:
            if self._wants_page(request.path):
                try:
                    now = self._now()
                    page = self._page_number(self._parse_query(query, now), _to_us(now))
                except _BadRequest:
                    page = None
            fault = self._take_fault(request.path, page)
            if self.latency is not None:
                low, high = self.latency
                with self._lock:
                    pause = self._rng.uniform(low, high)
                if pause > 0:
                    await asyncio.sleep(pause)
            if fault is not None and fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault is not None and fault.drop_connection:
                _drop(request)
                raise _Dropped
            if fault is not None and (fault.status is not None or fault.invalid_json):
                answer = _fault_answer(fault)
            else:
                answer = self._answer_audit(token, query)
            status = answer.status
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        except _Dropped:
            # aiohttp needs a response object; the transport is already closed
            return web.Response(status=500)
        finally:
            self._log_request(
                request,
                arrived,
                wall,
                status,
                query=query,
                token=token,
                auth_scheme=scheme,
                page=page,
                answer=answer,
                fault=fault,
            )

    def _answer_audit(self, token: str | None, query: Mapping[str, str]) -> _Answer:
        allowed, rate_headers = self._rate(token if token is not None else "")
        if not allowed:
            return _json_answer(429, error_body(429), rate_headers)
        now = self._now()
        state = self._auth_state(token, now)
        if state != "ok":
            status = _STATE_STATUS.get(state or "revoked", 401)
            return _json_answer(status, error_body(status), rate_headers)
        try:
            q = self._parse_query(query, now)
        except _BadRequest as exc:
            return _json_answer(400, error_body(400, errors=exc.errors), rate_headers)
        answer = self._page(q, _to_us(now))
        answer.headers.update(rate_headers)
        return answer

    async def _handle_oauth(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        wall = datetime.now(UTC)
        form = await request.post()
        fields = {
            key: str(form.get(key, ""))
            for key in ("grant_type", "client_id", "client_secret", "scope")
        }
        status = 200
        try:
            if fields["grant_type"] != "client_credentials":
                status = 400
                return web.json_response(
                    {
                        "error": "unsupported_grant_type",
                        "error_description": "use client_credentials",
                    },
                    status=400,
                )
            with self._lock:
                secret = self._oauth_clients.get(fields["client_id"])
            if secret is None or not secrets.compare_digest(secret, fields["client_secret"]):
                status = 401
                return web.json_response(
                    {
                        "error": "invalid_client",
                        "error_description": "Client authentication failed",
                    },
                    status=401,
                )
            scopes = fields["scope"].split()
            access_token = "pdsim_" + secrets.token_urlsafe(24)
            with self._lock:
                self._tokens[access_token] = "ok" if AUDIT_SCOPE in scopes else "forbidden"
                self._oauth_expiry[access_token] = self._now() + timedelta(
                    seconds=self.oauth_expires_in
                )
            return web.json_response(
                {
                    "access_token": access_token,
                    "token_type": "bearer",
                    "expires_in": self.oauth_expires_in,
                    "scope": fields["scope"],
                }
            )
        finally:
            self._log_request(request, arrived, wall, status, query={})

    def _log_request(
        self,
        request: web.Request,
        arrived: float,
        wall: datetime,
        status: int | None,
        *,
        query: dict[str, str],
        token: str | None = None,
        auth_scheme: str | None = None,
        page: int | None = None,
        answer: _Answer | None = None,
        fault: FaultRule | None = None,
    ) -> None:
        """Log a request that arrived at ``arrived`` (monotonic) / ``wall``, answered now."""
        entry = RequestLogEntry(
            monotonic=arrived,
            wall=wall,
            method=request.method,
            path=request.path,
            query=query,
            query_string=request.query_string,
            token_fingerprint=fingerprint(token) if token is not None else None,
            auth_scheme=auth_scheme,
            accept=request.headers.get("Accept"),
            status=status,
            duration=time.monotonic() - arrived,
            page=page,
            records=answer.records if answer is not None else None,
            next_cursor=answer.next_cursor if answer is not None else None,
            fault=fault.describe() if fault is not None else None,
        )
        with self._lock:
            self._log.append(entry)

    # ------------------------------------------------------------------ admin API

    def _add_admin_routes(self, app: web.Application) -> None:
        app.router.add_post("/_sim/records", self._admin_add_records)
        app.router.add_delete("/_sim/records", self._admin_clear_records)
        app.router.add_post("/_sim/generate", self._admin_generate)
        app.router.add_post("/_sim/tokens", self._admin_token)
        app.router.add_post("/_sim/faults", self._admin_add_fault)
        app.router.add_delete("/_sim/faults", self._admin_clear_faults)
        app.router.add_get("/_sim/requests", self._admin_requests)
        app.router.add_delete("/_sim/requests", self._admin_clear_requests)
        app.router.add_get("/_sim/stats", self._admin_stats)

    def _visibility(self, body: Mapping[str, Any]) -> tuple[datetime | None, float | None]:
        visible_at = body.get("visible_at")
        after = body.get("visible_after")
        return (
            _parse_time(visible_at) if visible_at else None,
            float(after) if after is not None else None,
        )

    async def _admin_add_records(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            records = body["records"]
            visible_at, after = self._visibility(body)
            added = self.add_records(records, visible_at, visible_after=after)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"added": added, "record_count": self.record_count})

    async def _admin_clear_records(self, request: web.Request) -> web.Response:
        self.clear_records()
        return web.json_response({"record_count": 0})

    async def _admin_generate(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            now = self._now()
            end = _parse_time(body["end"]) if body.get("end") else now
            start = (
                _parse_time(body["start"])
                if body.get("start")
                else end - timedelta(days=float(body.get("days", 1)))
            )
            visible_at, after = self._visibility(body)
            added = self.generate(
                int(body["count"]),
                start=start,
                end=end,
                seed=int(body.get("seed", 0)),
                visible_at=visible_at,
                visible_after=after,
            )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"added": added, "record_count": self.record_count})

    async def _admin_token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self.set_token_state(str(body["token"]), str(body.get("state", "ok")))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"state": body.get("state", "ok")})

    async def _admin_add_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            known = set(FaultRule.__dataclass_fields__)
            unknown = set(body) - known
            if unknown:
                raise ValueError(f"unknown fault fields: {sorted(unknown)}")
            self.add_fault(FaultRule(**body))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"faults_pending": self.faults_pending})

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"faults_pending": 0})

    async def _admin_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [entry.to_json() for entry in self.requests]})

    async def _admin_clear_requests(self, request: web.Request) -> web.Response:
        self.clear_requests()
        return web.json_response({"request_count": 0})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())


class _Dropped(Exception):
    pass


def _check_state(state: str) -> None:
    if state not in TOKEN_STATES:
        raise ValueError(f"token state must be one of {TOKEN_STATES}, not {state!r}")


def _read_authorization(header: str | None) -> tuple[str | None, str | None]:
    """``Token token=<key>`` → (key, "token"); ``Bearer <t>`` → (t, "bearer")."""
    if not header:
        return None, None
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "token" and rest.lower().startswith("token="):
        value = rest[len("token=") :].strip().strip('"')
        return (value or None), "token"
    if scheme.lower() == "bearer" and rest:
        return rest, "bearer"
    return None, None


def _json_answer(status: int, body: Any, headers: Mapping[str, str]) -> _Answer:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return _Answer(status, data, {"Content-Type": _JSON, **headers})


def _fault_answer(rule: FaultRule) -> _Answer:
    status = rule.status if rule.status is not None else 200
    headers = dict(rule.headers or {})
    if rule.invalid_json:
        body = b'{"records":[{"id":"trunc'
        headers.setdefault("Content-Type", _JSON)
    elif rule.body is None:
        body = b""
    elif isinstance(rule.body, bytes):
        body = rule.body
    elif isinstance(rule.body, str):
        body = rule.body.encode()
    else:
        body = json.dumps(rule.body).encode()
        headers.setdefault("Content-Type", _JSON)
    return _Answer(status, body, headers)


def _drop(request: web.Request) -> None:
    """Close the connection without writing an answer."""
    transport = request.transport
    if transport is not None:
        transport.abort() if hasattr(transport, "abort") else transport.close()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _delegate(
    method: Callable[Concatenate[Simulator, _P], _R],
) -> Callable[Concatenate[SimulatorThread, _P], _R]:
    """``SimulatorThread``'s method calling ``method`` on its simulator (same signature)."""

    def call(self: SimulatorThread, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return method(self.simulator, *args, **kwargs)

    call.__name__ = method.__name__
    call.__qualname__ = f"SimulatorThread.{method.__name__}"
    call.__doc__ = method.__doc__
    return call


class SimulatorThread:
    """A ``Simulator`` on its own event loop in a daemon thread (for sync or blocked tests).

    ``with SimulatorThread(tokens={...}) as sim: sim.base_url ...``; every method is safe
    to call from any thread.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        self.simulator = Simulator(**kwargs)
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> SimulatorThread:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self.base_url = loop.run_until_complete(
                    self.simulator.start(self._host, self._port)
                )
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.simulator.stop())
                loop.close()

        thread = threading.Thread(target=run, name="pagerduty-simulator", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # thread-safe delegates (the Simulator guards its state with a threading.Lock)
    add_records = _delegate(Simulator.add_records)
    generate = _delegate(Simulator.generate)
    clear_records = _delegate(Simulator.clear_records)
    set_token_state = _delegate(Simulator.set_token_state)
    revoke_token = _delegate(Simulator.revoke_token)
    restore_token = _delegate(Simulator.restore_token)
    add_oauth_client = _delegate(Simulator.add_oauth_client)
    add_fault = _delegate(Simulator.add_fault)
    clear_faults = _delegate(Simulator.clear_faults)
    clear_requests = _delegate(Simulator.clear_requests)
    stats = _delegate(Simulator.stats)
    stored_bytes = _delegate(Simulator.stored_bytes)

    @property
    def faults_pending(self) -> int:
        return self.simulator.faults_pending

    @property
    def requests(self) -> list[RequestLogEntry]:
        return self.simulator.requests

    @property
    def record_count(self) -> int:
        return self.simulator.record_count

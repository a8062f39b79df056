"""A hostile PagerDuty of the tests' own: ``GET /audit/records`` answered from a script.

An aiohttp server in a thread of its own (like ``tests/receiver.py``), so worker processes
can poll it while a test waits. Each request to ``/audit/records`` takes the next answer of
the script; once the script is used up, it gets a good answer built from a list of records
(``since``/``until``/``cursor``/``limit`` honoured well enough for a small window: records
in ``[since, until)``, newest first, an offset cursor). Answers of the script:

- :class:`Inject`: a good page with extra raw records in the middle of the good ones (a
  record with a huge field, one nested thousands of levels deep);
- :class:`EmptyWalk`: ``{"records": [], "next_cursor": "c<n>"}`` for that request and
  every one that follows a cursor it handed out, for ever (until a walk starts afresh);
- :class:`EndlessPages`: the same, but each page with a new record (past any page bound);
- :class:`Drip`: the headers at once, then one byte of body every ``pause`` seconds;
- :class:`HugeBody`: a 200 OK body of ``size`` bytes (default 200 MB), streamed without a
  ``Content-Length``, never built in memory;
- :class:`GzipBomb`: ``Content-Encoding: gzip``, about 1 MB on the wire that inflates to
  1 GiB, generated as it is sent;
- :class:`Status`: any status with headers and a body (a 429 with ``ratelimit-reset``);
- :class:`Repeat`: one of the above for every request until the test calls ``release``.

``always`` records (raw JSON bytes) are put on the first page of every answer whatever the
window, as a server ignoring ``since``/``until`` would (undecodable records repeated on
every poll, a record dated 2999). Every request is logged (path, query, time, what was
answered) for the tests' assertions.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.threaded_http import ThreadedHttpServer

MiB = 1024 * 1024

# --------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Inject:
    """A good page with these raw records added to its first page."""

    records: tuple[bytes, ...]
    name: str = "inject"


@dataclass(frozen=True)
class EmptyWalk:
    """Empty pages that each name a next page, for this request and the walk it starts."""

    name: str = "empty_walk"


@dataclass(frozen=True)
class EndlessPages:
    """Pages of ``per_page`` new records each that each name a next page, for ever."""

    per_page: int = 1
    name: str = "endless_pages"


@dataclass(frozen=True)
class Drip:
    """Headers, then one byte every ``pause`` seconds (for at most ``limit`` seconds)."""

    pause: float = 2.0
    limit: float = 300.0
    name: str = "drip"


@dataclass(frozen=True)
class HugeBody:
    """A body of ``size`` bytes, streamed in ``chunk``-sized writes, no Content-Length."""

    size: int = 200 * 1000 * 1000
    chunk: int = MiB
    name: str = "huge_body"


@dataclass(frozen=True)
class GzipBomb:
    """``Content-Encoding: gzip``: ~1 MB on the wire that inflates to ``inflated`` bytes."""

    inflated: int = 1024 * MiB
    name: str = "gzip_bomb"


@dataclass(frozen=True)
class Status:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b'{"error": {"message": "Too Many Requests", "code": 2020}}'
    name: str = "status"


Single = Inject | EmptyWalk | EndlessPages | Drip | HugeBody | GzipBomb | Status


@dataclass(frozen=True)
class Repeat:
    """``answer`` for every request (it stays at the head of the script) until ``release``."""

    answer: Single


Answer = Single | Repeat


@dataclass
class RequestLog:
    path: str
    query: dict[str, str]
    #: time.monotonic() when the request arrived
    at: float
    #: what was answered: "good", or the script answer's name
    answer: str = "good"
    status: int = 200
    #: body bytes written (on the wire)
    sent: int = 0
    #: time.monotonic() when the answer ended (None while it is still being sent)
    ended: float | None = None
    #: why it ended early (the client went away), if it did
    error: str | None = None


# --------------------------------------------------------------------------- bodies


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def page_body(records: Sequence[bytes], next_cursor: str | None, limit: int) -> bytes:
    cursor = json.dumps(next_cursor)
    return b'{"records":[%s],"limit":%d,"next_cursor":%s}' % (
        b",".join(records),
        limit,
        cursor.encode(),
    )


def endless_record(record_id: str, when: str) -> dict[str, Any]:
    """A valid audit record (a team renamed through an API key)."""
    return {
        "id": record_id,
        "execution_time": when,
        "execution_context": {"request_id": f"req-{record_id}", "remote_address": "192.0.2.7"},
        "actors": [{"id": "PENDLESS", "summary": "Endless Pager", "type": "user_reference"}],
        "method": {"type": "api_token", "truncated_token": "3usr"},
        "root_resource": {"id": "PTEAMEND", "type": "team_reference", "summary": "endless"},
        "action": "update",
        "details": {
            "resource": {"id": "PTEAMEND", "type": "team_reference", "summary": "endless"},
            "fields": [{"name": "name", "before_value": "a", "value": "b"}],
        },
    }


def gzip_bomb_chunks(inflated: int, block: int = MiB) -> Iterator[bytes]:
    """A gzip member inflating to ``inflated`` bytes (a JSON page whose one record holds a
    field of ``a``), produced chunk by chunk: after a full flush deflate's state is reset,
    so a block of the same bytes compresses to the same ~1 KB each time and is reused."""
    prefix = b'{"records":[{"id":"BOMB","execution_time":"2026-01-01T00:00:00Z","pad":"'
    data = b"a" * block
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip header, no name, no mtime
    yield deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    size = len(prefix)
    first = deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH)
    second = deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert second == again, "deflate output of a repeated block after a full flush differs"
    blocks = max((inflated - size) // block, 2)
    for index in range(blocks):
        yield first if index == 0 else second
        crc = zlib.crc32(data, crc)
        size += block
    yield deflate.flush(zlib.Z_FINISH)
    yield struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


# --------------------------------------------------------------------------- the server


@dataclass
class HostileServer(ThreadedHttpServer):
    """``with HostileServer(records, script=[...]) as server: server.base_url ...``"""

    handler_cancellation = True

    records: list[dict[str, Any]] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)
    always: list[bytes] = field(default_factory=list)
    port: int = 0
    requests: list[RequestLog] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._encoded: list[tuple[datetime, str, bytes]] = []
        self._script = list(self.script)
        #: cursors an endless walk handed out: a request carrying one continues the walk
        self._walk_cursors: dict[str, EmptyWalk | EndlessPages] = {}
        self._walk_count = 0
        #: ids of the records endless pages made up
        self.endless_ids: list[str] = []
        self.add_records(self.records)

    # --- what the test changes ------------------------------------------------------------

    def add_records(self, records: Sequence[dict[str, Any]]) -> None:
        encoded = [
            (parse_time(r["execution_time"]), r["id"], json.dumps(r).encode()) for r in records
        ]
        with self._lock:
            self._encoded.extend(encoded)
            # newest first, ties by id descending, as PagerDuty pages
            self._encoded.sort(key=lambda item: (item[0], item[1]), reverse=True)

    def push(self, *answers: Answer) -> None:
        """Add answers to the end of the script."""
        with self._lock:
            self._script.extend(answers)

    def set_always(self, records: Sequence[bytes]) -> None:
        with self._lock:
            self.always = list(records)

    def release(self) -> None:
        """End the leading ``Repeat`` answers of the script: good answers follow."""
        with self._lock:
            while self._script and isinstance(self._script[0], Repeat):
                self._script.pop(0)

    @property
    def script_left(self) -> int:
        with self._lock:
            return len(self._script)

    def log(self, answer: str | None = None) -> list[RequestLog]:
        with self._lock:
            return [r for r in self.requests if answer is None or r.answer == answer]

    def in_flight(self, answer: str) -> list[RequestLog]:
        return [r for r in self.log(answer) if r.ended is None]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- answers --------------------------------------------------------------------------

    def _next(self, query: dict[str, str]) -> Single | None:
        with self._lock:
            cursor = query.get("cursor")
            if cursor is not None and cursor in self._walk_cursors:
                return self._walk_cursors[cursor]
            self._walk_cursors.clear()  # a walk without our cursor: the endless one is over
            if not self._script:
                return None
            head = self._script[0]
            if isinstance(head, Repeat):
                return head.answer
            self._script.pop(0)
            return head

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        entry = RequestLog(request.path, query, time.monotonic())
        with self._lock:
            self.requests.append(entry)
        answer = self._next(query) if request.path == "/audit/records" else Status(404, body=b"{}")
        if answer is not None:
            entry.answer = answer.name
        try:
            if isinstance(answer, EmptyWalk | EndlessPages):
                return self._endless(entry, answer)
            if isinstance(answer, Status):
                entry.status = answer.status
                entry.sent = len(answer.body)
                return web.Response(
                    status=answer.status,
                    body=answer.body,
                    headers=dict(answer.headers),
                    content_type="application/json",
                )
            if isinstance(answer, Drip):
                return await self._drip(request, entry, answer)
            if isinstance(answer, HugeBody):
                return await self._huge(request, entry, answer)
            if isinstance(answer, GzipBomb):
                return await self._bomb(request, entry, answer)
            extra = list(answer.records) if isinstance(answer, Inject) else []
            body = self._good(query, extra)
            entry.sent = len(body)
            return web.Response(body=body, content_type="application/json")
        except (ConnectionError, asyncio.CancelledError) as exc:
            entry.error = type(exc).__name__
            raise
        finally:
            entry.ended = time.monotonic()

    def _good(self, query: dict[str, str], extra: list[bytes]) -> bytes:
        limit = min(int(query.get("limit", "100")), 100)
        since = parse_time(query["since"]) if "since" in query else None
        until = parse_time(query["until"]) if "until" in query else None
        cursor = query.get("cursor")
        offset = int(cursor[1:]) if cursor and cursor.startswith("o") else 0
        with self._lock:
            matching = [
                raw
                for moment, _, raw in self._encoded
                if (since is None or moment >= since) and (until is None or moment < until)
            ]
            always = list(self.always)
        page = matching[offset : offset + limit]
        if offset == 0:  # in the middle of the page: the good records after them must count
            half = len(page) // 2
            page = [*page[:half], *always, *extra, *page[half:]]
        more = offset + limit < len(matching)
        return page_body(page, f"o{offset + limit}" if more else None, limit)

    def _endless(self, entry: RequestLog, walk: EmptyWalk | EndlessPages) -> web.Response:
        records: list[bytes] = []
        with self._lock:
            self._walk_count += 1
            cursor = f"c{self._walk_count}"
            self._walk_cursors[cursor] = walk
            if isinstance(walk, EndlessPages):
                when = rfc3339(datetime.now(UTC) - timedelta(seconds=30))
                for index in range(walk.per_page):
                    record_id = f"ENDLESS-{self._walk_count}-{index}"
                    self.endless_ids.append(record_id)
                    records.append(json.dumps(endless_record(record_id, when)).encode())
        body = page_body(records, cursor, 100)
        entry.sent = len(body)
        return web.Response(body=body, content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        entry: RequestLog,
        chunks: Iterator[bytes],
        headers: dict[str, str] | None = None,
        pause: float = 0.0,
        limit: float | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        started = time.monotonic()
        try:
            for chunk in chunks:
                if pause:
                    await asyncio.sleep(pause)
                if limit is not None and time.monotonic() - started > limit:
                    break
                await response.write(chunk)
                entry.sent += len(chunk)
            await response.write_eof()
        except ConnectionError as exc:  # the client gave up: what these answers are for
            entry.error = type(exc).__name__
        return response

    async def _drip(
        self, request: web.Request, entry: RequestLog, drip: Drip
    ) -> web.StreamResponse:
        body = page_body([], None, 100)
        chunks = (body[i : i + 1] for i in range(len(body)))
        return await self._stream(request, entry, chunks, pause=drip.pause, limit=drip.limit)

    async def _huge(
        self, request: web.Request, entry: RequestLog, huge: HugeBody
    ) -> web.StreamResponse:
        def chunks() -> Iterator[bytes]:
            head = b'{"records":[{"id":"HUGEBODY","execution_time":"2026-01-01T00:00:00Z","x":"'
            yield head
            left = huge.size - len(head) - 3
            filler = b"x" * huge.chunk
            while left > 0:
                yield filler[: min(left, huge.chunk)]
                left -= huge.chunk
            yield b'"}]'

        return await self._stream(request, entry, chunks())

    async def _bomb(
        self, request: web.Request, entry: RequestLog, bomb: GzipBomb
    ) -> web.StreamResponse:
        headers = {"Content-Encoding": "gzip"}
        return await self._stream(request, entry, gzip_bomb_chunks(bomb.inflated), headers)

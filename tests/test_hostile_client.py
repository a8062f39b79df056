"""The PagerDuty client against hostile or broken answers (httpx.MockTransport, no server).

Each answer here once stopped collection or exhausted memory: a slow drip of bytes, a huge
or gzip-bomb body, a record nested thousands of levels deep, a cursor walk that never ends,
a 429 asking for an hour's pause. The client must bound each one and say which bound.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.core.credentials import ApiKey
from streamapp.core.errors import (
    PagerDutyError,
    ProtocolError,
    RateLimitWait,
    RequestTimeout,
    ResponseTooLarge,
    WalkTooLong,
)
from streamapp.core.jsonscan import nesting_depth, split_page
from streamapp.core.redact import Secret
from streamapp.pagerduty.auth import ApiKeyAuth
from streamapp.pagerduty.client import MAX_EMPTY_PAGES, PagerDutyClient, page_bound
from streamapp.pagerduty.ratelimit import RequestGate
from streamapp.pagerduty.retry import RetryPolicy

TOKEN = "hostile_test_token_8Qw2"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(minutes=10)


def record(record_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": record_id,
        "execution_time": "2026-01-01T00:05:00.000Z",
        "method": {"type": "api_token", "truncated_token": "abcd"},
        "root_resource": {"id": "PU1", "type": "user_reference"},
        "action": "update",
        **extra,
    }


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def page_body(records: list[str], next_cursor: str | None = None) -> bytes:
    cursor = json.dumps(next_cursor)
    return f'{{"records":[{",".join(records)}],"limit":100,"next_cursor":{cursor}}}'.encode()


class Drip(httpx.AsyncByteStream):
    """A body that arrives one byte at a time, ``pause`` seconds apart."""

    def __init__(self, body: bytes, pause: float) -> None:
        self.body = body
        self.pause = pause

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index in range(len(self.body)):
            await asyncio.sleep(self.pause)
            yield self.body[index : index + 1]


class Chunks(httpx.AsyncByteStream):
    def __init__(self, data: bytes, size: int = 64 * 1024) -> None:
        self.data = data
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start : start + self.size]


def client_for(handler: Any, **options: Any) -> PagerDutyClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    options.setdefault("retry", RetryPolicy(max_attempts=1))
    return PagerDutyClient(
        http,
        base_url="https://api.pagerduty.com",
        auth=ApiKeyAuth(ApiKey(Secret(TOKEN))),
        gate=options.pop("gate", None) or RequestGate(),
        **options,
    )


def answer(body: bytes, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=Chunks(body))


async def test_a_drip_fed_body_hits_the_whole_request_deadline():
    body = page_body([json.dumps(record("r1"))])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Drip(body, pause=0.05))

    client = client_for(handler, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as caught:
        await client.get_page(since=SINCE, until=UNTIL)
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert "deadline" in message and "STREAMAPP_HTTP_TIMEOUT" in message
    assert TOKEN not in message and caught.value.__cause__ is None


async def test_a_body_past_the_cap_is_abandoned_and_named():
    huge = page_body([json.dumps(record("r1", pad="x" * (3 * 1024 * 1024)))])
    client = client_for(lambda r: answer(huge), max_response_bytes=1024 * 1024)
    with pytest.raises(ResponseTooLarge) as caught:
        await client.get_page(since=SINCE, until=UNTIL)
    assert "STREAMAPP_HTTP_MAX_RESPONSE_BYTES" in str(caught.value)
    assert not caught.value.retryable


async def test_an_announced_oversized_body_is_not_read_at_all():
    read = []

    class Counting(Chunks):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in super().__aiter__():
                read.append(len(chunk))
                yield chunk

    body = b"x" * (2 * 1024 * 1024)
    client = client_for(
        lambda r: httpx.Response(
            200, headers={"content-length": str(len(body))}, stream=Counting(body)
        ),
        max_response_bytes=1024 * 1024,
    )
    with pytest.raises(ResponseTooLarge, match="announced"):
        await client.get_page(since=SINCE, until=UNTIL)
    assert read == []


async def test_a_gzip_bomb_is_stopped_at_the_cap_without_inflating_it():
    inflated = 256 * 1024 * 1024  # 256 MiB of zeros; ~256 KiB compressed
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)
    bomb = b"".join(compressor.compress(zeros) for _ in range(inflated // len(zeros)))
    bomb += compressor.flush()
    assert len(bomb) < 2 * 1024 * 1024
    client = client_for(
        lambda r: answer(bomb, **{"content-encoding": "gzip"}), max_response_bytes=8 * 1024 * 1024
    )
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge, match="inflates"):
            await client.get_page(since=SINCE, until=UNTIL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB while refusing a gzip bomb"


async def test_gzip_and_deflate_bodies_are_decoded():
    body = page_body([json.dumps(record("r1"))])
    for encoding, data in (
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("deflate", zlib.compress(body)[2:-4]),  # raw deflate, no zlib header
    ):
        client = client_for(lambda r, d=data, e=encoding: answer(d, **{"content-encoding": e}))
        page = await client.get_page(since=SINCE, until=UNTIL)
        assert [r.id for r in page.records] == ["r1"], encoding


async def test_an_encoding_it_did_not_ask_for_is_a_protocol_error():
    client = client_for(lambda r: answer(b"\x00\x01", **{"content-encoding": "br"}))
    with pytest.raises(ProtocolError, match="Content-Encoding"):
        await client.get_page(since=SINCE, until=UNTIL)


@pytest.mark.parametrize("levels", [80, 2000, 50_000])
async def test_a_deeply_nested_record_is_put_aside_and_its_neighbours_arrive(levels: int):
    bad = json.dumps(record("deep-1"))[:-1] + f',"details":{deep(levels)}}}'
    body = page_body([json.dumps(record("good-1")), bad, json.dumps(record("good-2"))], "c2")
    client = client_for(lambda r: answer(body))
    page = await client.get_page(since=SINCE, until=UNTIL)
    assert [r.id for r in page.records] == ["good-1", "good-2"]
    assert page.next_cursor == "c2"
    (malformed,) = page.malformed
    assert malformed.id == "deep-1"
    assert "nests deeper than 64 levels" in malformed.reason
    assert malformed.raw == bad.encode()


async def test_empty_pages_that_keep_naming_a_next_page_end_the_walk():
    served = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(request)
        return answer(page_body([], f"c{len(served)}"))

    client = client_for(handler)
    with pytest.raises(WalkTooLong, match="empty pages in a row"):
        async for _ in client.pages(since=SINCE, until=UNTIL):
            pass
    assert len(served) == MAX_EMPTY_PAGES


async def test_a_walk_past_the_page_bound_ends_with_the_bound_named():
    served = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(request)
        return answer(page_body([json.dumps(record(f"r{len(served)}"))], f"c{len(served)}"))

    client = client_for(handler)
    with pytest.raises(WalkTooLong, match="STREAMAPP_MAX_PAGES_PER_WINDOW"):
        async for _ in client.pages(since=SINCE, until=UNTIL, max_pages=25):
            pass
    assert len(served) == 25


def test_the_default_page_bound_grows_with_the_window():
    assert page_bound(timedelta(minutes=6)) == 460
    assert page_bound(timedelta(days=1)) == 86_500
    assert page_bound(timedelta(minutes=6), limit=10) > page_bound(timedelta(minutes=6))


async def test_an_hour_long_rate_limit_pause_fails_fast_and_holds_the_token():
    served = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(request)
        return answer(b"", 429, **{"ratelimit-reset": "3600"})

    gate = RequestGate()
    client = client_for(handler, gate=gate, max_wait=60.0, retry=RetryPolicy(max_attempts=6))
    started = time.monotonic()
    with pytest.raises(RateLimitWait) as caught:
        await client.get_page(since=SINCE, until=UNTIL)
    assert "3600 s" in str(caught.value) and "ratelimit-reset" in str(caught.value)
    # the next poll sends nothing while the token is paused, and says so at once
    with pytest.raises(RateLimitWait):
        await client.get_page(since=SINCE, until=UNTIL)
    assert len(served) == 1
    assert time.monotonic() - started < 1.0
    assert 3590 < gate.blocked_for() <= 3600


# --- the page decoder under random shapes, sizes and depths ------------------------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["page", "deep", "garbage", "value", "truncated"]))
    if kind == "value":
        return msgspec.json.encode(draw(json_values))
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    records = []
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.sampled_from(["good", "shape", "deep"]))
        if choice == "good":
            records.append(json.dumps(record(draw(st.text(min_size=1, max_size=10)))))
        elif choice == "shape":
            records.append(msgspec.json.encode(draw(json_values)).decode())
        else:
            levels = draw(st.sampled_from([65, 500, 1500, 20_000]))
            opener, closer = draw(st.sampled_from([("[", "]"), ('{"k":', "}")]))
            records.append(
                '{"id":"d","execution_time":"2026-01-01T00:00:00Z","x":'
                + opener * levels
                + "0"
                + closer * levels
                + "}"
            )
    cursor = draw(st.one_of(st.none(), st.text(max_size=10), st.integers()))
    body = page_body(records) if isinstance(cursor, int) else page_body(records, cursor)
    if isinstance(cursor, int):
        body = body.replace(b'"next_cursor":null', b'"next_cursor":' + str(cursor).encode())
    if kind == "deep":
        body = b'{"records":[],"next_cursor":' + b"[" * 3000 + b"]" * 3000 + b"}"
    if kind == "truncated":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=hostile_bodies())
def test_the_page_decoder_raises_only_its_own_errors_and_quickly(body: bytes):
    client = client_for(lambda r: answer(body))
    started = time.monotonic()
    try:
        page = client._decode(body, 200, 1)
    except PagerDutyError:
        pass
    else:
        for item in page.records:
            assert nesting_depth(bytes(item.raw), 64) <= 64
        for bad in page.malformed:
            assert bad.reason
    assert time.monotonic() - started < 2.0


@settings(max_examples=200, deadline=None)
@given(records=st.lists(json_values, max_size=6), cursor=st.one_of(st.none(), st.text()))
def test_the_iterative_split_agrees_with_the_decoder(records: list[Any], cursor: str | None):
    body = msgspec.json.encode({"records": records, "limit": 100, "next_cursor": cursor})
    split = split_page(body)
    assert [msgspec.json.decode(r) for r in split.records] == records
    assert split.next_cursor == cursor and split.limit == 100


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_nesting_depth_matches_a_recursive_count(value: Any):
    def depth(item: Any) -> int:
        if isinstance(item, list):
            return 1 + max((depth(v) for v in item), default=0)
        if isinstance(item, dict):
            return 1 + max((depth(v) for v in item.values()), default=0)
        return 0

    assert nesting_depth(msgspec.json.encode(value), 64) == depth(value)

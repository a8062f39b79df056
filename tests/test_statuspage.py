"""The status page's pure parts: rendering, escaping, the action guard, the rate counter."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import msgspec
import pytest

from streamapp.core.health import new_state, on_poll_failure, on_poll_success, on_tick
from streamapp.core.redact import REDACTOR
from streamapp.worker import statuspage
from streamapp.worker.statuspage import (
    CSRF_HEADER,
    PAGE_HEADERS,
    WINDOW_MINUTES,
    MinuteCounter,
    PageModel,
    check_action,
    decode_action_request,
    new_csrf_token,
    records_per_minute,
    render_page,
    status_since,
)
from tests.helpers import edited

TOKEN = "Zq3-csrf-token-for-unit-tests"
HOST = "127.0.0.1:6066"
HOSTILE = "<script>alert(\"pwned\")</script><img src=x onerror='alert(1)'> & \"q\" 'a'"


#: a source as the status page model has it, for ``_source`` to edit
SOURCE: dict[str, Any] = {
    "name": "prod-us",
    "status": "ok",
    "since": "2026-11-26T08:00:00.000Z",
    "last_record_at": "2026-11-27T09:57:00.000Z",
    "last_record_age_seconds": 180.0,
    "checkpoint": "2026-11-27T09:58:00.000Z",
    "checkpoint_lag_seconds": 120.0,
    "records_per_minute": list(range(60)),
    "last_error": {
        "kind": "timeout",
        "message": "PagerDuty at api.pagerduty.com did not answer in time",
        "at": "2026-11-27T09:40:00.000Z",
    },
    "notifications": [
        {
            "kind": "source_recovered",
            "message": "source 'prod-us' recovered from source_degraded",
            "at": "2026-11-27T09:45:00.000Z",
        }
    ],
    "channels": ["slack-0", "webhook-1"],
}


def _source(**changes: Any) -> dict[str, Any]:
    return edited(SOURCE, **changes)


def _model(*sources: dict[str, Any], **worker: Any) -> dict[str, Any]:
    return {
        "generated_at": "2026-11-27T10:00:00.000Z",
        "worker": {
            "leader": True,
            "ready": True,
            "pipeline": {"status": "ok", "message": None},
            **worker,
        },
        "sources": list(sources) or [_source()],
    }


class _Parsed(HTMLParser):
    """Tags, attributes and text of a document, as a browser's parser sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if not (self._in and self._in[-1] in ("script", "style")):
            self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def joined(self) -> str:
        return " ".join(" ".join(self.text).split())


# --------------------------------------------------------------------------- rendering


def test_markup_in_names_and_messages_renders_inert() -> None:
    model = _model(
        _source(
            name=HOSTILE,
            status=HOSTILE,
            last_error={"kind": HOSTILE, "message": HOSTILE, "at": None},
            notifications=[{"kind": HOSTILE, "message": HOSTILE, "at": "2026-11-27T09:00:00Z"}],
            channels=[HOSTILE],
        ),
        pipeline={"status": "stalled", "message": HOSTILE},
    )
    html = render_page(model, csrf_token='"><script>x</script>')
    parsed = _Parsed(html)
    assert len(parsed.named("script")) == 1  # the page's own, nothing injected
    assert parsed.named("img") == []
    assert all(not any(k.startswith("on") for k in attrs) for _, attrs in parsed.tags)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    # the text reads back as it was written, attributes too
    assert HOSTILE in parsed.joined()
    assert any(attrs.get("data-source") == HOSTILE for attrs in parsed.named("button"))
    csrf = [a for a in parsed.named("meta") if a.get("name") == "streamapp-csrf"]
    assert csrf[0]["content"] == '"><script>x</script>'


def test_every_field_appears() -> None:
    html = render_page(_model(), csrf_token=TOKEN)
    text = _Parsed(html).joined()
    for expected in (
        "prod-us",
        "OK",  # the status label, not colour alone
        "for 1 d 2 h, since 2026-11-26 08:00 UTC",
        "3 min ago",  # newest record
        'title="2026-11-27 09:57:00 UTC"',
        "2 min",  # checkpoint lag
        'title="checkpoint at 2026-11-27 09:58:00 UTC"',
        "1,770 in the last hour · peak 59/min",
        "PagerDuty did not answer in time",  # the last error in plain words
        "PagerDuty at api.pagerduty.com did not answer in time",
        "20 min ago",
        "Recovered",
        "source &#x27;prod-us&#x27; recovered from source_degraded",
        "15 min ago",
        "slack-0",
        "webhook-1",
        "Leader",
        "Ready",
        "Pipeline OK",
        "2026-11-27 10:00:00 UTC",
        "Verify settings",
        "Send test notification",
        f'<meta name="streamapp-csrf" content="{TOKEN}">',
        '<meta http-equiv="refresh" content="30">',
        'data-refresh="20"',
    ):
        assert expected in html or expected in text, expected


def test_each_status_has_a_text_label_and_its_own_class() -> None:
    statuses = ["ok", "stale", "degraded", "error", "stalled", "paused"]
    model = _model(*(_source(name=f"s-{s}", status=s) for s in statuses))
    html = render_page(model, csrf_token=TOKEN)
    for css, label in (
        ("ok", "OK"),
        ("stale", "Stale"),
        ("degraded", "Degraded"),
        ("error", "Error"),
        ("stalled", "Stalled"),
        ("unknown", "paused"),
    ):
        assert re.search(
            rf'<span class="badge {css}"><span aria-hidden="true">.</span> {label}<', html
        )
    assert "<title>Error · streamapp status</title>" in html
    assert "6 sources: 1 error, 1 stalled, 1 degraded, 1 stale, 1 ok, 1 paused" in html


def test_the_chart_has_60_bars_and_a_label() -> None:
    for series in ([], [5] * 10, list(range(100))):
        html = render_page(_model(_source(records_per_minute=series)), csrf_token=TOKEN)
        svg = re.search(r'<svg class="chart".*?</svg>', html, re.S)
        assert svg is not None
        assert svg.group(0).count("<rect ") == WINDOW_MINUTES
        assert 'role="img" aria-labelledby="source-0-chart"' in svg.group(0)
    html = render_page(_model(_source(records_per_minute=[0] * 59 + [7])), csrf_token=TOKEN)
    assert (
        "Records per minute over the last hour: 7 in total, peak 7 a minute, 7 so far this minute"
        in html
    )
    assert "7 records, this minute, so far" in html
    html = render_page(_model(_source(records_per_minute=[])), csrf_token=TOKEN)
    assert "Records per minute over the last hour: none" in html


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (2.0, "just now"),
        (42.0, "42 s ago"),
        (180.0, "3 min ago"),
        (7500.0, "2 h 5 min ago"),
        (7200.0, "2 h ago"),
        (273600.0, "3 d 4 h ago"),
    ],
)
def test_ages_are_relative_with_the_exact_time_as_title(age: float, shown: str) -> None:
    html = render_page(_model(_source(last_record_age_seconds=age)), csrf_token=TOKEN)
    assert f'title="2026-11-27 09:57:00 UTC">{shown}</time>' in html


def test_missing_values_read_as_words() -> None:
    source = _source(
        since=None,
        last_record_at=None,
        last_record_age_seconds=None,
        checkpoint=None,
        checkpoint_lag_seconds=None,
        last_error=None,
        notifications=[],
        channels=[],
    )
    text = _Parsed(render_page(_model(source), csrf_token=TOKEN)).joined()
    assert "Newest record none yet" in text
    assert "Checkpoint lag no checkpoint yet" in text
    assert "No error since the worker started watching." in text
    assert "Recent notifications None yet." in text
    assert "Channels none" in text


def test_a_stalled_pipeline_shows_a_banner() -> None:
    model = _model(pipeline={"status": "stalled", "message": "no offset committed for 5 min"})
    html = render_page(model, csrf_token=TOKEN)
    assert '<div class="banner" role="alert"><strong>Pipeline stalled:</strong>' in html
    assert "no offset committed for 5 min" in html
    assert "Pipeline stalled</span>" in html


def test_only_the_five_newest_notifications_show() -> None:
    notes = [
        {"kind": "source_stale", "message": f"note {i}", "at": f"2026-11-27T0{i}:00:00Z"}
        for i in range(8)
    ]
    text = _Parsed(render_page(_model(_source(notifications=notes)), csrf_token=TOKEN)).joined()
    assert [f"note {i}" in text for i in range(8)] == [False] * 3 + [True] * 5
    assert text.index("note 7") < text.index("note 3")
    assert "and 3 older" in text


def test_a_registered_secret_never_reaches_the_page() -> None:
    secret = "u+Hx8mSecretRoutingKey"
    REDACTOR.add(secret)
    source = _source(
        last_error={"kind": "transport", "message": f"POST https://x/{secret} failed", "at": None}
    )
    html = render_page(_model(source), csrf_token=TOKEN)
    assert secret not in html
    assert "POST https://x/**** failed" in html


def test_struct_and_dict_models_render_alike() -> None:
    model = _model()
    struct = msgspec.convert(model, PageModel)
    assert render_page(struct, csrf_token=TOKEN) == render_page(model, csrf_token=TOKEN)
    with pytest.raises(msgspec.ValidationError):
        render_page({"worker": model["worker"]}, csrf_token=TOKEN)


def test_the_policy_allows_exactly_the_pages_own_script_and_style() -> None:
    html = render_page(_model(), csrf_token=TOKEN)
    policy = PAGE_HEADERS["Content-Security-Policy"]
    for tag in ("script", "style"):
        body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert body is not None
        digest = base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert "frame-ancestors 'none'" in policy
    assert PAGE_HEADERS["X-Frame-Options"] == "DENY"


# --------------------------------------------------------------------------- actions


def _headers(**changes: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "Content-Type": "application/json",
        CSRF_HEADER: TOKEN,
        "Origin": f"http://{HOST}",
        "Sec-Fetch-Site": "same-origin",
    }
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return {k: v for k, v in headers.items() if v is not None}


def test_a_same_origin_post_with_the_token_is_allowed() -> None:
    assert check_action("POST", _headers(), HOST, TOKEN) is None
    # curl and older browsers send neither Origin nor Sec-Fetch-Site
    assert check_action("POST", _headers(Origin=None, Sec_Fetch_Site=None), HOST, TOKEN) is None
    # header names are case-insensitive, a charset may follow the type
    lower = {
        k.lower(): v for k, v in _headers(Content_Type="application/json; charset=utf-8").items()
    }
    assert check_action("post", lower, HOST, TOKEN) is None


@pytest.mark.parametrize(
    ("method", "changes", "reason"),
    [
        ("GET", {}, "actions need a POST, not 'GET'"),
        ("PUT", {}, "actions need a POST, not 'PUT'"),
        ("OPTIONS", {}, "actions need a POST, not 'OPTIONS'"),
        ("POST", {CSRF_HEADER: None}, "the X-Streamapp-CSRF header is missing"),
        ("POST", {CSRF_HEADER: ""}, "the X-Streamapp-CSRF header is missing"),
        ("POST", {CSRF_HEADER: TOKEN + "x"}, "does not match this worker's token"),
        ("POST", {CSRF_HEADER: "wrong"}, "does not match this worker's token"),
        ("POST", {"Origin": "http://evil.example"}, "origin 'http://evil.example'"),
        ("POST", {"Origin": "http://127.0.0.1:6067"}, "origin 'http://127.0.0.1:6067'"),
        ("POST", {"Origin": "null"}, "origin 'null'"),
        ("POST", {"Origin": f"https://{HOST}"}, f"origin 'https://{HOST}'"),
        ("POST", {"Sec-Fetch-Site": "cross-site"}, "refused a 'cross-site' request"),
        ("POST", {"Sec-Fetch-Site": "same-site"}, "refused a 'same-site' request"),
        ("POST", {"Sec-Fetch-Site": "none"}, "refused a 'none' request"),
        ("POST", {"Content-Type": "text/plain"}, "actions take a JSON body"),
        ("POST", {"Content-Type": "application/x-www-form-urlencoded"}, "take a JSON body"),
        ("POST", {"Content-Type": None}, "actions take a JSON body"),
    ],
)
def test_requests_without_same_origin_evidence_are_refused(
    method: str, changes: dict[str, str | None], reason: str
) -> None:
    headers = _headers()
    headers.update({k: v for k, v in changes.items() if v is not None})
    for name in [k for k, v in changes.items() if v is None]:
        del headers[name]
    refused = check_action(method, headers, HOST, TOKEN)
    assert refused is not None and reason in refused
    assert "\n" not in refused and TOKEN not in refused


def test_a_worker_without_a_token_refuses_every_action() -> None:
    refused = check_action("POST", _headers(**{CSRF_HEADER: ""}), HOST, "")
    assert refused == "this worker has no CSRF token configured: actions are off"


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(statuspage.hmac, "compare_digest", spy)
    assert check_action("POST", _headers(), HOST, TOKEN) is None
    assert calls == [(TOKEN.encode(), TOKEN.encode())]


def test_foreign_values_in_a_reason_are_short_and_on_one_line() -> None:
    refused = check_action("POST", _headers(Origin="http://a\r\nb" + "x" * 200), HOST, TOKEN)
    assert refused is not None
    assert "\r" not in refused and "\n" not in refused and len(refused) < 200


def test_tokens_are_fresh_and_long() -> None:
    assert new_csrf_token() != new_csrf_token()
    assert len(new_csrf_token()) >= 40


def test_action_bodies_name_a_source() -> None:
    assert decode_action_request(b'{"source": "prod-us"}').source == "prod-us"
    with pytest.raises(msgspec.ValidationError):
        decode_action_request(b"{}")
    with pytest.raises(msgspec.DecodeError):
        decode_action_request(b"source=prod-us")


# --------------------------------------------------------------------------- records per minute

NOW = 1_800_000_030.0  # 30 s into a minute


def test_records_per_minute_buckets_the_last_hour_by_wall_clock_minute() -> None:
    events = [
        (NOW, 1),
        (NOW - 30, 2),  # the start of the current minute
        (NOW - 31, 4),  # the minute before
        (NOW - 59 * 60, 8),  # the oldest minute kept
        (NOW - 60 * 60, 16),  # an hour ago: out
        (NOW + 60, 32),  # the future: out
    ]
    series = records_per_minute(events, NOW)
    assert len(series) == WINDOW_MINUTES
    assert series[-1] == 3 and series[-2] == 4 and series[0] == 8
    assert sum(series) == 15
    assert records_per_minute([], NOW) == [0] * WINDOW_MINUTES


def test_the_counter_agrees_with_records_per_minute() -> None:
    counter = MinuteCounter()
    events = [(NOW - 7 * k, k % 5) for k in range(600)]
    for at, n in reversed(events):
        counter.add("prod-us", n, at)
    assert counter.series("prod-us", NOW) == records_per_minute(events, NOW)
    assert counter.series("unknown", NOW) == [0] * WINDOW_MINUTES
    assert counter.sources() == ["prod-us"]


def test_the_counter_keeps_at_most_an_hour_of_buckets_per_source() -> None:
    counter = MinuteCounter()
    for minute in range(10_000):
        counter.add("a", 1, NOW + minute * 60)
        counter.add("b", 2, NOW + minute * 60)
        assert counter.buckets("a") <= WINDOW_MINUTES
    later = NOW + 9_999 * 60
    assert counter.buckets("a") == counter.buckets("b") == WINDOW_MINUTES
    assert counter.series("a", later) == [1] * WINDOW_MINUTES
    # a late add for a minute already dropped changes nothing
    counter.add("a", 100, later - 3600)
    assert counter.series("a", later) == [1] * WINDOW_MINUTES
    assert counter.buckets("a") == WINDOW_MINUTES
    # zero adds no bucket; negative is a bug
    counter.add("c", 0, NOW)
    assert counter.buckets("c") == 0
    with pytest.raises(ValueError):
        counter.add("c", -1, NOW)
    counter.forget("a")
    assert counter.buckets("a") == 0 and counter.sources() == ["b", "c"]


# --------------------------------------------------------------------------- since when


def test_status_since_follows_the_health_state() -> None:
    start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    day = timedelta(days=1)
    state = new_state("prod-us", now=start)
    assert status_since(state) == start  # never had a problem: since watching began
    failed_at = start + timedelta(minutes=5)
    state, _ = on_poll_failure(
        state, now=failed_at, error_kind="unauthorized", http_status=401, message="401"
    )
    assert status_since(state) == failed_at
    fixed_at = start + timedelta(minutes=30)
    state, _ = on_poll_success(state, now=fixed_at, newest_record_at=fixed_at, health_check=day)
    assert status_since(state) == fixed_at
    stale_at = fixed_at + day
    state, _ = on_tick(state, now=stale_at, health_check=day, started_at=start)
    assert status_since(state) == stale_at

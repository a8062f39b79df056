"""The status page in a real browser: Debian's chromium, headless, driven by selenium.

An aiohttp server on 127.0.0.1 serves ``render_page`` of a realistic model (three sources:
ok, stale, error) with ``PAGE_HEADERS`` (so the page must work under its own CSP), and fake
action handlers that apply ``check_action`` exactly as the worker's views will. A second
server, on another port, plays a hostile page that tries to trigger an action.

Needs ``apt-get install -y chromium chromium-driver``; skipped only when /usr/bin/chromium
is absent. Writes a screenshot of the sample page to the temporary directory.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from streamapp.worker.statuspage import (
    PAGE_HEADERS,
    TEST_NOTIFICATION_PATH,
    VERIFY_PATH,
    ActionAnswer,
    ChannelResult,
    check_action,
    decode_action_request,
    render_page,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: the sample page's picture (the README's comes from tests/test_statuspage_worker.py)
SCREENSHOT = Path(tempfile.gettempdir()) / "streamapp-status-page-sample.png"
TOKEN = "t0k3n-for-the-browser-test-8c1f2e"
WAIT = 10.0

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (apt-get install -y chromium chromium-driver)",
)


def _series(seed: int, *, base: float, stop_after: int | None = None) -> list[int]:
    """60 plausible per-minute counts: a base rate with noise and a few bursts."""
    rng = random.Random(seed)
    series = []
    for minute in range(60):
        if stop_after is not None and minute >= stop_after:
            series.append(0)
            continue
        burst = rng.choice([0, 0, 0, 0, 0, 0, 1]) * rng.randint(10, 40)
        series.append(max(int(base + rng.gauss(0, base / 4)) + burst, 0))
    return series


SAMPLE_MODEL: dict[str, Any] = {
    "generated_at": "2026-11-27T10:00:00.000Z",
    "worker": {"leader": True, "ready": True, "pipeline": {"status": "ok", "message": None}},
    "sources": [
        {
            "name": "prod-us",
            "status": "ok",
            "since": "2026-11-25T14:12:00.000Z",
            "last_record_at": "2026-11-27T09:58:47.120Z",
            "last_record_age_seconds": 72.88,
            "checkpoint": "2026-11-27T09:58:30.000Z",
            "checkpoint_lag_seconds": 90.0,
            "records_per_minute": _series(1, base=24),
            "last_error": {
                "kind": "rate_limited",
                "message": "PagerDuty answered 429 Too Many Requests (ratelimit-reset 12s)",
                "at": "2026-11-25T14:09:00.000Z",
            },
            "notifications": [
                {
                    "kind": "source_degraded",
                    "message": "source 'prod-us': 3 polls in a row failed (rate_limited, HTTP"
                    " 429) since 2026-11-25T14:05:00.000Z; retrying with backoff, check"
                    " PagerDuty's status and the network if it persists",
                    "at": "2026-11-25T14:09:00.000Z",
                },
                {
                    "kind": "source_recovered",
                    "message": "source 'prod-us' recovered from source_degraded: polling"
                    " PagerDuty succeeds again after 4 failed poll(s)",
                    "at": "2026-11-25T14:12:00.000Z",
                },
            ],
            "channels": ["slack-0", "pagerduty-0"],
            "health_check_seconds": 86400.0,
        },
        {
            "name": "prod-eu",
            "status": "stale",
            "since": "2026-11-27T06:30:00.000Z",
            "last_record_at": "2026-11-26T06:29:12.500Z",
            "last_record_age_seconds": 99047.5,
            "checkpoint": "2026-11-27T09:59:15.000Z",
            "checkpoint_lag_seconds": 45.0,
            "records_per_minute": [0] * 60,
            "last_error": None,
            "notifications": [
                {
                    "kind": "source_stale",
                    "message": "source 'prod-eu' is stale: no audit record for 1d0h (newest at"
                    " 2026-11-26T06:29:12.500Z; health check 1d); check that the worker"
                    " polls this source and the account has audit activity",
                    "at": "2026-11-27T06:30:00.000Z",
                }
            ],
            "channels": ["webhook-0"],
            "health_check_seconds": 86400.0,
        },
        {
            "name": "staging",
            "status": "error",
            "since": "2026-11-27T09:12:04.000Z",
            "last_record_at": "2026-11-27T08:55:41.000Z",
            "last_record_age_seconds": 3859.0,
            "checkpoint": "2026-11-27T09:11:00.000Z",
            "checkpoint_lag_seconds": 2940.0,
            "records_per_minute": _series(3, base=6, stop_after=12),
            "last_error": {
                "kind": "unauthorized",
                "message": "PagerDuty answered 401 Unauthorized at api.pagerduty.com: Invalid"
                " API key or the key belongs to an account in another region",
                "at": "2026-11-27T09:59:04.000Z",
            },
            "notifications": [
                {
                    "kind": "source_error",
                    "message": "source 'staging' cannot read audit records: PagerDuty refused"
                    " the API token (401): wrong or revoked token, or wrong region (an EU"
                    " account needs https://api.eu.pagerduty.com, a US account"
                    " https://api.pagerduty.com); fix the source's credentials or API URL",
                    "at": "2026-11-27T09:12:04.000Z",
                }
            ],
            "channels": ["slack-0", "webhook-0"],
            "consecutive_failures": 48,
            "health_check_seconds": 86400.0,
        },
    ],
}

VERDICTS = {
    "prod-us": (True, "prod-us: ok"),
    "prod-eu": (True, "prod-eu: ok"),
    "staging": (False, "staging: bad token or wrong region (401): Invalid API key"),
}


@dataclass
class Seen:
    """What the fake action handlers saw: every request's origin and check_action's verdict."""

    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    performed: list[tuple[str, str]] = field(default_factory=list)


def _json(answer: ActionAnswer, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(answer), status=status, content_type="application/json"
    )


def _status_app(seen: Seen) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        html = render_page(SAMPLE_MODEL, csrf_token=TOKEN)
        return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)

    async def action(request: web.Request) -> web.Response:
        reason = check_action(request.method, request.headers, request.host, TOKEN)
        seen.requests.append((request.path, request.headers.get("Origin"), reason))
        if reason is not None:
            return _json(ActionAnswer(ok=False, message=reason), status=403)
        try:
            source = decode_action_request(await request.read()).source
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _json(ActionAnswer(ok=False, message=f"bad request: {exc}"), status=400)
        seen.performed.append((request.path, source))
        if request.path == VERIFY_PATH:
            ok, line = VERDICTS[source]
            return _json(ActionAnswer(ok=ok, message=line, source=source))
        results = [
            ChannelResult(channel="slack-0", ok=True, message="delivered (HTTP 200)"),
            ChannelResult(channel="pagerduty-0", ok=True, message="delivered (HTTP 202)"),
        ]
        return _json(
            ActionAnswer(ok=True, message="sent to 2 of 2 channels", source=source, results=results)
        )

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_route("*", VERIFY_PATH, action)
    app.router.add_route("*", TEST_NOTIFICATION_PATH, action)
    return app


HOSTILE_PAGE = """<!DOCTYPE html><html><head><title>hostile</title></head><body><pre id="out"></pre>
<script>
const target = "TARGET";
const body = JSON.stringify({source: "prod-us"});
const done = {};
const show = () => {
  document.getElementById("out").textContent = JSON.stringify(done);
  if (Object.keys(done).length === 2) document.title = "done";
};
// a "simple" request: no preflight, so it reaches the worker, which must refuse it
fetch(target, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body})
  .then(() => { done.simple = "sent"; }, (e) => { done.simple = "error " + e; }).then(show);
// even with the right token: the custom header needs a preflight the worker never approves
fetch(target, {method: "POST", headers: {"Content-Type": "application/json",
  "X-Streamapp-CSRF": "TOKEN"}, body})
  .then((r) => { done.preflighted = "answered " + r.status; },
        (e) => { done.preflighted = "blocked " + e; }).then(show);
</script></body></html>"""


def _hostile_app(target: str) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        html = HOSTILE_PAGE.replace("TARGET", target).replace("TOKEN", TOKEN)
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    return app


@dataclass
class Site:
    url: str
    hostile_url: str
    seen: Seen


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """Both servers on their own event loop in a thread (selenium's calls block)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="statuspage-servers", daemon=True)
    thread.start()
    seen = Seen()
    status = TestServer(_status_app(seen), host="127.0.0.1")
    asyncio.run_coroutine_threadsafe(status.start_server(), loop).result(WAIT)
    target = str(status.make_url(VERIFY_PATH))
    hostile = TestServer(_hostile_app(target), host="127.0.0.1")
    asyncio.run_coroutine_threadsafe(hostile.start_server(), loop).result(WAIT)
    try:
        yield Site(str(status.make_url("/")), str(hostile.make_url("/")), seen)
    finally:
        for server in (hostile, status):
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    assert CHROMEDRIVER.exists(), "chromium is installed but not chromium-driver"
    profile = tempfile.mkdtemp(prefix="statuspage-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver: WebDriver, url: str) -> None:
    driver.get(url)
    # the buttons start disabled and the page's script enables them: it ran under the CSP
    WebDriverWait(driver, WAIT).until(
        lambda d: all(b.is_enabled() for b in d.find_elements(By.CSS_SELECTOR, "button"))
    )


def _answer_of(driver: WebDriver, source_index: int) -> str:
    answer = driver.find_element(By.ID, f"source-{source_index}-answer")
    return str(answer.text)


def _click(driver: WebDriver, source_index: int, label: str) -> str:
    section = driver.find_element(By.ID, f"source-{source_index}")
    button = section.find_element(By.XPATH, f".//button[normalize-space()='{label}']")
    button.click()
    WebDriverWait(driver, WAIT).until(
        lambda d: _answer_of(d, source_index).startswith(f"{label}: ")
    )
    return _answer_of(driver, source_index)


def test_page_shows_each_source_with_state_ages_and_error(site: Site, browser: WebDriver) -> None:
    _open(browser, site.url)
    text = browser.find_element(By.TAG_NAME, "body").text
    assert browser.title == "Error · streamapp status"
    for expected in (
        "prod-us",
        "prod-eu",
        "staging",
        "3 sources: 1 error, 1 stale, 1 ok",
        "for 1 d 19 h, since 2026-11-25 14:12 UTC",
        "for 3 h 30 min, since 2026-11-27 06:30 UTC",
        "for 47 min, since 2026-11-27 09:12 UTC",
        "1 min ago",  # prod-us's newest record
        "1 d 3 h ago",  # prod-eu's
        "49 min",  # staging's checkpoint lag
        "PagerDuty refused the API token (401)",
        "48 failed polls in a row",
        "Invalid API key or the key belongs to an account in another region",
        "none in the last hour",
        "Leader",
        "Pipeline OK",
    ):
        assert expected in text, expected
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 3
    assert all(len(c.find_elements(By.CSS_SELECTOR, "rect")) == 60 for c in charts)
    # colours come from the page's own stylesheet, allowed by its CSP
    badge = browser.find_element(By.CSS_SELECTOR, "#source-2 .badge")
    assert badge.value_of_css_property("background-color") == "rgba(255, 235, 233, 1)"
    exact = browser.find_element(By.CSS_SELECTOR, "#source-0 .facts time")
    assert exact.get_attribute("title") == "2026-11-27 09:58:47 UTC"
    assert TOKEN not in text


def test_verify_settings_shows_the_verdict(site: Site, browser: WebDriver) -> None:
    _open(browser, site.url)
    assert _click(browser, 0, "Verify settings") == "Verify settings: prod-us: ok"
    answer = _click(browser, 2, "Verify settings")
    assert answer == "Verify settings: staging: bad token or wrong region (401): Invalid API key"
    assert "bad" in (browser.find_element(By.ID, "source-2-answer").get_attribute("class") or "")
    assert (VERIFY_PATH, "prod-us") in site.seen.performed


def test_test_notification_shows_each_channel(site: Site, browser: WebDriver) -> None:
    _open(browser, site.url)
    answer = _click(browser, 0, "Send test notification")
    assert answer.splitlines() == [
        "Send test notification: sent to 2 of 2 channels",
        "slack-0: sent (delivered (HTTP 200))",
        "pagerduty-0: sent (delivered (HTTP 202))",
    ]


def test_a_post_from_another_origin_is_refused(site: Site, browser: WebDriver) -> None:
    hostile_origin = site.hostile_url.rstrip("/")
    before = len(site.seen.performed)
    browser.get(site.hostile_url)
    WebDriverWait(browser, WAIT).until(lambda d: d.title == "done")
    outcome = msgspec.json.decode(browser.find_element(By.ID, "out").text)
    assert outcome["simple"] == "sent"  # no-cors: the browser sent it, the page reads nothing
    assert outcome["preflighted"].startswith("blocked TypeError")
    from_hostile = [r for r in site.seen.requests if r[1] == hostile_origin]
    # the simple POST reached the handler and was refused; the preflight (OPTIONS) too
    reasons = [reason for _, _, reason in from_hostile]
    assert reasons and all(reason is not None for reason in reasons)
    assert any("Sec-Fetch-Site" in (reason or "") for reason in reasons)
    assert len(site.seen.performed) == before


def test_screenshot(site: Site, browser: WebDriver) -> None:
    """A picture of the sample page after a verify and a test notification."""
    _open(browser, site.url)
    _click(browser, 2, "Verify settings")
    _click(browser, 0, "Send test notification")
    height, frame = browser.execute_script(
        "return [document.documentElement.scrollHeight, outerHeight - innerHeight]"
    )
    browser.set_window_size(1280, int(height) + int(frame))
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return window.innerHeight") >= height
    )
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    browser.set_window_size(1280, 900)

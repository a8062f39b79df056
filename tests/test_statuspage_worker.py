"""The status page of a running worker, in a real browser (Debian's chromium, headless).

A worker polls the simulator for two sources (one healthy, one with a revoked token) and
serves its page; the browser checks what it renders, clicks "Verify settings" and "Send
test notification", and a cross-site POST is refused. The screenshot in the README comes
from this test: STREAMAPP_UPDATE_SCREENSHOT=1 writes it to docs/status-page.png (otherwise
it goes to the test's temporary directory, so a test run leaves the clone clean). Skips,
saying why, when chromium is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamapp.devtools.broker import free_port
from streamapp.devtools.simulator import SimulatorThread, generate_records
from tests.kafka_harness import Kafka, Worker
from tests.receiver import ReceiverThread
from tests.test_statuspage_browser import CHROMIUM, browser  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="chromium is not installed: apt-get install chromium"
    ),
]

GOOD = "statuspage-good-token-0123456789"
REVOKED = "statuspage-revoked-token-0123456"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "status-page.png"
WAIT = 60


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


async def wait_for(check, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, KeyError, ValueError):
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} within {timeout}s")


async def test_the_page_of_a_running_worker_shows_health_and_its_buttons_work(
    kafka: Kafka,
    tmp_path: Path,
    browser,  # noqa: F811
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with SimulatorThread(tokens={GOOD: "ok", REVOKED: "revoked"}) as sim, ReceiverThread() as hook:
        now = datetime.now(UTC)
        sim.add_records(generate_records(120, start=now - timedelta(days=2), end=now, seed=7))
        tokens = {"prod-us": tmp_path / "good", "staging": tmp_path / "revoked"}
        tokens["prod-us"].write_text(GOOD)
        tokens["staging"].write_text(REVOKED)
        lines = []
        for name, token in tokens.items():
            lines += [
                "[[sources]]",
                f'name = "{name}"',
                f'token_file = "{token}"',
                f'api_url = "{sim.base_url}"',
                'poll_interval = "2s"',
                'lookback = "7d"',
                "[[sources.notifications]]",
                'type = "webhook"',
                'name = "soc-hook"',
                f'url = "{hook.url("/ok/soc")}"',
            ]
        sources = tmp_path / "sources.toml"
        sources.write_text("\n".join(lines) + "\n")
        env = {
            **kafka.env(),
            "STREAMAPP_SOURCES_FILE": str(sources),
            "STREAMAPP_PARTITIONS": "2",
            "STREAMAPP_WEB_PORT": str(port),
        }
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            await wait_for(
                lambda: (
                    {s["source_name"]: s["status"] for s in get_json(f"{base}/health")["sources"]}
                    == {"prod-us": "ok", "staging": "error"}
                ),
                "the worker's health to show prod-us ok and staging in error",
            )
            await wait_for(
                lambda: get_json(f"{base}/api/status")["sources"][0]["last_record_at"],
                "a record of prod-us",
            )
            browser.set_window_size(1280, 1500)
            browser.get(f"{base}/")
            WebDriverWait(browser, WAIT).until(
                lambda d: all(b.is_enabled() for b in d.find_elements(By.CSS_SELECTOR, "button"))
            )
            text = browser.find_element(By.TAG_NAME, "body").text
            assert "prod-us" in text and "staging" in text
            assert "401" in text  # the revoked token, in plain words
            assert GOOD not in browser.page_source and REVOKED not in browser.page_source
            assert hook.url("/ok/soc") not in browser.page_source  # channel URLs are secrets
            charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
            assert len(charts) == 2

            def click(index: int, label: str) -> str:
                section = browser.find_element(By.ID, f"source-{index}")
                section.find_element(By.XPATH, f".//button[normalize-space()='{label}']").click()
                answer = browser.find_element(By.ID, f"source-{index}-answer")
                WebDriverWait(browser, WAIT).until(lambda d: answer.text.startswith(f"{label}: "))
                return str(answer.text)

            assert "ok: audit records readable" in click(0, "Verify settings")
            assert "bad token or wrong region (401)" in click(1, "Verify settings")
            sent = click(0, "Send test notification")
            assert "delivered to 1 of 1" in sent
            await wait_for(
                lambda: any(b.get("kind") == "test_notification" for b in hook.bodies("/ok/soc")),
                "the test notification at the webhook",
            )
            shot = (
                SCREENSHOT
                if os.environ.get("STREAMAPP_UPDATE_SCREENSHOT")
                else tmp_path / "page.png"
            )
            assert browser.save_screenshot(str(shot))

            # a POST without the page's token (what a cross-site form could send) is refused
            request = urllib.request.Request(
                f"{base}/actions/verify",
                data=b'{"source": "prod-us"}',
                headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 403
            # faust's own pages are off unless asked for
            for page in ("/router/", "/table/"):
                with pytest.raises(urllib.error.HTTPError) as missing:
                    urllib.request.urlopen(base + page, timeout=5)
                assert missing.value.code == 404
        finally:
            worker.stop()

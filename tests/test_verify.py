"""``verify settings`` against the PagerDuty simulator over real HTTP, and as a command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from streamapp.config import SourceConfig
from streamapp.core.credentials import ApiKey
from streamapp.core.errors import ConfigError
from streamapp.core.redact import Secret
from streamapp.devtools.simulator import FaultRule, SimulatorThread
from streamapp.pagerduty.verify import Verdict, exit_status, main, verify_all, verify_source

ROOT = Path(__file__).resolve().parent.parent
TOKENS = {
    "ok": "tok-ok-u+Xr1p8sdQ2kZ",
    "revoked": "tok-revoked-aG7hQ0pL3z",
    "no_plan": "tok-noplan-Vb2nM5cX8k",
    "forbidden": "tok-forbidden-Wq4eR6tY1u",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(tokens={token: state for state, token in TOKENS.items()}) as thread:
        now = datetime.now(UTC)
        thread.generate(3, start=now - timedelta(hours=2), end=now - timedelta(minutes=1))
        yield thread


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def source(name: str, token: str, api_url: str) -> SourceConfig:
    return SourceConfig(
        name=name,
        credentials=ApiKey(Secret(token)),
        api_url=api_url,
        poll_interval=timedelta(seconds=60),
        lookback=timedelta(hours=24),
        health_check=timedelta(days=1),
        overlap=timedelta(minutes=5),
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_no_token(verdict: Verdict) -> None:
    for token in TOKENS.values():
        assert token not in verdict.line
        assert token not in repr(verdict)
    assert "\n" not in verdict.line


def assert_failed(verdict: Verdict, kind: str, start: str) -> None:
    """A failed check of this ``kind``: one line starting ``start``, and no token in it."""
    assert not verdict.ok
    assert verdict.kind == kind
    assert verdict.line.startswith(start)
    assert_no_token(verdict)


async def test_ok_says_records_are_readable(sim: SimulatorThread, http: httpx.AsyncClient) -> None:
    verdict = await verify_source(source("main", TOKENS["ok"], sim.base_url), http)
    assert verdict.ok
    assert verdict.kind == "ok"
    assert verdict.line == "main: ok: audit records readable (at 127.0.0.1, 1 record in the probe)"
    assert_no_token(verdict)
    assert exit_status([verdict]) == 0
    (request,) = [r for r in sim.simulator.requests if r.query == {"limit": "1"}][-1:]
    assert request.path == "/audit/records"


@pytest.mark.parametrize(
    ("state", "kind", "start"),
    [
        ("revoked", "unauthorized", "acme: bad token or wrong region (401): "),
        ("no_plan", "plan_lacks_audit_trail", "acme: plan lacks Audit Trail (402): "),
        ("forbidden", "forbidden", "acme: missing permission or scope (403): "),
    ],
)
async def test_refusals_say_exactly_what_is_wrong(
    sim: SimulatorThread, http: httpx.AsyncClient, state: str, kind: str, start: str
) -> None:
    verdict = await verify_source(source("acme", TOKENS[state], sim.base_url), http)
    assert_failed(verdict, kind, start)
    assert exit_status([verdict]) == 1


async def test_unknown_token_is_a_401_too(sim: SimulatorThread, http: httpx.AsyncClient) -> None:
    verdict = await verify_source(source("acme", "never-issued-token-123", sim.base_url), http)
    assert verdict.kind == "unauthorized"
    assert "never-issued-token-123" not in verdict.line
    assert "https://api.eu.pagerduty.com" in verdict.line  # the region hint


async def test_unreachable_host(http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    verdict = await verify_source(source("acme", TOKENS["ok"], url), http, timeout=2)
    assert_failed(
        verdict, "unreachable", "acme: host unreachable: PagerDuty at 127.0.0.1 unreachable"
    )


async def test_tls_failure(sim: SimulatorThread, http: httpx.AsyncClient) -> None:
    # https:// to a plain-HTTP port: the handshake fails
    url = sim.base_url.replace("http://", "https://")
    verdict = await verify_source(source("acme", TOKENS["ok"], url), http, timeout=2)
    assert_failed(verdict, "tls", "acme: TLS failure: ")


async def test_timeout(sim: SimulatorThread, http: httpx.AsyncClient) -> None:
    sim.simulator.add_fault(FaultRule(delay=3.0))
    try:
        verdict = await verify_source(source("acme", TOKENS["ok"], sim.base_url), http, timeout=0.3)
    finally:
        sim.simulator.clear_faults()
    assert_failed(verdict, "timeout", "acme: timeout (no answer within 0.3s): ")


@pytest.mark.parametrize(
    ("status", "kind", "start"),
    [
        (429, "rate_limited", "acme: rate limited (429): "),
        (503, "server_error", "acme: server error (503): "),
    ],
)
async def test_rate_limit_and_server_error_are_not_retried(
    sim: SimulatorThread, http: httpx.AsyncClient, status: int, kind: str, start: str
) -> None:
    sim.simulator.add_fault(FaultRule(status=status, headers={"ratelimit-reset": "1"}))
    try:
        verdict = await verify_source(source("acme", TOKENS["ok"], sim.base_url), http)
    finally:
        sim.simulator.clear_faults()
    assert verdict.kind == kind
    assert verdict.line.startswith(start)


async def test_verify_all_keeps_config_order_and_only_selects_one(
    sim: SimulatorThread, http: httpx.AsyncClient
) -> None:
    sources = [
        source("good", TOKENS["ok"], sim.base_url),
        source("bad", TOKENS["revoked"], sim.base_url),
    ]
    verdicts = await verify_all(sources, http)
    assert [(v.source_name, v.ok) for v in verdicts] == [("good", True), ("bad", False)]
    assert exit_status(verdicts) == 1
    only = await verify_all(sources, http, only="good")
    assert [v.source_name for v in only] == ["good"]
    assert exit_status(only) == 0
    with pytest.raises(ConfigError, match=r"--source: no source named 'nope' \(configured: "):
        await verify_all(sources, http, only="nope")


def test_exit_status_of_nothing_is_a_failure() -> None:
    assert exit_status([]) == 1


# --------------------------------------------------------------------------- the command


def command_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAGERDUTY_", "STREAMAPP_", "KAFKA_"))
    }
    env.update(extra)
    return env


def run_verify(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamapp.pagerduty.verify", *args],
        cwd=ROOT,
        env=command_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_command_ok_and_401(sim: SimulatorThread) -> None:
    ok = run_verify(PAGERDUTY_API_TOKEN=TOKENS["ok"], PAGERDUTY_API_URL=sim.base_url)
    assert ok.returncode == 0, ok.stderr
    assert (
        ok.stdout == "pagerduty: ok: audit records readable (at 127.0.0.1, 1 record in the probe)\n"
    )

    bad = run_verify(
        "--source",
        "prod",
        PAGERDUTY_API_TOKEN=TOKENS["revoked"],
        PAGERDUTY_API_URL=sim.base_url,
        PAGERDUTY_SOURCE_NAME="prod",
    )
    assert bad.returncode == 1, bad.stderr
    lines = bad.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("prod: bad token or wrong region (401): ")
    for result in (ok, bad):
        for token in TOKENS.values():
            assert token not in result.stdout + result.stderr


def test_main_configuration_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith(("PAGERDUTY_", "STREAMAPP_", "KAFKA_")):
            monkeypatch.delenv(name)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("no PagerDuty source configured")
    assert err.count("\n") == 1

    monkeypatch.setenv("PAGERDUTY_API_TOKEN", TOKENS["ok"])
    monkeypatch.setenv("PAGERDUTY_API_URL", "http://example.com")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("PAGERDUTY_API_URL: ")
    assert TOKENS["ok"] not in err


def test_main_unknown_source_exits_2(
    sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMAPP_SOURCES_FILE", raising=False)
    monkeypatch.setenv("PAGERDUTY_API_TOKEN", TOKENS["ok"])
    monkeypatch.setenv("PAGERDUTY_API_URL", sim.base_url)
    assert main(["--source", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "--source: no source named 'nope' (configured: 'pagerduty')\n"

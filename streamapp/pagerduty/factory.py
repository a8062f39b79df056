"""The one way to build a PagerDuty client for a source: the process's HTTP pool, its
shared token gates (so polls, backfills and verify of sources that share a token share its
rate limit and pauses) and the bounds from the settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from streamapp.config import Settings, SourceConfig
from streamapp.pagerduty.auth import make_auth
from streamapp.pagerduty.client import DEFAULT_MAX_DEPTH, PagerDutyClient
from streamapp.pagerduty.ratelimit import Gates
from streamapp.pagerduty.retry import RetryPolicy

USER_AGENT = "streamapp/0.2 (+audit-records collector)"


def http_client(timeout: float = 30.0) -> httpx.AsyncClient:
    """The HTTP client every PagerDuty request of the process shares (connection pool)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


@dataclass(frozen=True)
class Bounds:
    """What every request of a client may take (see ``streamapp.pagerduty.client``)."""

    timeout: float = 30.0
    retry_attempts: int = 6
    retry_base: float = 0.5
    max_response_bytes: int = 16 * 1024 * 1024
    max_depth: int = DEFAULT_MAX_DEPTH

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            timeout=settings.http_timeout,
            retry_attempts=settings.http_retry_attempts,
            retry_base=settings.http_retry_base,
            max_response_bytes=settings.http_max_response_bytes,
            max_depth=settings.max_json_depth,
        )


class ClientFactory:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        bounds: Bounds = Bounds(),
        gates: Gates | None = None,
        on_answer: Callable[[str, str], None] | None = None,
        on_pause: Callable[[str, float], None] | None = None,
    ) -> None:
        self.http = http
        self.bounds = bounds
        self.gates = gates or Gates()
        self._on_answer = on_answer
        self._on_pause = on_pause

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        on_answer: Callable[[str, str], None] | None = None,
        on_pause: Callable[[str, float], None] | None = None,
    ) -> ClientFactory:
        return cls(
            http,
            bounds=Bounds.from_settings(settings),
            gates=Gates(in_flight=settings.backfill_concurrency),
            on_answer=on_answer,
            on_pause=on_pause,
        )

    def pause(self, fingerprint: str, seconds: float) -> None:
        """Hold the token's gate for ``seconds`` (a pause a previous process was asked for)."""
        if seconds > 0:
            gate = self.gates.for_token(fingerprint)
            gate.block_until(time.monotonic() + seconds)

    def client(
        self,
        source: SourceConfig,
        *,
        max_wait: float | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> PagerDutyClient:
        """A client for ``source``; ``max_wait`` bounds how long a 429's pause is waited out."""
        bounds = self.bounds
        auth = make_auth(source.credentials, self.http)
        report = self._on_answer
        return PagerDutyClient(
            self.http,
            base_url=source.api_url,
            auth=auth,
            gate=self.gates.for_token(auth.fingerprint),
            retry=retry
            or RetryPolicy(max_attempts=bounds.retry_attempts, base_delay=bounds.retry_base),
            timeout=timeout if timeout is not None else bounds.timeout,
            on_answer=(lambda status: report(source.name, status)) if report else None,
            max_response_bytes=bounds.max_response_bytes,
            max_depth=bounds.max_depth,
            max_wait=max_wait,
            on_pause=self._on_pause,
        )

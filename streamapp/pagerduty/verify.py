"""Verify settings: one ``GET /audit/records?limit=1`` per source, one line per verdict.

    python -m streamapp.pagerduty.verify [--source NAME] [--timeout SECONDS]

prints ``{source}: {verdict}`` for every configured source (or only ``NAME``) and exits

- ``0`` when every source can read audit records,
- ``1`` when at least one cannot (each line says exactly what is wrong),
- ``2`` on a configuration error (one line on stderr), ``--source`` naming no source
  included: ``verify_all`` raises ``ConfigError`` for it and ``main`` turns that into 2.

Each probe is one request, not retried (a verdict should be quick and say what happened),
built like every other client (``ClientFactory``): a worker's status page verifies through
the worker's own gates, so a token PagerDuty asked to pause is reported as paused instead
of being sent another request. A token, client secret or Authorization header never appears
in a line: the client's errors are built without them, and every line is scrubbed by
``REDACTOR``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

import httpx
import msgspec

from streamapp.config import SourceConfig, load_settings
from streamapp.core.errors import ApiError, ConfigError, PagerDutyError
from streamapp.core.redact import REDACTOR, one_line
from streamapp.pagerduty.factory import ClientFactory
from streamapp.pagerduty.retry import RetryPolicy

__all__ = ["Verdict", "exit_status", "main", "verify_all", "verify_source"]

#: error kind → what is wrong, as the verdict says it
_VERDICTS: Final[dict[str, str]] = {
    "unauthorized": "bad token or wrong region (401)",
    "plan_lacks_audit_trail": "plan lacks Audit Trail (402)",
    "forbidden": "missing permission or scope (403)",
    "unreachable": "host unreachable",
    "tls": "TLS failure",
    "transport": "connection failed",
    "rate_limited": "rate limited (429)",
    "rate_limit_wait": "rate limited: PagerDuty asked this token to pause",
    "protocol": "unreadable answer",
    "bad_request": "request refused (400)",
}


class Verdict(msgspec.Struct, kw_only=True, frozen=True):
    source_name: str
    ok: bool
    #: ``"{source}: {verdict}"``, one line, never a secret
    line: str
    #: ``ok`` or the error kind (``unauthorized``, ``timeout``, ``tls`` …)
    kind: str


def _where(api_url: str) -> str:
    host = urlsplit(api_url).hostname or api_url
    if host == "api.eu.pagerduty.com":
        return "region eu"
    if host == "api.pagerduty.com":
        return "region us"
    return f"at {host}"


def _verdict(source: SourceConfig, *, ok: bool, kind: str, text: str) -> Verdict:
    line = one_line(REDACTOR.scrub(f"{source.name}: {text}"))
    return Verdict(source_name=source.name, ok=ok, line=line, kind=kind)


#: what the client's messages say of its own retries: untrue for a one-shot probe
_RETRY_TAILS: Final = (
    "; retrying later",
    "; a transient server error, retried with backoff",
    "; no ratelimit-reset given, backing off",
)


def _failure(source: SourceConfig, exc: PagerDutyError, timeout: float) -> Verdict:
    detail = str(exc)
    for tail in _RETRY_TAILS:
        detail = detail.removesuffix(tail)
    kind = exc.kind
    if kind == "unreachable" and "TLS" in detail:
        kind = "tls"
    if kind == "timeout":
        label = f"timeout (no answer within {timeout:g}s)"
    elif kind == "server_error" and isinstance(exc, ApiError):
        label = f"server error ({exc.status})"
    elif kind == "unexpected_status" and isinstance(exc, ApiError):
        label = f"unexpected answer ({exc.status})"
    else:
        label = _VERDICTS.get(kind, "failed")
    return _verdict(source, ok=False, kind=kind, text=f"{label}: {detail}")


async def verify_source(
    source: SourceConfig,
    clients: ClientFactory | httpx.AsyncClient,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (per request, passed to httpx; also the bound)
) -> Verdict:
    """Probe one source; never raises for what PagerDuty or the network does."""
    factory = clients if isinstance(clients, ClientFactory) else ClientFactory(clients)
    client = factory.client(
        source, retry=RetryPolicy(max_attempts=1), timeout=timeout, max_wait=0.0
    )
    failure: PagerDutyError | None = None
    try:
        # an OAuth source makes two requests (token, probe): each may take ``timeout``
        async with asyncio.timeout(2 * timeout + 1):
            page = await client.probe()
    except PagerDutyError as exc:
        failure = exc
    except TimeoutError:
        return _verdict(
            source, ok=False, kind="timeout", text=f"timeout (no answer within {timeout:g}s)"
        )
    except Exception as exc:  # a verdict, not a traceback that might hold a header
        return _verdict(
            source, ok=False, kind="internal", text=f"internal error ({type(exc).__name__})"
        )
    if failure is not None:
        return _failure(source, failure, timeout)
    seen = len(page.records) + len(page.malformed)
    records = "1 record" if seen == 1 else f"{seen} records"
    return _verdict(
        source,
        ok=True,
        kind="ok",
        text=f"ok: audit records readable ({_where(source.api_url)}, {records} in the probe)",
    )


async def verify_all(
    sources: Sequence[SourceConfig],
    http: ClientFactory | httpx.AsyncClient,
    only: str | None = None,
    *,
    request_timeout: float = 10.0,
) -> list[Verdict]:
    """Probe every source (or only the one named ``only``), concurrently, in config order.

    ``ConfigError`` when ``only`` names no configured source (``main`` exits 2 for it).
    """
    chosen = list(sources)
    if only is not None:
        chosen = [s for s in sources if s.name == only]
        if not chosen:
            names = ", ".join(repr(s.name) for s in sources) or "none"
            raise ConfigError(f"--source: no source named {only!r} (configured: {names})")
    probes = (verify_source(s, http, timeout=request_timeout) for s in chosen)
    return list(await asyncio.gather(*probes))


def exit_status(verdicts: Iterable[Verdict]) -> int:
    """0 when every verdict is ok, 1 otherwise (also when there is none: nothing verified)."""
    verdicts = list(verdicts)
    return 0 if verdicts and all(v.ok for v in verdicts) else 1


async def _run(
    sources: Sequence[SourceConfig], only: str | None, request_timeout: float
) -> list[Verdict]:
    async with httpx.AsyncClient() as http:
        return await verify_all(sources, http, only, request_timeout=request_timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamapp.pagerduty.verify",
        description="Check that every configured PagerDuty source can read audit records.",
    )
    parser.add_argument("--source", metavar="NAME", help="verify only this source")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (10)"
    )
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error("--timeout: expected a positive number of seconds")
    try:
        settings = load_settings()
        verdicts = asyncio.run(_run(settings.sources, args.source, args.timeout))
    except ConfigError as exc:
        print(one_line(REDACTOR.scrub(str(exc))), file=sys.stderr)
        return 2
    for verdict in verdicts:
        print(verdict.line, flush=True)
    return exit_status(verdicts)


if __name__ == "__main__":
    sys.exit(main())

"""How long to wait before trying a failed PagerDuty request again.

- 429 with ``ratelimit-reset``: exactly that many seconds (PagerDuty asks for it);
- 429 without it: a capped exponential fallback, 1 s, 2 s, 4 s … 60 s, without jitter so
  that a throttled client never retries sooner than the fallback says;
- anything else retryable (5xx, transport, unreadable answer): capped exponential backoff
  with full jitter (``random() * min(max_delay, base_delay * 2 ** (attempt - 1))``).

Which errors are retryable is the error's own ``retryable`` flag (see ``errors.py``).
"""

from __future__ import annotations

import random as _random
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

from streamapp.core.errors import (
    ConnectFailed,
    PagerDutyError,
    ProtocolError,
    RateLimited,
    RequestTimeout,
)
from streamapp.core.redact import one_line


@dataclass(frozen=True)
class RetryPolicy:
    #: attempts in all, the first one included
    max_attempts: int = 6
    #: backoff of the first retry of a 5xx / transport error, before jitter
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: wait after the first 429 that carries no ``ratelimit-reset``; doubles per attempt
    rate_limit_fallback: float = 1.0
    rate_limit_fallback_max: float = 60.0
    #: full jitter on the 5xx / transport backoff
    jitter: bool = True
    #: returns a float in [0, 1); injectable for tests
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if min(self.base_delay, self.max_delay, self.rate_limit_fallback) < 0:
            raise ValueError("retry delays must not be negative")

    def delay_for(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 = the first request)."""
        exponent = max(attempt - 1, 0)
        if isinstance(error, RateLimited):
            if error.reset_after is not None:
                return error.reset_after
            return _capped(self.rate_limit_fallback, exponent, self.rate_limit_fallback_max)
        ceiling = _capped(self.base_delay, exponent, self.max_delay)
        return ceiling * self.random() if self.jitter else ceiling


def _capped(base: float, exponent: int, cap: float) -> float:
    # the exponent is clamped so a huge attempt number cannot overflow a float
    return min(cap, base * 2.0 ** min(exponent, 64))


# --- what failed: exceptions of the HTTP layer as errors of ``errors.py`` -----------------


def _is_tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        text = str(current)
        if "SSL" in text or "CERTIFICATE_VERIFY" in text or "certificate verify" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def transport_error(exc: BaseException, *, what: str, hide: Iterable[str] = ()) -> PagerDutyError:
    """Map an exception of the HTTP layer (no answer came back) to our error tree.

    ``what`` names the far end, host only (``PagerDuty at api.pagerduty.com``). The result
    carries no reference to ``exc``: raise it outside the ``except`` block (or ``from
    None``) so the original, which holds the request and its headers, is not chained.
    """
    detail = one_line(str(exc), hide=hide)
    name = type(exc).__name__
    cause = f"{name}: {detail}" if detail else name
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return RequestTimeout(f"{what} did not answer in time ({cause}); retrying later")
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"{what} sent a body that could not be decoded ({cause})")
    if _is_tls(exc):
        return ConnectFailed(
            f"{what}: TLS handshake or certificate check failed ({cause}); check the API URL"
            " and any TLS-intercepting proxy"
        )
    return ConnectFailed(f"{what} unreachable ({cause}); check the API URL, DNS and network")

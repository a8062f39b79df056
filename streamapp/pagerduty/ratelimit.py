"""One gate per PagerDuty token: serial requests, at most 960 a minute, and a shared pause.

PagerDuty asks for serial requests per token, allows 960 requests per minute per key (or
app), and asks clients to wait ``ratelimit-reset`` seconds after a 429. Every source using
the same token must therefore share one gate: ``gate_for(fingerprint)`` keeps a process-wide
registry keyed by the token's fingerprint (never by the token itself).

    gate = gate_for(auth.fingerprint)
    async with gate.slot():
        response = await http.get(...)

The gate's clock and the deadlines passed to ``block_until`` must come from the same
monotonic clock (both default to ``time.monotonic``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

#: PagerDuty's documented limit per account key, user or app
DEFAULT_PER_MINUTE = 960
WINDOW_SECONDS = 60.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RequestGate:
    """Serialises requests on one token and spaces them to stay inside the rate limit."""

    def __init__(
        self,
        per_minute: int = DEFAULT_PER_MINUTE,
        *,
        window: float = WINDOW_SECONDS,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, got {per_minute}")
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._starts: deque[float] = deque()
        self._blocked_until = float("-inf")

    @property
    def blocked_until(self) -> float:
        """The monotonic time before which no request may start (``-inf`` when none)."""
        return self._blocked_until

    def block_until(self, deadline: float) -> None:
        """No request through this gate starts before ``deadline`` (a later block wins)."""
        if deadline > self._blocked_until:
            self._blocked_until = deadline

    def _wait_needed(self) -> float:
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        # a start at ``s`` counts against every window ``[t, t + window)`` containing it
        while self._starts and self._starts[0] + self.window <= now:
            self._starts.popleft()
        if len(self._starts) >= self.per_minute:
            return self._starts[0] + self.window - now
        return 0.0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold the token for one request: waits for its turn, a block, and the rate limit."""
        async with self._lock:
            while (delay := self._wait_needed()) > 0:
                await self._sleep(delay)
            self._starts.append(self._clock())
            yield


_GATES: dict[str, RequestGate] = {}


def gate_for(fingerprint: str, per_minute: int = DEFAULT_PER_MINUTE) -> RequestGate:
    """The process-wide gate of one token; the first caller's ``per_minute`` wins."""
    gate = _GATES.get(fingerprint)
    if gate is None:
        gate = _GATES[fingerprint] = RequestGate(per_minute)
    return gate


#: a ``ratelimit-reset`` above this is not "seconds until the window resets" as documented
#: (an epoch timestamp, say); it is ignored and the fallback backoff applies instead
MAX_PLAUSIBLE_RESET = 3600.0


def parse_reset(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``ratelimit-reset``, or None when absent, not numeric or implausible."""
    value = headers.get("ratelimit-reset")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_PLAUSIBLE_RESET:
        return None
    return seconds

"""One gate per PagerDuty token: bounded requests in flight, at most 960 a minute, a shared pause.

PagerDuty allows 960 requests per minute per key (or app), asks clients to wait
``ratelimit-reset`` seconds after a 429, and asks for serial requests per token. Every
source using the same token must therefore share one gate: ``gate_for(fingerprint)`` keeps a
process-wide registry keyed by the token's fingerprint (never by the token itself). A gate
lets one request at a time through by default; a backfill may widen that to a few
(``in_flight``) so it is bounded by the rate limit rather than by one round trip.

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
#: PagerDuty counts a request when it arrives: two starts exactly a window apart can arrive
#: less than a window apart when the first took longer on the way (the backfill bench's
#: server saw 961 in one 60 s), so the gate spaces them a little more
TRANSIT_MARGIN = 0.5

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RequestGate:
    """Serialises requests on one token and spaces them to stay inside the rate limit."""

    def __init__(
        self,
        per_minute: int = DEFAULT_PER_MINUTE,
        *,
        window: float = WINDOW_SECONDS + TRANSIT_MARGIN,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        in_flight: int = 1,
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, got {per_minute}")
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._sleep = sleep
        #: turns to start a request (one at a time, so the spacing below holds)
        self._lock = asyncio.Lock()
        #: requests started and not yet answered
        self._flight = asyncio.Semaphore(in_flight)
        self.in_flight = in_flight
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

    def blocked_for(self) -> float:
        """Seconds until a 429's pause ends (0 when there is none)."""
        return max(0.0, self._blocked_until - self._clock())

    @asynccontextmanager
    async def slot(self, *, max_block: float | None = None) -> AsyncIterator[None]:
        """Hold the token for one request: waits for its turn, a block, and the rate limit.

        With ``max_block``, a pause (after a 429) longer than that many seconds raises
        ``TokenPaused`` at once instead of waiting it out.
        """
        async with self._flight:
            async with self._lock:
                while (delay := self._wait_needed()) > 0:
                    if max_block is not None and self.blocked_for() > max_block:
                        raise TokenPaused(self.blocked_for())
                    await self._sleep(delay)
                self._starts.append(self._clock())
            yield


class TokenPaused(Exception):
    """The token is paused (by a 429's ``ratelimit-reset``) for longer than the caller waits."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"paused for {seconds:.0f} s more")
        self.seconds = seconds


class Gates:
    """The gates of one process, one per token fingerprint, shared by every client built
    from the same registry (polls, backfills and verify of sources that share a token)."""

    def __init__(self, per_minute: int = DEFAULT_PER_MINUTE, in_flight: int = 1) -> None:
        self.per_minute = per_minute
        self.in_flight = in_flight
        self._gates: dict[str, RequestGate] = {}

    def for_token(self, fingerprint: str) -> RequestGate:
        gate = self._gates.get(fingerprint)
        if gate is None:
            gate = self._gates[fingerprint] = RequestGate(self.per_minute, in_flight=self.in_flight)
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

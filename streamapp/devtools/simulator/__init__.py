"""A fake PagerDuty Audit Records API for integration tests and the demo mode.

It speaks real HTTP on loopback (aiohttp.web) and behaves like the documented API
(summarised in ``tests/reference/pagerduty-audit-api.md``)::

    from streamapp.devtools.simulator import Simulator, SimulatorThread, FaultRule, generate_records

    sim = Simulator(tokens={"tok-ok": "ok"})
    base_url = await sim.start()            # "http://127.0.0.1:PORT"
    sim.add_records(generate_records(500, start=..., end=..., seed=1))
    ...
    await sim.stop()

    with SimulatorThread(tokens={"tok-ok": "ok"}) as sim:   # own thread + event loop
        sim.base_url, sim.add_records(...), sim.requests, ...

``GET /audit/records``
    ``limit`` (default 100, capped at 100, echoed), ``cursor``, ``since`` (default now - 24 h)
    and ``until`` (default now), ISO 8601 with ``Z``/offsets and any fraction. 400 with
    ``{"error": {"message", "code": 2001, "errors": [...]}}`` when since/until/limit/cursor
    do not parse, since > until, or until - since > 31 days. Records newest first
    (``execution_time`` descending, ties by ``id`` descending); ``next_cursor`` is
    ``<execution_time ms>-<id of the page's last record>`` (a keyset position; resend the
    same since/until with it), ``null`` on the last page. Records are served byte for byte as
    stored. ``since`` is inclusive and ``until`` exclusive unless ``since_inclusive`` /
    ``until_inclusive`` say otherwise (the real API does not document it). A request sees
    only records whose ``visible_at`` <= ``now()`` (late-visible records).

Order of checks: injected fault → rate limit (429, code 2020) → token (401 code 2006 for a
missing, unknown, revoked or expired token; 402 "no_plan"; 403 "forbidden" or an OAuth token
without ``audit_records.read``) → parameters (400) → the page. Non-fault answers carry
``ratelimit-limit``/``ratelimit-remaining``/``ratelimit-reset`` unless the rate limit is off.
Auth: ``Authorization: Token token=<key>`` or ``Authorization: Bearer <token>`` (any known
token under either scheme; the log records which).

``POST /oauth/token`` (form: grant_type=client_credentials, client_id, client_secret, scope)
    → ``{"access_token", "token_type": "bearer", "expires_in", "scope"}``; errors in OAuth
    form (``{"error": "invalid_client"}`` 401, ``unsupported_grant_type`` 400).

Admin API (JSON, no auth, not logged in ``requests``)
    ``POST   /_sim/records``   ``{"records": [...], "visible_at"?: iso, "visible_after"?: s}``
    ``DELETE /_sim/records``   remove every record
    ``POST   /_sim/generate``  ``{"count": N, "start"?: iso, "end"?: iso (default now),
                               "days"?: 1, "seed"?: 0, "visible_at"?, "visible_after"?}``
    ``POST   /_sim/tokens``    ``{"token": "...", "state": "ok|revoked|no_plan|forbidden"}``
    ``POST   /_sim/faults``    FaultRule fields as JSON, e.g. ``{"status": 503, "page": 3}``
    ``DELETE /_sim/faults``    drop pending fault rules
    ``GET    /_sim/requests``  ``{"requests": [RequestLogEntry as JSON...]}``
    ``DELETE /_sim/requests``  clear the request log
    ``GET    /_sim/stats``     ``{"record_count", "visible_record_count", "request_count",
                               "faults_pending", "tokens"}``

Standalone: ``python -m streamapp.devtools.simulator --port 8765 --records 5000 --days 3
--token demo-token [--rate-limit 960] [--latency 0.1,0.2] [--trickle SECONDS]``.
"""

from streamapp.devtools.simulator.data import example_records, generate_records
from streamapp.devtools.simulator.server import (
    FaultRule,
    RequestLogEntry,
    Simulator,
    SimulatorThread,
    error_body,
    fingerprint,
)

__all__ = [
    "FaultRule",
    "RequestLogEntry",
    "Simulator",
    "SimulatorThread",
    "error_body",
    "example_records",
    "fingerprint",
    "generate_records",
]

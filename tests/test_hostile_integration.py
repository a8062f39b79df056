"""The worker against hostile and broken PagerDuty answers, end to end.

A hostile PagerDuty of the tests' own (``tests/hostile_server.py``), a real broker and a real
worker process per test. Each test sends the hostile answer, then good answers, and checks
what applies: every good record on ``pagerduty_audit_logs`` exactly once; the bad record in
``pagerduty_audit_logs_dlq`` exactly once, with a reason naming the bound; the worker's
memory bounded (``VmHWM``); one alert on ``notifications`` of the right kind whose message
names the bound; ``/health`` not ok while the source is wedged and ok after; SIGTERM ending
the worker within a grace period and without a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamapp.devtools.broker import free_port
from streamapp.devtools.simulator import generate_records
from tests.hostile_server import (
    Drip,
    EmptyWalk,
    EndlessPages,
    GzipBomb,
    HostileServer,
    HugeBody,
    Inject,
    Repeat,
    Status,
)
from tests.kafka_harness import REPO, Kafka, Worker

pytestmark = pytest.mark.broker

TOKEN = "hostile-token-0123456789abcdef"
SOURCE = "hostile"
MiB = 1024 * 1024
#: the worker's peak resident memory with a 200 MB body or a 1 GiB gzip bomb in front of it
RSS_LIMIT = 400 * 1000 * 1000
#: how long a worker may take to exit after SIGTERM
GRACE = 30.0
#: the body cap the worker runs with (the default of STREAMAPP_HTTP_MAX_RESPONSE_BYTES)
BODY_CAP = 16 * MiB


# --------------------------------------------------------------------------- records


def good_records(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` valid records of the last half hour; a few inside the poll overlap (the
    last five minutes), so every poll serves those again and dedupe must drop them."""
    now = datetime.now(UTC)
    older = generate_records(
        count - 5, start=now - timedelta(minutes=30), end=now - timedelta(minutes=6), seed=seed
    )
    recent = generate_records(
        5, start=now - timedelta(minutes=4), end=now - timedelta(seconds=5), seed=seed + 1000
    )
    records = older + recent
    assert len({r["id"] for r in records}) == len(records)
    return records


def variant(base: dict[str, Any], record_id: str, **fields: Any) -> dict[str, Any]:
    """A valid record like ``base`` with another id (and fields)."""
    return {**base, "id": record_id, **fields}


def encoded(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- the scenario


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process, in bytes (``VmHWM``)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


@dataclass
class Scenario:
    """One worker polling one hostile server through one broker."""

    kafka: Kafka
    server: HostileServer
    worker: Worker
    web_port: int
    #: soft checks that failed: the test goes on to learn more, and fails at the end
    problems: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, kafka: Kafka, server: HostileServer, tmp_path: Path, **extra: str) -> Scenario:
        port = free_port()
        env = {
            **kafka.env(),
            "PAGERDUTY_API_TOKEN": TOKEN,
            "PAGERDUTY_API_URL": server.base_url,
            "PAGERDUTY_SOURCE_NAME": SOURCE,
            "PAGERDUTY_POLL_INTERVAL": "1",
            "PAGERDUTY_LOOKBACK": "1h",
            "STREAMAPP_PARTITIONS": "2",
            "STREAMAPP_HTTP_TIMEOUT": "3",
            "STREAMAPP_HTTP_RETRY_ATTEMPTS": "2",
            "STREAMAPP_HTTP_RETRY_BASE": "0.05",
            "STREAMAPP_STALL_AFTER": "5s",
            "STREAMAPP_SESSION_TIMEOUT": "4",
            "STREAMAPP_WEB_PORT": str(port),
        }
        env.update(extra)
        worker = Worker(env, tmp_path / "worker.log").start()
        return cls(kafka, server, worker, port)

    # --- soft checks ----------------------------------------------------------------------

    def check(self, condition: object, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def verdict(self) -> None:
        assert not self.problems, "\n".join(
            ["the worker misbehaved:", *(f"- {p}" for p in self.problems)]
        )

    # --- waiting --------------------------------------------------------------------------

    def tail(self, chars: int = 4000) -> str:
        return self.worker.log()[-chars:]

    async def eventually(
        self, check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await check()
            if value:
                return value
            process = self.worker.process
            if process is not None and process.poll() is not None:
                raise AssertionError(
                    f"the worker exited ({process.returncode}) while waiting for {what}:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}:\n" + self.tail()
                )
            await asyncio.sleep(0.3)

    def polls(self) -> int:
        """Polls that reached the server (their first page: a request without a cursor)."""
        return sum(1 for r in self.server.log() if "cursor" not in r.query)

    async def more_polls(self, count: int, timeout: float = 60) -> None:
        target = self.polls() + count

        async def reached() -> bool:
            return self.polls() >= target

        await self.eventually(reached, f"{count} more polls", timeout)

    async def started(self) -> None:
        """The worker polls (the first request reached the server)."""

        async def polled() -> bool:
            return bool(self.server.log())

        await self.eventually(polled, "the worker's first poll", timeout=90)

    # --- topics and endpoints -------------------------------------------------------------

    async def _read(self, base: str, idle: float = 1.0) -> list[Any]:
        return await self.kafka.read(base, timeout=30, idle=idle)

    async def outputs(self, idle: float = 1.0) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in await self._read("pagerduty_audit_logs", idle)]

    async def letters(self, idle: float = 1.0) -> list[tuple[bytes, dict[str, Any]]]:
        messages = await self._read("pagerduty_audit_logs_dlq", idle)
        return [(m.key, json.loads(m.value)) for m in messages]

    async def notes(self, idle: float = 0.5) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in await self._read("notifications", idle)]

    async def health(self) -> dict[str, Any] | None:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.get(f"http://127.0.0.1:{self.web_port}/health")
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    async def source_health(self) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            doc = await self.health()
            return None if doc is None else self._source(doc)

        return await self.eventually(check, "/health", timeout=30)

    @staticmethod
    def _source(doc: dict[str, Any]) -> dict[str, Any]:
        return next(s for s in doc["sources"] if s["source_name"] == SOURCE)

    async def health_becomes(self, wanted: Callable[[str], bool], what: str) -> dict[str, Any]:
        """``/health`` until its overall status and the source's satisfy ``wanted``."""

        async def check() -> dict[str, Any] | None:
            doc = await self.health()
            if doc is None:
                return None
            source = self._source(doc)
            return doc if wanted(doc["status"]) and wanted(source["status"]) else None

        return await self.eventually(check, f"/health {what}", timeout=30)

    async def alert(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            return next((n for n in await self.notes() if n["kind"] == kind), None)

        return await self.eventually(check, f"a {kind} notification", timeout)

    # --- assertions -----------------------------------------------------------------------

    async def delivered_once(
        self, records: list[dict[str, Any]], also: frozenset[str] = frozenset()
    ) -> Counter[str]:
        """Every record on the output topic, then a few more polls (each serving the overlap
        again), then: each exactly once, and nothing but them (and ``also``)."""
        wanted = {r["id"] for r in records}

        async def all_there() -> bool:
            return wanted <= {d["id"] for d in await self.outputs(idle=0.5)}

        await self.eventually(all_there, f"all {len(wanted)} good records on the output topic")
        await self.more_polls(3)
        counts = Counter(d["id"] for d in await self.outputs(idle=2.0))
        repeated = {i: n for i, n in counts.items() if n > 1}
        unexpected = set(counts) - wanted - also - set(self.server.endless_ids)
        self.check(not repeated, f"records on the output topic more than once: {repeated}")
        self.check(not unexpected, f"unexpected records on the output topic: {unexpected}")
        return counts

    async def dead_lettered_while_served(self, record_id: str) -> None:
        """The dead letter of the injected ``record_id`` is on its topic, and the server went on
        serving the record on four polls (so it had the chance to be dead-lettered again)."""
        key = f"dlq:{record_id}".encode()

        async def lettered() -> bool:
            return any(k == key for k, _ in await self.letters(idle=0.5))

        await self.eventually(lettered, f"the dead letter of {record_id}")
        await self.eventually(
            _async(lambda: len(self.server.log("inject")) >= 4), "four polls serving it"
        )

    def only_letter(
        self, letters: list[tuple[bytes, dict[str, Any]]], record_id: str
    ) -> dict[str, Any] | None:
        """Checks ``letters`` are one dead letter, of ``record_id``; that letter, if any."""
        mine = [v for k, v in letters if k == f"dlq:{record_id}".encode()]
        self.check(len(mine) == 1, f"{len(mine)} dead letters for {record_id}, not one")
        self.check(len(letters) == len(mine), f"other dead letters: {[k for k, _ in letters]}")
        return mine[0] if mine else None

    def walks_stopped_at(self, answer: str, bound: int) -> None:
        """The server served endless walks of ``answer`` pages, each given up at ``bound``."""
        pages = self.server.log(answer)
        walks = [r for r in pages if "cursor" not in r.query]
        assert walks, "no endless walk was served"
        self.check(
            len(pages) == bound * len(walks),
            f"{len(pages)} {answer} pages for {len(walks)} walks: a walk is not stopped at {bound}",
        )

    def rss(self, label: str) -> int:
        assert self.worker.process is not None
        peak = vm_hwm(self.worker.process.pid)
        print(f"\n[rss] {label}: worker VmHWM {peak / 1e6:.0f} MB")
        return peak

    async def sigterm(self, what: str) -> None:
        """SIGTERM: the worker exits within GRACE seconds, and its log holds no traceback."""
        process = self.worker.process
        assert process is not None and process.poll() is None
        sent = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        try:
            code = await asyncio.to_thread(process.wait, GRACE)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            raise AssertionError(
                f"the worker was still running {GRACE:g}s after SIGTERM ({what}):\n" + self.tail()
            ) from None
        took = time.monotonic() - sent
        print(f"\n[sigterm] {what}: exit status {code} after {took:.1f}s")
        self.check(
            "Traceback" not in self.worker.log(),
            f"a traceback in the worker's log ({what}):\n" + traceback_excerpt(self.worker.log()),
        )

    def no_traceback(self) -> None:
        log = self.worker.log()
        self.check(
            "Traceback" not in log, "a traceback in the worker's log:\n" + traceback_excerpt(log)
        )


def traceback_excerpt(log: str) -> str:
    at = log.find("Traceback")
    return log[max(0, at - 600) : at + 2500] if at >= 0 else ""


def degraded_alerts(notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in notes if n["kind"] == "source_degraded"]


def recovered_from(notes: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [n for n in notes if n["kind"] == "source_recovered" and n["resolves"] == kind]


async def wedged_then_recovered(
    scenario: Scenario,
    records: list[dict[str, Any]],
    *,
    error_kind: str,
    names: tuple[str, ...],
    alert_timeout: float = 60,
) -> dict[str, Any]:
    """The common course of a hostile answer repeated until released: one source_degraded
    alert of ``error_kind`` whose message names the bound (each of ``names``); ``/health``
    not ok meanwhile; then, released, every good record once, one recovery, ``/health`` ok."""
    server = scenario.server
    alert = await scenario.alert("source_degraded", timeout=alert_timeout)
    scenario.check(
        alert["error_kind"] == error_kind,
        f"source_degraded has error_kind {alert['error_kind']!r}, not {error_kind!r}: {alert}",
    )
    for name in names:
        scenario.check(
            name in alert["message"],
            f"the source_degraded message does not name the bound ({name!r}): "
            f"{alert['message']!r} (details: {alert.get('details')})",
        )
    doc = await scenario.health_becomes(lambda s: s != "ok", "not ok while wedged")
    source = Scenario._source(doc)
    scenario.check(
        source["status"] == "degraded", f"/health says {source['status']!r} while wedged"
    )
    server.release()
    await scenario.alert("source_recovered")
    await scenario.delivered_once(records)
    await scenario.health_becomes(lambda s: s == "ok", "ok after the source recovered")
    notes = await scenario.notes()
    scenario.check(
        len(degraded_alerts(notes)) == 1,
        f"expected one source_degraded alert, got {kinds(notes)}",
    )
    scenario.check(
        len(recovered_from(notes, "source_degraded")) == 1,
        f"expected one recovery from source_degraded, got {kinds(notes)}",
    )
    return alert


def kinds(notes: list[dict[str, Any]]) -> list[str]:
    return [f"{n['kind']}({n.get('error_kind') or n.get('resolves')})" for n in notes]


# --------------------------------------------------------------------------- the tests


async def test_record_with_a_5_mib_field_is_dead_lettered_once_and_sigterm_is_prompt(
    kafka: Kafka, tmp_path: Path
):
    records = good_records(30, seed=11)
    huge = encoded(variant(records[-1], "HUGEFIELD1", x_padding="x" * (5 * MiB)))
    with HostileServer(records, script=[Repeat(Inject((huge,)))]) as server:
        scenario = Scenario.start(kafka, server, tmp_path)
        try:
            await scenario.started()
            # the same huge record on several polls: still one dead letter
            await scenario.dead_lettered_while_served("HUGEFIELD1")
            await scenario.more_polls(2)
            server.release()
            counts = await scenario.delivered_once(records)
            scenario.check("HUGEFIELD1" not in counts, "the huge record reached the output topic")
            letters = await scenario.letters(idle=2.0)
            peak = scenario.rss("5 MiB field")
            # hostile again, and SIGTERM while the worker handles a 5 MiB page
            served = len(server.log("inject"))
            server.push(Repeat(Inject((huge,))))
            await scenario.eventually(
                _async(lambda: len(server.log("inject")) > served), "a huge page served again"
            )
            await scenario.sigterm("while a page with a 5 MiB record is handled")
        finally:
            scenario.worker.stop()
    letter = scenario.only_letter(letters, "HUGEFIELD1")
    if letter is not None:
        scenario.check(letter["record_id"] == "HUGEFIELD1", f"record_id: {letter['record_id']}")
        scenario.check(letter["original_encoding"] == "omitted", str(letter["original_encoding"]))
        scenario.check(letter["original_size"] == len(huge), f"size {letter['original_size']}")
        scenario.check(
            letter["original_sha256"] == hashlib.sha256(huge).hexdigest(), "sha256 differs"
        )
        reason = letter["reason"]
        scenario.check(f"{len(huge):,}" in reason, f"reason does not give the size: {reason!r}")
        scenario.check(
            "STREAMAPP_KAFKA_MAX_MESSAGE_BYTES" in reason or "max.message.bytes" in reason,
            f"the dead letter's reason does not name the bound: {reason!r}",
        )
    scenario.check(peak < RSS_LIMIT, f"VmHWM {peak / 1e6:.0f} MB")
    scenario.verdict()


async def test_record_nested_5000_levels_among_good_ones_is_dead_lettered_once(
    kafka: Kafka, tmp_path: Path
):
    records = good_records(30, seed=12)
    base = encoded(variant(records[-1], "DEEP1"))
    deep = base[:-1] + b',"x_deep":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"
    with HostileServer(records, script=[Repeat(Inject((deep,)))]) as server:
        scenario = Scenario.start(kafka, server, tmp_path)
        try:
            await scenario.started()
            await scenario.dead_lettered_while_served("DEEP1")
            # the good records of the very pages that carried it arrive meanwhile
            counts = await scenario.delivered_once(records)
            server.release()
            await scenario.more_polls(2)
            letters = await scenario.letters(idle=2.0)
            scenario.rss("5,000 levels deep")
            notes = await scenario.notes()
        finally:
            scenario.worker.stop()
    scenario.check("DEEP1" not in counts, "the deep record reached the output topic")
    letter = scenario.only_letter(letters, "DEEP1")
    if letter is not None:
        scenario.check(letter["record_id"] == "DEEP1", f"record_id {letter['record_id']}")
        reason = letter["reason"]
        scenario.check(
            "64 levels" in reason and "STREAMAPP_MAX_JSON_DEPTH" in reason,
            f"the reason does not name the bound: {reason!r}",
        )
        scenario.check(
            letter["original"].encode() == deep, "the original bytes are not in the letter"
        )
    scenario.check(not degraded_alerts(notes), f"alerts for a dead-lettered record: {kinds(notes)}")
    scenario.no_traceback()
    scenario.verdict()


async def test_endless_empty_pages_stop_after_ten_and_raise_walk_too_long(
    kafka: Kafka, tmp_path: Path
):
    records = good_records(30, seed=13)
    with HostileServer(records, script=[Repeat(EmptyWalk())]) as server:
        scenario = Scenario.start(kafka, server, tmp_path)
        try:
            await scenario.started()
            await wedged_then_recovered(
                scenario, records, error_kind="walk_too_long", names=("10 empty pages",)
            )
            scenario.rss("endless empty pages")
        finally:
            scenario.worker.stop()
    # each walk: the first page and nine cursors, then it is given up
    scenario.walks_stopped_at("empty_walk", 10)
    scenario.no_traceback()
    scenario.verdict()


async def test_endless_pages_of_new_records_stop_at_the_page_bound(kafka: Kafka, tmp_path: Path):
    records = good_records(30, seed=20)
    bound = 20
    with HostileServer(records, script=[Repeat(EndlessPages())]) as server:
        scenario = Scenario.start(
            kafka, server, tmp_path, STREAMAPP_MAX_PAGES_PER_WINDOW=str(bound)
        )
        try:
            await scenario.started()
            await wedged_then_recovered(
                scenario,
                records,
                error_kind="walk_too_long",
                names=("STREAMAPP_MAX_PAGES_PER_WINDOW", f"{bound}"),
            )
            # what the endless pages made up is a record like any other: never twice
            counts = Counter(d["id"] for d in await scenario.outputs())
        finally:
            scenario.worker.stop()
    scenario.walks_stopped_at("endless_pages", bound)
    twice = {i: counts[i] for i in server.endless_ids if counts[i] > 1}
    scenario.check(not twice, f"records of the endless pages written more than once: {twice}")
    scenario.no_traceback()
    scenario.verdict()


async def test_drip_of_one_byte_every_few_seconds_times_out_and_sigterm_is_prompt(
    kafka: Kafka, tmp_path: Path
):
    records = good_records(30, seed=14)
    timeout = 3.0
    with HostileServer(records, script=[Repeat(Drip(pause=1.5))]) as server:
        scenario = Scenario.start(
            kafka,
            server,
            tmp_path,
            STREAMAPP_HTTP_TIMEOUT=f"{timeout:g}",
            STREAMAPP_HTTP_RETRY_ATTEMPTS="1",
        )
        try:
            await scenario.started()
            await wedged_then_recovered(
                scenario, records, error_kind="timeout", names=("STREAMAPP_HTTP_TIMEOUT",)
            )
            drips = [r for r in server.log("drip") if r.ended is not None]
            scenario.rss("drip")
            # drip again, and SIGTERM while a dripping answer is being read
            server.push(Repeat(Drip(pause=1.5)))
            await scenario.eventually(
                _async(lambda: bool(server.in_flight("drip"))), "a drip in flight"
            )
            await scenario.sigterm("while a dripping answer is being read")
        finally:
            scenario.worker.stop()
    assert drips, "no drip was served"
    longest = max(r.ended - r.at for r in drips)  # type: ignore[operator]
    print(f"\n[drip] {len(drips)} dripping answers, the longest held {longest:.1f}s")
    scenario.check(
        longest < timeout + 2, f"a dripping answer kept a request open for {longest:.1f}s"
    )
    scenario.verdict()


async def abandoned_at_the_cap(
    kafka: Kafka, tmp_path: Path, answer: Any, seed: int, what: str, *names: str
) -> tuple[HostileServer, Scenario, int]:
    """A worker polling a server that answers ``answer`` until told otherwise: the source
    goes degraded naming the cap, recovers, and nothing is lost. (server, scenario, peak
    RSS)."""
    records = good_records(30, seed=seed)
    with HostileServer(records, script=[Repeat(answer)]) as server:
        scenario = Scenario.start(kafka, server, tmp_path)
        try:
            await scenario.started()
            await wedged_then_recovered(
                scenario,
                records,
                error_kind="response_too_large",
                names=("STREAMAPP_HTTP_MAX_RESPONSE_BYTES", f"{BODY_CAP:,}", *names),
            )
            peak = scenario.rss(what)
        finally:
            scenario.worker.stop()
    scenario.check(peak < RSS_LIMIT, f"VmHWM {peak / 1e6:.0f} MB with a {what}")
    scenario.no_traceback()
    return server, scenario, peak


async def test_200_mb_body_is_abandoned_at_the_cap_in_bounded_memory(kafka: Kafka, tmp_path: Path):
    server, scenario, _ = await abandoned_at_the_cap(kafka, tmp_path, HugeBody(), 15, "200 MB body")
    huge = server.log("huge_body")
    assert huge, "no huge body was served"
    most = max(r.sent for r in huge)
    print(f"\n[huge body] {len(huge)} answers, at most {most / 1e6:.0f} MB written of 200 MB")
    scenario.check(most < 100 * 1000 * 1000, f"{most:,} bytes of a 200 MB body were read")
    scenario.verdict()


async def test_gzip_bomb_is_abandoned_at_the_cap_in_bounded_memory(kafka: Kafka, tmp_path: Path):
    server, scenario, _ = await abandoned_at_the_cap(
        kafka, tmp_path, GzipBomb(), 16, "1 GiB gzip bomb", "gzip"
    )
    assert server.log("gzip_bomb"), "no gzip bomb was served"
    scenario.verdict()


async def test_undecodable_records_on_every_poll_are_dead_lettered_once_each(
    kafka: Kafka, tmp_path: Path
):
    records = good_records(30, seed=17)
    recent = records[-1]
    no_action = {k: v for k, v in variant(recent, "NOACTION1").items() if k != "action"}
    bad = {
        b'"not a record"': None,
        b"[1, 2, 3]": None,
        b"null": None,
        b'{"id": "", "execution_time": "2026-01-01T00:00:00Z"}': None,
        b'{"id": "NOTIME1", "action": "create"}': b"dlq:NOTIME1",
        b'{"id": "BADTIME1", "execution_time": "not a time"}': b"dlq:BADTIME1",
        encoded(no_action): b"NOACTION1",  # keyed and timed: the pipeline refuses it
    }
    keys = {
        raw: key or b"dlq:sha256:" + hashlib.sha256(raw).hexdigest().encode()
        for raw, key in bad.items()
    }
    with HostileServer(records, always=list(bad)) as server:
        scenario = Scenario.start(kafka, server, tmp_path)
        try:
            await scenario.started()

            async def all_letters() -> bool:
                return set(keys.values()) <= {k for k, _ in await scenario.letters(idle=0.5)}

            await scenario.eventually(all_letters, "a dead letter for each undecodable record")
            await scenario.delivered_once(records)
            await scenario.more_polls(3)
            letters = await scenario.letters(idle=2.0)
            notes = await scenario.notes()
            doc = await scenario.health_becomes(lambda s: s == "ok", "ok")
            scenario.rss("undecodable records")
        finally:
            scenario.worker.stop()
    polls = len(server.log())
    by_key = Counter(k for k, _ in letters)
    for raw, key in keys.items():
        scenario.check(
            by_key[key] == 1,
            f"{by_key[key]} dead letters for {raw[:40]!r} (key {key!r}) over {polls} polls",
        )
    scenario.check(set(by_key) == set(keys.values()), f"other dead letters: {set(by_key)}")
    for key, letter in letters:
        scenario.check(letter["reason"], f"a dead letter without a reason: {key!r}")
    scenario.check(not degraded_alerts(notes), f"alerts for undecodable records: {kinds(notes)}")
    scenario.check(doc["status"] == "ok", f"/health: {doc['status']}")
    scenario.no_traceback()
    scenario.verdict()


async def test_429_asking_an_hours_pause_fails_fast_sends_nothing_and_alerts(
    kafka: Kafka, tmp_path: Path
):
    records = good_records(30, seed=18)
    headers = (
        ("ratelimit-limit", "960"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "3600"),
    )
    with HostileServer(records) as server:
        scenario = Scenario.start(kafka, server, tmp_path)
        try:
            await scenario.started()
            await scenario.delivered_once(records)
            server.push(Status(429, headers))
            await scenario.eventually(_async(lambda: bool(server.log("status"))), "the 429")
            limited = server.log("status")[0]
            alert = await scenario.alert("source_degraded", timeout=30)
            alerted_after = time.monotonic() - limited.at
            # polls go on failing fast, without a request, and without a second alert
            failures = (await scenario.source_health())["consecutive_failures"]

            async def five_more() -> bool:
                health = await scenario.source_health()
                return health["consecutive_failures"] >= failures + 5

            await scenario.eventually(five_more, "five more failed polls", timeout=30)
            doc = await scenario.health_becomes(lambda s: s != "ok", "not ok while paused")
            notes = await scenario.notes()
            scenario.rss("429 for an hour")
            after = [r for r in server.log() if r.at > limited.at]
            await scenario.sigterm("while the token is paused for an hour")
            # a new worker (the next leader) keeps the pause: it sends nothing either
            env = dict(scenario.worker.env)
            scenario.worker = Worker(env, tmp_path / "worker-2.log").start()
            await scenario.eventually(
                _async(
                    lambda: (
                        "keeps a token paused" in scenario.worker.log()
                        or "stays paused" in scenario.worker.log()
                    )
                ),
                "the new leader to resume the pause",
                timeout=60,
            )
            await asyncio.sleep(5)  # five poll intervals
            after_restart = [r for r in server.log() if r.at > limited.at]
        finally:
            scenario.worker.stop()
    print(f"\n[429] source_degraded {alerted_after:.1f}s after the 429: {alert['message']}")
    scenario.check(not after, f"{len(after)} requests sent during the hour's pause")
    scenario.check(
        not after_restart, f"{len(after_restart)} requests after a restart, during the pause"
    )
    scenario.check(alert["error_kind"] == "rate_limit_wait", f"error_kind {alert['error_kind']}")
    scenario.check(
        "ratelimit-reset" in alert["message"] and "3600" in alert["message"],
        f"the alert does not name the pause: {alert['message']!r}",
    )
    scenario.check(alerted_after < 10, f"the alert came {alerted_after:.1f}s after the 429")
    scenario.check(len(degraded_alerts(notes)) == 1, f"alerts: {kinds(notes)}")
    source = Scenario._source(doc)
    scenario.check(source["status"] == "degraded", f"/health says {source['status']!r}")
    scenario.check(
        source["poll"]["rate_limit_pause_seconds"] > 3000,
        f"/health shows a pause of {source['poll']['rate_limit_pause_seconds']}s",
    )
    scenario.verdict()


async def test_record_dated_2999_does_not_keep_the_source_from_going_stale(
    kafka: Kafka, tmp_path: Path
):
    # the good records are minutes old, the health check a few seconds: the source is stale
    # unless a record dated 2999, sent with every answer, passes for a fresh one
    records = good_records(30, seed=19)
    future = variant(records[-1], "FUTURE2999", execution_time="2999-01-01T00:00:00.000Z")
    health_check = 5
    with HostileServer(records, always=[encoded(future)]) as server:
        scenario = Scenario.start(
            kafka, server, tmp_path, PAGERDUTY_HEALTH_CHECK=f"{health_check}s"
        )
        try:
            await scenario.started()
            counts = await scenario.delivered_once(records, also=frozenset({"FUTURE2999"}))
            newest = max(r["execution_time"] for r in records)
            try:
                stale = await scenario.alert("source_stale", timeout=health_check + 25)
                print(f"\n[2999] {stale['message']}")
                doc = await scenario.health_becomes(lambda s: s == "stale", "stale")
                source = Scenario._source(doc)
                scenario.check(source["status"] == "stale", f"/health: {source['status']!r}")
            except AssertionError:
                source = await scenario.source_health()
                scenario.check(
                    False,
                    f"no source_stale within {health_check + 25}s although the newest real"
                    f" record is from {newest} and the health check is {health_check}s; /health"
                    f" says status {source['status']!r}, last_record_at"
                    f" {source['last_record_at']} (the record dated 2999 on every answer passes"
                    " for a fresh one)",
                )
            letters = await scenario.letters()
        finally:
            scenario.worker.stop()
    written = counts["FUTURE2999"] + sum(1 for k, _ in letters if b"FUTURE2999" in (k or b""))
    scenario.check(written == 1, f"the 2999 record was written {written} times (output + DLQ)")
    scenario.no_traceback()
    scenario.verdict()


def test_unreachable_broker_is_one_line_naming_it_and_a_non_zero_exit(tmp_path: Path):
    env = {
        **os.environ,
        "KAFKA_BROKER": "kafka://127.0.0.1:1",
        "PAGERDUTY_API_TOKEN": TOKEN,
        "PAGERDUTY_API_URL": "http://127.0.0.1:9",
        "STREAMAPP_DATA_DIR": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "faust", "-A", "streamapp.app", "worker", "-l", "info"]
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*command, "--without-web"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the worker was still running after 90s:\n{exc.stdout!r}") from None
    took = time.monotonic() - started
    print(f"\n[no broker] exit status {result.returncode} after {took:.1f}s: {result.stderr!r}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    problems = []
    if result.returncode == 0:
        problems.append("exit status 0")
    if took >= 60:
        problems.append(f"it took {took:.0f}s to give up")
    if len(lines) != 1 or "127.0.0.1:1" not in lines[0]:
        problems.append(f"stderr is not one line naming 127.0.0.1:1: {result.stderr!r}")
    output = result.stderr + result.stdout
    if "Traceback" in output:
        problems.append("a traceback:\n" + traceback_excerpt(output))
    assert not problems, "\n".join(["the worker misbehaved:", *(f"- {p}" for p in problems)])


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run

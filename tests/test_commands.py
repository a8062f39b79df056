"""The operator commands: pure parts directly, the commands themselves as subprocesses
against a real broker and the simulator over HTTP.

Commands run as ``python -m faust -A streamapp.app <command>``, as a user runs them.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from streamapp.core.backfill import (
    ProgressMeter,
    ProgressView,
    merge,
    plan_backfill,
    resolve_range,
    window_size,
)
from streamapp.core.enrich import encode_document, enrich
from streamapp.core.errors import ConfigError
from streamapp.core.models import Checkpoint
from streamapp.core.windows import EDGE, Window
from streamapp.devtools.simulator import FaultRule, SimulatorThread, generate_records
from streamapp.kafka.clients import bootstrap_servers
from tests.kafka_harness import REPO, Kafka, assert_raw_envelopes, create_topics

TOKEN = "sim-token-commands-0123456789"
DAY = timedelta(days=1)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GOLDEN_INPUTS = sorted((REPO / "tests" / "golden" / "inputs").glob("*.json"))


def faust_cli() -> list[str]:
    return [sys.executable, "-m", "faust"]


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAGERDUTY_", "STREAMAPP_"))}
    return subprocess.run(
        [*faust_cli(), "-A", "streamapp.app", *args],
        cwd=REPO,
        env={**clean, **env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def arun(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, args, env, timeout)


def command_env(kafka: Kafka, sim_url: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    env = {
        **kafka.env(),
        "PAGERDUTY_API_TOKEN": TOKEN,
        "PAGERDUTY_API_URL": sim_url,
        "PAGERDUTY_SOURCE_NAME": "sim",
        "STREAMAPP_PARTITIONS": "4",
        "STREAMAPP_HTTP_RETRY_BASE": "0.05",
        "STREAMAPP_HTTP_TIMEOUT": "5",
    }
    env.update(extra)
    return env


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def since_of(entry) -> datetime:
    return datetime.fromisoformat(entry.query["since"].replace("Z", "+00:00"))


# =========================================================================== pure


def test_relative_and_iso_times_resolve_to_a_millisecond_range():
    since, until = resolve_range("30d", None, now=NOW)
    assert (since, until) == (NOW - timedelta(days=30), NOW)
    since, until = resolve_range("2026-05-01", "2026-05-02T06:00:00Z", now=NOW)
    assert since == datetime(2026, 5, 1, tzinfo=UTC)
    assert until == datetime(2026, 5, 2, 6, tzinfo=UTC)
    # an until in the future is capped at now
    assert resolve_range("1d", "2030-01-01", now=NOW)[1] == NOW
    assert resolve_range("365d", None, now=NOW)[0] == NOW - timedelta(days=365)


@pytest.mark.parametrize(
    ("since", "until", "words"),
    [
        ("yesterday", None, "--since: expected ISO 8601"),
        ("1d", "soon", "--until: expected ISO 8601"),
        ("366d", None, "older than 365 days"),
        ("1d", "2d", "must be before --until"),
        ("2026-06-01T12:00:00Z", None, "must be before --until"),
    ],
)
def test_bad_ranges_are_refused_with_the_option_named(since, until, words):
    with pytest.raises(ConfigError, match=words):
        resolve_range(since, until, now=NOW)


def test_window_size_is_bounded_by_the_api_limit():
    assert window_size("7d") == timedelta(days=7)
    for bad in ("32d", "10s", "later"):
        with pytest.raises(ConfigError, match="--window"):
            window_size(bad)


def test_plan_walks_the_whole_range_oldest_first_in_day_windows():
    start = NOW - timedelta(days=3)
    plan = plan_backfill(start, NOW)
    assert [w.since for w in plan.windows] == [start, start + DAY - EDGE, start + 2 * (DAY - EDGE)]
    assert plan.windows[-1].until == NOW
    assert plan.covered == []


def test_plan_skips_windows_already_done_and_reaches_back_an_edge_into_them():
    start = NOW - timedelta(days=3)
    first = plan_backfill(start, NOW).windows
    done = [(w.since, w.until) for w in first[:2]]
    plan = plan_backfill(start, NOW, done=done)
    assert plan.covered == [(start, first[1].until)]
    assert plan.windows == [Window(first[1].until - EDGE, NOW)]
    # all done: nothing to walk
    assert plan_backfill(start, NOW, done=[(w.since, w.until) for w in first]).windows == []


def test_plan_of_a_later_relative_range_walks_only_what_is_new():
    earlier_now = NOW - timedelta(hours=5)
    earlier = plan_backfill(earlier_now - timedelta(days=2), earlier_now).windows
    plan = plan_backfill(NOW - timedelta(days=2), NOW, done=[(w.since, w.until) for w in earlier])
    assert plan.windows == [Window(earlier_now - EDGE, NOW)]


def test_merge_joins_overlapping_spans():
    a, b, c = NOW, NOW + DAY, NOW + 3 * DAY
    assert merge([(b - EDGE, c - DAY), (a, b), (c, c + DAY)]) == [
        (a, c - DAY),
        (c, c + DAY),
    ]


def test_meter_rate_and_eta_by_windows_remaining():
    clock = [0.0]
    meter = ProgressMeter("sim", windows_total=4, clock=lambda: clock[0])
    clock[0] = 10.0
    meter.page(300)
    meter.window_done()
    assert meter.rate == pytest.approx(30.0)
    assert meter.eta == pytest.approx(30.0)  # 10 s per window, 3 left
    assert "1/4 windows" in meter.bar()
    assert "ETA 00:30" in meter.bar()


def test_progress_is_one_line_per_window_on_a_pipe_and_a_redrawn_bar_on_a_tty():
    window = Window(NOW - DAY, NOW)
    for tty in (False, True):
        stream = io.StringIO()
        meter = ProgressMeter("sim", windows_total=2, clock=lambda: 5.0, started=1.0)
        view = ProgressView(meter, stream, tty=tty)
        meter.page(5)
        view.on_page()
        meter.window_done()
        view.on_window(window, 5, 1)
        view.close()
        text = stream.getvalue()
        if tty:
            assert text.startswith("\r\x1b[K[") and text.endswith("\n")
            assert text.count("\n") == 1
        else:
            assert text.splitlines() == [meter.window_line(window, 5, 1)]
            assert "window 1/2" in text and "records=5" in text


def test_pretty_line_shows_time_source_event_actor_resource_category_and_ip():
    from streamapp.cli.tail import pretty_line

    value = (REPO / "tests" / "golden" / "service_create.json").read_bytes()
    assert pretty_line(value) == (
        "2020-06-04T15:30:16.272Z  pagerduty  service.create                "
        'John Snow (user)  service "Documentation Hub" PD_SERVICE_ID  [service_changes]  '
        "201.19.20.19"
    )
    assert pretty_line(b"{}", partition=2, offset=7) == (
        "(partition 2 offset 7: not an output document, 2 bytes)"
    )


def test_broker_urls_become_bootstrap_servers():
    assert bootstrap_servers("kafka://a:1,kafka://b:2") == ["a:1", "b:2"]
    assert bootstrap_servers("aiokafka://h") == ["h:9092"]
    assert bootstrap_servers(None) == ["127.0.0.1:9092"]


# =========================================================================== commands


def test_export_schemas_check_passes_on_the_committed_schemas():
    result = run(["export-schemas", "--check"], {"KAFKA_BROKER": "kafka://127.0.0.1:1"})
    assert result.returncode == 0, result.stderr


def test_bad_arguments_exit_2_with_one_line_and_no_token():
    env = {"KAFKA_BROKER": "kafka://127.0.0.1:1", "PAGERDUTY_API_TOKEN": TOKEN}
    for args, words in [
        (["backfill", "--source", "nope", "--since", "1d"], "no source named 'nope'"),
        (["backfill", "--since", "400d"], "older than 365 days"),
        (["tail", "--filter", "colour=red"], "--filter"),
    ]:
        result = run(args, env)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], result.stderr
        assert TOKEN not in result.stderr + result.stdout


def test_an_unreachable_broker_is_one_line():
    result = run(["sources"], {"KAFKA_BROKER": "kafka://127.0.0.1:1", "PAGERDUTY_API_TOKEN": TOKEN})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "streamapp sources: cannot reach the Kafka broker at 127.0.0.1:1 (KAFKA_BROKER): "
        "KafkaConnectionError: connection failed"
    ]


@pytest.mark.broker
async def test_backfill_publishes_every_record_and_resumes_after_a_failed_window(
    kafka: Kafka,
):
    now = datetime.now(UTC)
    start = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    end = start + 3 * DAY
    minute = timedelta(minutes=1)
    # window 1 holds one page; windows 2 and 3 three pages each
    records = (
        generate_records(50, start=start + minute, end=start + DAY - minute, seed=1)
        + generate_records(250, start=start + DAY + minute, end=start + 2 * DAY - minute, seed=2)
        + generate_records(250, start=start + 2 * DAY + minute, end=end - minute, seed=3)
    )
    expected = {r["id"] for r in records}
    args = ["backfill", "--source", "sim", "--since", iso(start), "--until", iso(end)]
    with SimulatorThread(tokens={TOKEN: "ok"}, rate_limit_per_minute=None) as sim:
        sim.add_records(records)
        # page 3 first happens in window 2: it fails there after both attempts
        sim.add_fault(FaultRule(status=503, page=3, times=2))
        # one window at a time, so the fault on page 3 falls in window 2 as planned
        env = command_env(
            kafka,
            sim.base_url,
            STREAMAPP_HTTP_RETRY_ATTEMPTS="2",
            STREAMAPP_BACKFILL_CONCURRENCY="1",
        )

        first = await arun(args, env)
        assert first.returncode == 1, first.stderr
        assert TOKEN not in first.stderr + first.stdout
        assert "window 1/3" in first.stderr  # a line per window on a pipe
        [failure] = [line for line in first.stderr.splitlines() if "failed" in line]
        assert "503" in failure and "1 of 3 windows are saved" in failure

        sim.clear_requests()
        second = await arun(args, env)
        assert second.returncode == 0, second.stderr
        walked = [r for r in sim.requests if r.path == "/audit/records"]
        assert "resuming, skipping 1d" in second.stderr
        assert "window 2/2" in second.stderr and "done: 500 records" in second.stderr
        # the acknowledged window 1 was not asked for again
        assert walked and min(since_of(r) for r in walked) == start + DAY - EDGE

        sim.clear_requests()
        third = await arun(args, env)
        assert third.returncode == 0, third.stderr
        assert "nothing to walk" in third.stderr
        assert [r for r in sim.requests if r.path == "/audit/records"] == []

    messages = await kafka.read(
        "pagerduty_audit_logs_raw", until_count=len(records), timeout=30, idle=1
    )
    ids = [m.key.decode() for m in messages]
    assert set(ids) == expected
    # the poller's envelope: the record byte-exact, keyed by id, source header
    assert_raw_envelopes(messages[:50], records, "sim")
    # window 2's first pages were sent before the failure and again on resume: dedupe's job
    assert len(ids) <= len(records) + 200


async def produce(kafka: Kafka, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await (await producer.send(topic, value, key=key))
    finally:
        await producer.stop()


@pytest.mark.broker
async def test_tail_prints_output_documents_as_json_lines_and_filters_them(kafka: Kafka):
    topic = kafka.topic("pagerduty_audit_logs")
    await create_topics(kafka.bootstrap, {topic: 4})
    documents = [
        enrich(path.read_bytes(), source_name="sim", ingested_at=datetime.now(UTC))
        for path in GOLDEN_INPUTS
    ]
    await produce(kafka, topic, [(d.id.encode(), encode_document(d)) for d in documents])
    env = command_env(kafka)

    everything = await arun(["tail", "--from-beginning"], env)
    assert everything.returncode == 0, everything.stderr
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert sorted(d["id"] for d in lines) == sorted(d.id for d in documents)

    creates = await arun(["tail", "--filter", "action=create", "--last", "100"], env)
    assert creates.returncode == 0, creates.stderr
    got = [json.loads(line)["id"] for line in creates.stdout.splitlines()]
    assert sorted(got) == sorted(d.id for d in documents if d.action == "create")
    assert 0 < len(got) < len(documents)

    team_updates = await arun(
        ["tail", "--from-beginning", "--filter", "event_name=team.update", "--format", "text"],
        env,
    )
    assert team_updates.returncode == 0, team_updates.stderr
    wanted = [d for d in documents if d.event_name == "team.update"]
    text = team_updates.stdout.splitlines()
    assert len(text) == len(wanted) > 0
    assert all("team.update" in line and " sim " in line for line in text)

    last_two = await arun(["tail", "--last", "2"], env)
    assert last_two.returncode == 0, last_two.stderr
    assert len(last_two.stdout.splitlines()) == 2


@pytest.mark.broker
async def test_sources_shows_each_source_with_its_checkpoint_from_the_changelog(
    kafka: Kafka, tmp_path: Path
):
    sources_file = tmp_path / "sources.toml"
    sources_file.write_text(
        "[[sources]]\n"
        'name = "sim"\n'
        f'token = "{TOKEN}"\n'
        'api_url = "http://127.0.0.1:9"\n'
        'poll_interval = "30s"\n'
        "[[sources]]\n"
        'name = "other"\n'
        f'token = "{TOKEN}x"\n'
        'api_url = "https://api.eu.pagerduty.com"\n'
    )
    until = datetime.now(UTC) - timedelta(minutes=3)
    last_record = until - timedelta(minutes=10)
    old = Checkpoint(until=until - DAY, updated_at=until - DAY, records=1)
    new = Checkpoint(until=until, updated_at=until, records=42, last_record_at=last_record)
    changelog = f"{kafka.app_id}-checkpoints-changelog"
    await create_topics(kafka.bootstrap, {changelog: 1})
    await produce(kafka, changelog, [(b"sim", msgspec.json.encode(c)) for c in (old, new)])
    env = {k: v for k, v in command_env(kafka).items() if not k.startswith("PAGERDUTY_")}
    env["STREAMAPP_SOURCES_FILE"] = str(sources_file)

    result = await arun(["sources", "--json"], env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"sim", "other"}
    sim = rows["sim"]
    assert sim["checkpoint"] == until.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert sim["last_record_at"].startswith(last_record.strftime("%Y-%m-%dT%H:%M"))
    assert 170 < sim["lag_seconds"] < 400
    assert sim["records"] == 42 and sim["poll_interval_seconds"] == 30
    assert sim["health"] is None
    assert rows["other"]["checkpoint"] is None
    assert rows["other"]["api_host"] == "api.eu.pagerduty.com"

    # the health changelog is optional; when present its status is shown
    health = f"{kafka.app_id}-health-changelog"
    await create_topics(kafka.bootstrap, {health: 1})
    await produce(kafka, health, [(b"sim", b'{"source_name": "sim", "status": "stale"}')])
    table = await arun(["sources"], env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "API"]
    [sim_line] = [line for line in lines if line.startswith("sim ")]
    assert "127.0.0.1:9" in sim_line and "30s" in sim_line and sim_line.endswith("stale")
    assert "3m" in sim_line  # lag
    [other_line] = [line for line in lines if line.startswith("other ")]
    assert other_line.split()[-4:] == ["-", "-", "-", "-"]
    assert TOKEN not in table.stdout + table.stderr


def test_verify_wraps_streamapp_verify(tmp_path: Path):
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim:
        env = {
            "KAFKA_BROKER": "kafka://127.0.0.1:1",
            "PAGERDUTY_API_TOKEN": TOKEN,
            "PAGERDUTY_API_URL": sim.base_url,
            "PAGERDUTY_SOURCE_NAME": "sim",
        }
        good = run(["verify", "--source", "sim"], env)
        sim.revoke_token(TOKEN)
        bad = run(["verify"], env)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("sim: ")
    assert bad.returncode == 1
    assert TOKEN not in bad.stdout + bad.stderr


def test_rules_test_prints_what_would_fire_and_refuses_bad_input(tmp_path: Path):
    case = REPO / "tests" / "golden" / "detections" / "user_granted_admin_role"
    env = {"KAFKA_BROKER": "kafka://127.0.0.1:1"}  # a file replay touches no broker
    result = run(["rules", "test", str(case / "promoted_to_admin.json")], env)
    assert result.returncode == 0, result.stderr
    assert "user_granted_admin_role  T1098.003" in result.stdout
    assert "1 record" in result.stdout.splitlines()[-1]
    missing = run(["rules", "test", str(tmp_path / "nope.json")], env)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"streamapp rules: {tmp_path / 'nope.json'}: cannot read: No such file or directory"
    ]
    bad_rules = tmp_path / "rules.toml"
    bad_rules.write_text("[[rules]]\nid = 3\n")
    refused = run(
        ["rules", "test", str(case / "promoted_to_admin.json")],
        {**env, "STREAMAPP_RULES_FILE": str(bad_rules)},
    )
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert str(bad_rules) in refused.stderr

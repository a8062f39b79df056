"""Every document a live worker emits, on every topic, validates against the JSON Schemas
committed in ``schemas/`` (checked with ``jsonschema``, a validator we did not write).

One live run for the module: the simulator, a real broker, a worker with OCSF and ECS on,
a routing rule and the built-in detections (findings; PAGERDUTY_NOTIFY_FINDINGS=high so that
notifications of kind ``finding`` are checked too, when the worker makes them), and
enough going wrong that every topic gets something: a record without a root resource (a
dead letter from the pipeline), a record nested deeper than STREAMAPP_MAX_JSON_DEPTH
(rejected by the poller: a rejected envelope on the raw topic, a dead letter of stage
``poll``), records older than PAGERDUTY_HEALTH_CHECK (``source_stale``) and a token revoked,
then restored (``source_error``, ``source_recovered``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from streamapp.devtools.simulator import SimulatorThread, generate_records
from tests.kafka_harness import REPO, Kafka, Worker, read_topic

pytestmark = pytest.mark.broker

SCHEMAS = REPO / "schemas"
TOKEN = "schemas-token-0123456789abcdef"
RECORDS = 200
PARTITIONS = 4

#: topic (base name, as in the README) → the schema file its documents must validate against
TOPIC_SCHEMAS = {
    "pagerduty_audit_logs": "pagerduty_audit_logs.schema.json",
    "pagerduty_audit_logs.user_access": "pagerduty_audit_logs.schema.json",  # a routed topic
    "pagerduty_audit_logs.ocsf": "pagerduty_audit_logs.ocsf.schema.json",
    "pagerduty_audit_logs.ecs": "pagerduty_audit_logs.ecs.schema.json",
    "pagerduty_audit_findings": "pagerduty_audit_findings.schema.json",
    "pagerduty_audit_logs_dlq": "pagerduty_audit_logs_dlq.schema.json",
    "pagerduty_audit_logs_raw": "pagerduty_audit_logs_raw.schema.json",
    "notifications": "notifications.schema.json",
}

# jsonschema checks "date-time" only with the optional rfc3339-validator installed; without
# it the format passes silently. This is RFC 3339 section 5.6, checked here instead.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


@dataclass
class Emitted:
    kafka: Kafka
    #: topic base name → every message value on it, in the order read
    values: dict[str, list[bytes]]


def deep(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        node = {"nested": node}
    return node


def odd_records(template: dict[str, Any]) -> list[dict[str, Any]]:
    no_root = {k: v for k, v in template.items() if k != "root_resource"}
    no_root["id"] = "SCHEMAS-NO-ROOT-RESOURCE"
    too_deep = dict(template, id="SCHEMAS-TOO-DEEP", details=deep(80))
    return [no_root, too_deep]


async def wait_for_notifications(
    kafka: Kafka, worker: Worker, kinds: set[str], timeout: float = 45
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    notes: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        messages = await kafka.read("notifications", timeout=5, idle=0.5)
        notes = [json.loads(m.value) for m in messages]
        if kinds <= {n["kind"] for n in notes}:
            return notes
        assert worker.process is not None and worker.process.poll() is None, worker.log()[-4000:]
        await asyncio.sleep(0.3)
    raise AssertionError(f"no {sorted(kinds)} within {timeout}s; got {notes}")


async def run(kafka: Kafka, sim: SimulatorThread, worker: Worker) -> dict[str, list[bytes]]:
    def topic(base: str) -> str:
        return kafka.topic("pagerduty_audit_logs") + base[len("pagerduty_audit_logs") :]

    bootstrap = kafka.bootstrap
    out = await read_topic(bootstrap, topic("pagerduty_audit_logs"), until_count=RECORDS)
    assert len(out) == RECORDS, worker.log()[-4000:]
    # the newest record is an hour old, the health check 30 minutes: stale at once
    await wait_for_notifications(kafka, worker, {"source_stale"})
    sim.revoke_token(TOKEN)
    await wait_for_notifications(kafka, worker, {"source_error"})
    sim.restore_token(TOKEN)
    await wait_for_notifications(kafka, worker, {"source_recovered"})
    values = {"pagerduty_audit_logs": [m.value for m in out]}
    expect = {
        "pagerduty_audit_logs.ocsf": RECORDS,
        "pagerduty_audit_logs.ecs": RECORDS,
        "pagerduty_audit_findings": None,
        "pagerduty_audit_logs_dlq": 2,
        "pagerduty_audit_logs_raw": RECORDS + 2,
        "pagerduty_audit_logs.user_access": None,
    }
    for base, count in expect.items():
        name = kafka.topic(base) if base != "pagerduty_audit_logs.user_access" else topic(base)
        messages = await read_topic(bootstrap, name, until_count=count, timeout=30)
        values[base] = [m.value for m in messages]
    notes = await read_topic(bootstrap, kafka.topic("notifications"), timeout=10)
    values["notifications"] = [m.value for m in notes]
    return values


@pytest.fixture(scope="module")
def emitted(module_kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Emitted:
    return emit(module_kafka, tmp_path_factory.mktemp("live-schemas"))


def emit(kafka: Kafka, tmp: Path) -> Emitted:
    """A worker's run over generated and odd records: what it wrote on every topic."""
    routes = tmp / "routes.toml"
    routes.write_text(
        f'[[routes]]\ntopic = "{kafka.topic("pagerduty_audit_logs")}.user_access"\n'
        'category = ["user_access"]\n'
    )
    now = datetime.now(UTC)
    records = generate_records(
        RECORDS, start=now - timedelta(hours=5), end=now - timedelta(hours=1), seed=5
    )
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim:
        sim.add_records([*records, *odd_records(records[0])])
        env = {
            **kafka.env(),
            "PAGERDUTY_API_TOKEN": TOKEN,
            "PAGERDUTY_API_URL": sim.base_url,
            "PAGERDUTY_SOURCE_NAME": "sim",
            "PAGERDUTY_POLL_INTERVAL": "1",
            "PAGERDUTY_LOOKBACK": "6h",
            "PAGERDUTY_HEALTH_CHECK": "30m",
            "STREAMAPP_PARTITIONS": str(PARTITIONS),
            "STREAMAPP_OCSF": "true",
            "STREAMAPP_TOPIC_OCSF": kafka.topic("pagerduty_audit_logs.ocsf"),
            "STREAMAPP_ECS": "true",
            "STREAMAPP_TOPIC_ECS": kafka.topic("pagerduty_audit_logs.ecs"),
            "STREAMAPP_DETECTIONS": "true",
            "STREAMAPP_TOPIC_FINDINGS": kafka.topic("pagerduty_audit_findings"),
            "PAGERDUTY_NOTIFY_FINDINGS": "high",
            "STREAMAPP_ROUTES_FILE": str(routes),
            "STREAMAPP_HTTP_RETRY_BASE": "0.05",
        }
        worker = Worker(env, tmp / "worker.log").start()
        try:
            values = asyncio.run(run(kafka, sim, worker))
        finally:
            worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-4000:]
    return Emitted(kafka=kafka, values=values)


def schema_problems(schema: dict[str, Any], values: list[bytes]) -> list[str]:
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
    problems = []
    for index, value in enumerate(values):
        document = json.loads(value.decode("utf-8"))
        for error in validator.iter_errors(document):
            where = "/".join(str(p) for p in error.absolute_path) or "(document)"
            problems.append(f"message {index}: {where}: {error.message}"[:300])
    return problems


def test_every_topic_got_documents(emitted: Emitted):
    """The run produced every kind the schemas describe (else the checks below prove little)."""
    values = emitted.values
    assert set(values) == set(TOPIC_SCHEMAS)
    for base, docs in values.items():
        assert docs, f"nothing on {base}"
    letters = [json.loads(v) for v in values["pagerduty_audit_logs_dlq"]]
    assert {letter["stage"] for letter in letters} == {"pipeline", "poll"}
    raw = [json.loads(v) for v in values["pagerduty_audit_logs_raw"]]
    assert sum(1 for envelope in raw if "rejected" in envelope) == 1
    kinds = {json.loads(v)["kind"] for v in values["notifications"]}
    assert {"source_stale", "source_error", "source_recovered"} <= kinds


@pytest.mark.parametrize("topic", list(TOPIC_SCHEMAS))
def test_every_document_validates_against_its_topic_schema(emitted: Emitted, topic: str):
    path = SCHEMAS / TOPIC_SCHEMAS[topic]
    values = emitted.values[topic]
    if not path.exists():
        hint = ""
        if topic == "notifications":
            from streamapp.core.health import Notification

            model = msgspec.json.schema(Notification)
            would = "pass" if not schema_problems(model, values) else "fail"
            hint = (
                "; add Notification (streamapp.core.health) to SCHEMAS in"
                f" streamapp/cli/schemas.py (its {len(values)} live documents would {would}"
                " against msgspec's schema of it)"
            )
        pytest.fail(
            f"{len(values)} documents on {topic!r} but no JSON Schema for them:"
            f" schemas/{path.name} does not exist{hint}"
        )
    problems = schema_problems(json.loads(path.read_text()), values)
    assert not problems, f"{len(problems)} problems on {topic}:\n" + "\n".join(problems[:20])


def test_every_schema_file_is_checked_on_a_live_topic():
    """A schema added for a new topic must be added to TOPIC_SCHEMAS (and the run) above."""
    files = {path.name for path in SCHEMAS.glob("*.schema.json")}
    assert files <= set(TOPIC_SCHEMAS.values()), sorted(files - set(TOPIC_SCHEMAS.values()))

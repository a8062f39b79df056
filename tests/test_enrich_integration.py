"""GeoIP/ASN, ECS and OCSF on a live worker: small MaxMind databases built by the test, the
simulator, a real broker; every rendering checked against its official definitions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamapp.devtools.simulator import SimulatorThread
from tests.kafka_harness import Kafka, Worker, read_topic
from tests.test_ecs import categorisation_problems, ecs_problems
from tests.test_geoip import ASN_RECORDS, CITY_RECORDS, write_mmdb
from tests.test_ocsf_schema import problems as ocsf_problems

pytestmark = pytest.mark.broker

TOKEN = "geo-token-0123456789abcdef"


def record(n: int, address: str | None, at: datetime) -> dict:
    context = {"request_id": f"req-{n}", "remote_address": address}
    return {
        "id": f"geo-{n:03d}",
        "execution_time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "execution_context": context,
        "actors": [{"id": "PUSER1", "type": "user_reference", "summary": "Ada"}],
        "method": {"type": "browser"},
        "root_resource": {"id": f"PTEAM{n}", "type": "team_reference", "summary": "Ops"},
        "action": "update",
        "details": {
            "resource": {"id": f"PTEAM{n}", "type": "team_reference", "summary": "Ops"},
            "fields": [{"name": "name", "value": "Ops", "before_value": "Old"}],
        },
    }


async def test_geoip_reaches_the_document_ocsf_and_ecs_and_each_validates(
    kafka: Kafka, tmp_path: Path
):
    city = write_mmdb(tmp_path / "city.mmdb", "GeoLite2-City", CITY_RECORDS)
    asn = write_mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN", ASN_RECORDS)
    now = datetime.now(UTC)
    records = [
        record(1, "81.2.69.142", now - timedelta(minutes=3)),  # London, AS20712
        record(2, "10.0.0.7", now - timedelta(minutes=2)),  # private: no answer
        record(3, None, now - timedelta(minutes=1)),  # no address at all
    ]
    with SimulatorThread(tokens={TOKEN: "ok"}) as sim:
        sim.add_records(records)
        env = {
            **kafka.env(),
            "PAGERDUTY_API_TOKEN": TOKEN,
            "PAGERDUTY_API_URL": sim.base_url,
            "PAGERDUTY_POLL_INTERVAL": "1",
            "PAGERDUTY_LOOKBACK": "1h",
            "STREAMAPP_PARTITIONS": "2",
            "STREAMAPP_GEOIP_DB": str(city),
            "STREAMAPP_ASN_DB": str(asn),
            "STREAMAPP_OCSF": "true",
            "STREAMAPP_TOPIC_OCSF": kafka.topic("pagerduty_audit_logs.ocsf"),
            "STREAMAPP_ECS": "true",
            "STREAMAPP_TOPIC_ECS": kafka.topic("pagerduty_audit_logs.ecs"),
        }
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            out, ocsf, ecs = [
                await read_topic(kafka.bootstrap, kafka.topic(name), until_count=3, timeout=90)
                for name in (
                    "pagerduty_audit_logs",
                    "pagerduty_audit_logs.ocsf",
                    "pagerduty_audit_logs.ecs",
                )
            ]
        finally:
            worker.stop()
    documents = {d["id"]: d for d in (json.loads(m.value) for m in out)}
    london = documents["geo-001"]
    assert london["src_geo"]["country_iso_code"] == "GB"
    assert london["src_geo"]["location"]["lat"] == pytest.approx(51.5142, abs=0.01)
    assert london["src_as"] == {"number": 20712, "organization": "Andrews & Arnold Ltd"}
    for unknown in ("geo-002", "geo-003"):  # no answer: the fields are absent, not null
        assert "src_geo" not in documents[unknown] and "src_as" not in documents[unknown]

    events = {e["metadata"]["uid"]: e for e in (json.loads(m.value) for m in ocsf)}
    for event in events.values():
        assert ocsf_problems(event) == [], event
    endpoint = events["geo-001"]["src_endpoint"]
    assert endpoint["location"]["country"] == "GB"
    assert endpoint["autonomous_system"] == {"number": 20712, "name": "Andrews & Arnold Ltd"}

    elastic = {d["event"]["id"]: d for d in (json.loads(m.value) for m in ecs)}
    assert set(elastic) == set(documents)
    for document in elastic.values():
        assert ecs_problems(document) == [], document
        assert categorisation_problems(document["event"]) == []
    assert elastic["geo-001"]["source"]["geo"]["country_iso_code"] == "GB"
    assert elastic["geo-001"]["source"]["as"]["number"] == 20712

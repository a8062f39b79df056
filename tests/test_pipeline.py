"""The pure pipeline step: dedupe decisions, routing fan-out, dead letters, expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.core.deadletter import DeadLetter, original_bytes
from streamapp.core.models import RawEnvelope
from streamapp.core.pipeline import Incoming, Processor, expired_ids, seen_value
from streamapp.core.routing import Router

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TEAM = (GOLDEN / "inputs" / "team_create.json").read_bytes().strip()
USER = (GOLDEN / "inputs" / "user_create.json").read_bytes().strip()


def envelope(record: bytes, source: str = "prod") -> bytes:
    return msgspec.json.encode(
        RawEnvelope(source_name=source, polled_at=NOW, record=msgspec.Raw(record))
    )


def incoming(record: bytes, offset: int = 0, key: bytes | None = None) -> Incoming:
    record_id = json.loads(record)["id"].encode()
    return Incoming(key if key is not None else record_id, envelope(record), 0, offset)


def processor(**kwargs) -> Processor:
    return Processor(
        raw_topic="raw", output_topic="out", dlq_topic="dlq", clock=lambda: NOW, **kwargs
    )


def nothing_seen(key: bytes, partition: int) -> bool:
    return False


def test_a_record_becomes_one_output_with_headers_and_resource_key():
    result = processor().process([incoming(TEAM)], nothing_seen)
    [message] = result.messages
    assert message.topic == "out"
    assert message.key == b"team:PXASDFE"
    assert dict(message.headers) == {
        "source_name": b"prod",
        "action": b"create",
        "resource_type": b"team",
        "category": b"teams_and_escalation",
    }
    assert result.fresh == [(b"PDRECORDID1_TEAM_CREATED", 0)]
    assert result.emitted == {"prod": 1}


def test_the_same_id_in_one_batch_is_emitted_once():
    result = processor().process(
        [incoming(TEAM, 0), incoming(TEAM, 1), incoming(TEAM, 2)], nothing_seen
    )
    assert len(result.messages) == 1
    assert sum(result.duplicates.values()) == 2


def test_an_id_already_seen_is_not_emitted_again():
    result = processor().process(
        [incoming(TEAM)], lambda key, partition: key == b"PDRECORDID1_TEAM_CREATED"
    )
    assert result.messages == [] and result.fresh == []


def test_a_keyless_duplicate_is_caught_by_its_record_id():
    result = processor().process(
        [incoming(TEAM, 0), Incoming(None, envelope(TEAM), 1, 5)], nothing_seen
    )
    assert len(result.messages) == 1


def test_routing_rules_add_topics_and_ocsf_adds_its_own():
    router = Router.from_toml_text(
        '[[routes]]\ntopic = "audit.user_access"\ncategory = ["user_access"]\n'
    )
    result = processor(router=router, ocsf_topic="ocsf").process(
        [incoming(TEAM, 0), incoming(USER, 1)], nothing_seen
    )
    topics = sorted(m.topic for m in result.messages)
    assert topics == ["audit.user_access", "ocsf", "ocsf", "out", "out"]


def test_undecodable_input_becomes_a_dead_letter_with_the_original_bytes():
    garbage = Incoming(b"k", b"\xff\x00 not json", 3, 17)
    result = processor().process([garbage], nothing_seen)
    [message] = result.messages
    assert message.topic == "dlq"
    letter = msgspec.json.decode(message.value, type=DeadLetter)
    assert original_bytes(letter) == b"\xff\x00 not json"
    assert (letter.partition, letter.offset, letter.stage) == (3, 17, "pipeline")
    assert "envelope" in letter.reason


def test_a_record_missing_a_required_field_is_dead_lettered_with_the_field_named():
    record = json.loads(TEAM)
    del record["action"]
    raw = json.dumps(record).encode()
    result = processor().process([Incoming(b"x", envelope(raw), 0, 0)], nothing_seen)
    letter = msgspec.json.decode(result.messages[0].value, type=DeadLetter)
    assert "action" in letter.reason
    assert result.dead == {"prod": 1}


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000), st.one_of(st.none(), st.binary(max_size=50)))
def test_no_input_makes_the_processor_raise(value: bytes, key: bytes | None):
    result = processor().process([Incoming(key, value, 0, 0)], nothing_seen)
    assert len(result.messages) == 1  # either an output or a dead letter, never nothing


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=len(TEAM) - 1))
def test_truncated_records_are_dead_lettered(cut: int):
    result = processor().process([Incoming(b"k", envelope(TEAM[:cut]), 0, 0)], nothing_seen)
    assert [m.topic for m in result.messages] == ["dlq"]


def test_expiry_keeps_recent_ids_and_only_touches_owned_partitions():
    items = [
        (b"old-mine", seen_value(100, 0)),
        (b"new-mine", seen_value(10_000, 0)),
        (b"old-other", seen_value(100, 1)),
        (b"broken", b"garbage"),
    ]
    expired = expired_ids(items, active_partitions={0}, cutoff=5_000)
    assert expired == [(b"old-mine", 0), (b"broken", -1)]

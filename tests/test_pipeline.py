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
from streamapp.core.pipeline import Incoming, Processor, expired_ids, ocsf_rendering, seen_value
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
    result = processor(router=router, renderings=[ocsf_rendering("ocsf")]).process(
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
    assert result.dead == {("prod", "pipeline"): 1}
    assert letter.reason.count("invalid audit record") == 1


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


def rejected_incoming(original: bytes, reason: str, *, room: int = 1 << 20) -> Incoming:
    from streamapp.core.rawtopic import rejected_message

    message = rejected_message(
        "prod",
        original,
        reason=reason,
        record_id="bad-1",
        raw_topic="raw",
        polled_at=NOW,
        room=room,
    )
    return Incoming(message.key, message.value, 0, 7)


def test_a_record_the_poller_rejected_is_dead_lettered_once_per_key():
    bad = b'{"id": "bad-1", "execution_time": "not a time"}'
    item = rejected_incoming(bad, "execution_time is not a time")
    first = processor().process([item, item], nothing_seen)
    [message] = first.messages
    letter = msgspec.json.decode(message.value, type=DeadLetter)
    assert message.topic == "dlq" and message.key == b"dlq:bad-1"
    assert letter.stage == "poll" and letter.record_id == "bad-1"
    assert "execution_time is not a time" in letter.reason
    assert original_bytes(letter) == bad
    assert first.fresh == [(b"dlq:bad-1", 0)]
    seen = {key for key, _ in first.fresh}
    again = processor().process([item], lambda key, partition: key in seen)
    assert again.messages == [] and again.dead == {}


def test_a_rejected_record_too_large_to_carry_keeps_its_size_and_hash():
    big = b'{"id": "bad-1", "pad": "' + b"x" * 200_000 + b'"}'
    item = rejected_incoming(big, "the record is too large", room=64 * 1024)
    assert len(item.value or b"") < 64 * 1024
    [message] = processor().process([item], nothing_seen).messages
    letter = msgspec.json.decode(message.value, type=DeadLetter)
    assert letter.original_encoding == "omitted" and letter.original == ""
    assert letter.original_size == len(big)
    assert letter.original_sha256 and len(letter.original_sha256) == 64


def test_an_output_larger_than_its_topic_takes_is_dead_lettered_and_marked_seen():
    record = json.loads(TEAM)
    record["details"]["fields"][0]["value"] = "x" * 50_000
    big = json.dumps(record).encode()
    rooms = {"out": 60_000, "dlq": 1 << 20}
    result = processor(room=lambda topic: rooms.get(topic, 1 << 20)).process(
        [incoming(big), incoming(TEAM, offset=1, key=b"other")], nothing_seen
    )
    topics = [m.topic for m in result.messages]
    assert topics == ["dlq", "out"] or topics.count("dlq") == 1
    letter = msgspec.json.decode(result.messages[0].value, type=DeadLetter)
    assert "more than the 60,000" in letter.reason and letter.record_id == record["id"]
    assert (record["id"].encode(), 0) in result.fresh
    assert result.dead == {("prod", "pipeline"): 1}


def test_a_record_dated_in_the_future_is_flagged():
    record = json.loads(TEAM)
    record["execution_time"] = "2999-01-01T00:00:00Z"
    [message] = processor().process([incoming(json.dumps(record).encode())], nothing_seen).messages
    document = json.loads(message.value)
    assert any(
        "in the future" in w or "after the time it was processed" in w for w in document["warnings"]
    )

"""Stateful rules over sequences: bursts fire once per burst, first sightings once per value,
replays after a crash give the same finding ids and no second finding, state stays
bounded and expires."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.core.detect import (
    Detector,
    Finding,
    decode_state,
    expire,
    parse_rules,
    state_key,
    step,
)
from streamapp.core.detect.rules import Rule
from streamapp.core.detect.stateful import BurstState, FirstSeenState
from streamapp.core.enrich import enrich
from streamapp.core.output import OutputDocument
from tests.helpers import toml_document

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def first_seen(rule_id: str, title: str, description: str, track: str) -> dict[str, Any]:
    """A first_seen rule of ``track`` per actor (rules files as dicts: ``toml_document``)."""
    return {
        "id": rule_id,
        "title": title,
        "severity": "low",
        "description": description,
        "kind": "first_seen",
        "track": track,
        "group_by": ["actor_id"],
    }


BURST3: dict[str, Any] = {
    "id": "burst3",
    "title": "Three deletions",
    "severity": "high",
    "attack": "T1485",
    "description": "Three deletions by one actor within ten minutes.",
    "kind": "burst",
    "threshold": 3,
    "window": "10m",
    "match": [{"action": "delete"}],
}
NEW_METHOD = first_seen("new_method", "New method", "A method new for the actor.", "auth_method")
NEW_IP = first_seen("new_ip", "New address", "An address new for the actor.", "src_ip")
RULES = parse_rules(
    toml_document(
        builtin=False,
        rules=[
            BURST3,
            {**NEW_METHOD, "retention": "30d"},
            {**NEW_IP, "retention": "30d", "learn_first": True, "max_values": 3},
        ],
        overrides={"prod-eu": {"burst3": {"threshold": 5}}},
    )
)
BURST = RULES.for_source("prod-us")[0]
METHOD = RULES.for_source("prod-us")[1]
ADDRESS = RULES.for_source("prod-us")[2]


def doc(
    rid: str,
    minutes: float = 0,
    *,
    action: str = "delete",
    actor: str | None = "PK1",
    method: str = "api_token",
    ip: str | None = "198.51.100.7",
    source: str = "prod-us",
) -> OutputDocument:
    record: dict[str, Any] = {
        "id": rid,
        "execution_time": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
        "method": {"type": method},
        "root_resource": {"id": f"PR{rid}", "type": "user_reference", "summary": f"User {rid}"},
        "action": action,
        "execution_context": {"request_id": f"req-{rid}"},
    }
    if actor is not None:
        record["actors"] = [{"id": actor, "type": "api_key_reference", "summary": f"key {actor}"}]
    if ip is not None:
        record["execution_context"]["remote_address"] = ip
    return enrich(
        json.dumps(record).encode(), source_name=source, ingested_at=T0 + timedelta(days=400)
    )


def run(rule: Rule, docs: list[OutputDocument], state: bytes | None = None):
    """Step every doc through one key's state; the final state and all findings."""
    findings: list[Finding] = []
    for item in docs:
        state, found = step(rule, state, item)
        findings += found
    return state, findings


# --- burst -------------------------------------------------------------------------------


def test_burst_fires_once_at_threshold_not_again_within_the_window_and_again_after() -> None:
    state, first = run(BURST, [doc("a", 0), doc("b", 1)])
    assert first == []
    state, fired = run(BURST, [doc("c", 2)], state)
    assert [f.record_ids for f in fired] == [["a", "b", "c"]]
    assert fired[0].at == "2026-03-10T09:02:00.000Z"
    assert fired[0].first_seen == "2026-03-10T09:00:00.000Z"
    assert fired[0].evidence == {
        "count": "3",
        "threshold": "3",
        "window": "10m",
        "actor_id": "PK1",
    }
    assert [r.id for r in fired[0].resources] == ["PRa", "PRb", "PRc"]
    state, quiet = run(BURST, [doc(f"m{i}", 3 + i) for i in range(7)], state)
    assert quiet == []  # 3..9 minutes: inside the burst's ten minutes
    state, again = run(BURST, [doc("x", 10), doc("y", 11), doc("z", 12)], state)
    assert [f.record_ids for f in again] == [["x", "y", "z"]]
    assert again[0].id != fired[0].id


def test_burst_counts_execution_time_not_arrival_order() -> None:
    docs = [doc("a", 0), doc("b", 4), doc("c", 9)]
    _, in_order = run(BURST, docs)
    _, newest_first = run(BURST, docs[::-1])
    _, shuffled = run(BURST, [docs[1], docs[2], docs[0]])
    assert len(in_order) == 1
    assert in_order == newest_first == shuffled


def test_a_burst_polled_newest_first_fires_once() -> None:
    docs = [doc(f"d{i}", i * 0.5) for i in range(12)]  # 0 to 5.5 minutes
    _, oldest_first = run(BURST, docs)
    _, newest_first = run(BURST, docs[::-1])
    assert [f.record_ids for f in oldest_first] == [["d0", "d1", "d2"]]
    assert [f.record_ids for f in newest_first] == [["d9", "d10", "d11"]]


def test_burst_needs_threshold_records_within_one_window() -> None:
    _, findings = run(BURST, [doc("a", 0), doc("b", 6), doc("c", 12), doc("d", 18.5)])
    assert findings == []  # any three span more than ten minutes
    _, exactly = run(BURST, [doc("a", 0), doc("b", 5), doc("c", 10)])
    assert exactly == []  # the window is [first, first + 10m)


def test_burst_ignores_records_too_late_to_join_a_window() -> None:
    state, _ = run(BURST, [doc("a", 60), doc("b", 61)])
    state, findings = run(BURST, [doc("old", 45)], state)
    assert findings == []
    decoded = decode_state(state)
    assert isinstance(decoded, BurstState)
    assert [e.id for e in decoded.pending] == ["a", "b"]


def test_burst_keys_by_source_and_actor_and_skips_records_without_one() -> None:
    assert state_key(BURST, doc("a")) == b"prod-us|burst3|PK1"
    assert state_key(BURST, doc("a", actor="PK|2%")) == b"prod-us|burst3|PK%7C2%25"
    assert state_key(BURST, doc("a", source="prod-eu")) == b"prod-eu|burst3|PK1"
    assert state_key(BURST, doc("a", actor=None)) is None
    assert state_key(BURST, doc("a", action="update")) is None
    assert step(BURST, b"kept", doc("a", action="update")) == (b"kept", [])


def test_burst_threshold_override_applies_to_its_source_only() -> None:
    detector = Detector(RULES)
    store: dict[bytes, bytes | None] = {}
    fired = []
    for i in range(5):
        for source in ("prod-us", "prod-eu"):
            findings, updates = detector.evaluate(doc(f"{source}-{i}", i, source=source), store.get)
            store.update(updates)
            fired += [(f.source_name, len(f.record_ids)) for f in findings if f.rule_id == "burst3"]
    assert fired == [("prod-us", 3), ("prod-eu", 5)]


def test_replayed_records_are_not_counted_twice() -> None:
    docs = [doc("a", 0), doc("b", 1)]
    state, _ = run(BURST, docs)
    same, findings = run(BURST, docs, state)
    assert findings == [] and same is state  # nothing changed: nothing to write
    state, fired = run(BURST, [doc("c", 2)], state)
    assert len(fired) == 1
    _, findings = run(BURST, [*docs, doc("c", 2), doc("d", 3)], state)
    assert findings == []


def test_crash_before_state_is_stored_repeats_the_finding_with_the_same_id() -> None:
    before, _ = run(BURST, [doc("a", 0), doc("b", 1)])
    after, first = run(BURST, [doc("c", 2)], before)
    # the finding was published, the state write was lost: the record comes again
    _, repeat = run(BURST, [doc("c", 2)], before)
    assert [f.id for f in repeat] == [f.id for f in first]
    assert repeat == first
    # the state write made it: the record comes again and fires nothing
    _, nothing = run(BURST, [doc("c", 2)], after)
    assert nothing == []


def test_burst_state_stays_bounded_over_a_long_stream() -> None:
    state: bytes | None = None
    sizes = []
    fired = 0
    for i in range(2000):
        state, findings = step(BURST, state, doc(f"r{i}", i * 0.7))
        fired += len(findings)
        sizes.append(len(state or b""))
    decoded = decode_state(state)
    assert isinstance(decoded, BurstState)
    assert len(decoded.pending) < 3 and len(decoded.bursts) <= 2
    assert max(sizes) < 1200
    assert fired == 2000 // 15 + 1  # 15 records per 10.5 minutes; one burst each


def test_burst_expires_when_the_window_has_passed() -> None:
    state, _ = run(BURST, [doc("a", 0), doc("b", 5)])
    assert state is not None
    assert expire(state, T0 + timedelta(minutes=9)) is state
    partial = expire(state, T0 + timedelta(minutes=12))
    assert partial is not None and partial != state
    decoded = decode_state(partial)
    assert isinstance(decoded, BurstState) and [e.id for e in decoded.pending] == ["b"]
    assert expire(state, T0 + timedelta(minutes=16)) is None
    fired, _ = run(BURST, [doc("c", 6)], state)
    assert fired is not None
    # the burst covers [0, 10); a record of that span can still come while it is within
    # the window of the newest, so the burst is kept a window longer
    assert expire(fired, T0 + timedelta(minutes=19)) == fired
    assert expire(fired, T0 + timedelta(minutes=20, seconds=1)) is None


def test_unreadable_or_foreign_state_starts_afresh_and_never_raises() -> None:
    for junk in (b"not json", b"{}", b'{"kind": "burst"}', b"\xff\xfe", b"[1,2]"):
        state, findings = run(BURST, [doc("a", 0), doc("b", 1), doc("c", 2)], junk)
        assert len(findings) == 1 and decode_state(state) is not None
        assert expire(junk, T0) is None
    first_seen_state, _ = step(METHOD, None, doc("a"))
    state, findings = run(BURST, [doc("a", 0), doc("b", 1), doc("c", 2)], first_seen_state)
    assert len(findings) == 1 and isinstance(decode_state(state), BurstState)


# --- first seen ----------------------------------------------------------------------------


def test_first_use_of_a_method_fires_once_per_method() -> None:
    _, findings = run(
        METHOD,
        [
            doc("a", 0, method="browser", action="update"),
            doc("b", 1, method="browser", action="update"),
            doc("c", 2, method="api_token", action="update"),
            doc("d", 3, method="api_token", action="update"),
            doc("e", 4, method="oauth", action="update"),
        ],
    )
    assert [(f.record_ids, f.evidence["new_auth_method"]) for f in findings] == [
        (["a"], "browser"),
        (["c"], "api_token"),
        (["e"], "oauth"),
    ]
    assert findings[2].evidence["known"] == "api_token, browser"
    assert (
        findings[2].summary
        == "New method: key PK1 (api_key PK1), new auth_method oauth (known: api_token, browser)"
    )


def test_new_address_is_learned_first_then_fires_on_change_only() -> None:
    docs = [
        doc("a", 0, ip="198.51.100.7", action="update"),
        doc("b", 5, ip="198.51.100.7", action="update"),
        doc("c", 9, ip="203.0.113.9", action="update"),
        doc("d", 12, ip="203.0.113.9", action="update"),
        doc("e", 13, ip=None, action="update"),
    ]
    _, findings = run(ADDRESS, docs)
    assert [f.record_ids for f in findings] == [["c"]]
    assert findings[0].evidence["new_src_ip"] == "203.0.113.9"
    assert findings[0].evidence["known"] == "198.51.100.7"
    assert state_key(ADDRESS, docs[-1]) is None  # no address: neither fires nor teaches


def test_a_value_not_seen_within_the_retention_is_new_again() -> None:
    day = 24 * 60
    state, _ = run(ADDRESS, [doc("a", 0, ip="198.51.100.7"), doc("b", 1, ip="203.0.113.9")])
    kept, none = run(ADDRESS, [doc("c", 29 * day, ip="198.51.100.7")], state)
    assert none == []
    _, again = run(ADDRESS, [doc("d", 61 * day, ip="203.0.113.9")], kept)
    # 203.0.113.9 was last seen on day 0 and 198.51.100.7 on day 29: both forgotten by day 61
    assert again == []  # nothing known any more: the first address is learned again
    _, fired = run(ADDRESS, [doc("e", 31 * day, ip="203.0.113.9")], kept)
    assert [f.record_ids for f in fired] == [["e"]]


def test_a_known_value_seen_again_soon_writes_no_new_state() -> None:
    state, _ = run(ADDRESS, [doc("a", 0, ip="198.51.100.7"), doc("b", 1, ip="203.0.113.9")])
    same, findings = step(ADDRESS, state, doc("c", 6 * 60, ip="198.51.100.7"))
    assert same is state and findings == []  # within 30d / 100 = 7.2 hours
    later, findings = step(ADDRESS, state, doc("d", 8 * 60, ip="198.51.100.7"))
    assert later != state and findings == []
    decoded = decode_state(later)
    assert isinstance(decoded, FirstSeenState)
    assert decoded.values["198.51.100.7"] - decoded.values["203.0.113.9"] == 479 * 60_000_000


def test_first_seen_remembers_at_most_max_values() -> None:
    state, _ = run(
        ADDRESS,
        [doc(f"r{i}", i, ip=f"198.51.100.{i}", action="update") for i in range(1, 6)],
    )
    decoded = decode_state(state)
    assert isinstance(decoded, FirstSeenState)
    assert sorted(decoded.values) == ["198.51.100.3", "198.51.100.4", "198.51.100.5"]
    _, findings = run(ADDRESS, [doc("back", 6, ip="198.51.100.1")], state)
    assert len(findings) == 1  # evicted, so new again


def test_first_seen_replay_fires_nothing_and_crash_replay_gives_the_same_id() -> None:
    before, _ = run(ADDRESS, [doc("a", 0, ip="198.51.100.7")])
    after, first = run(ADDRESS, [doc("b", 1, ip="203.0.113.9")], before)
    assert len(first) == 1
    _, replayed = run(
        ADDRESS, [doc("a", 0, ip="198.51.100.7"), doc("b", 1, ip="203.0.113.9")], after
    )
    assert replayed == []
    _, repeat = run(ADDRESS, [doc("b", 1, ip="203.0.113.9")], before)
    assert repeat == first


def test_first_seen_expiry_drops_old_values_and_then_the_key() -> None:
    day = timedelta(days=1)
    state, _ = run(
        ADDRESS, [doc("a", 0, ip="198.51.100.7"), doc("b", 10 * 24 * 60, ip="203.0.113.9")]
    )
    assert state is not None
    assert expire(state, T0 + 20 * day) is state
    partial = expire(state, T0 + 35 * day)
    decoded = decode_state(partial)
    assert isinstance(decoded, FirstSeenState) and list(decoded.values) == ["203.0.113.9"]
    assert expire(state, T0 + 41 * day) is None


# --- properties: replays and duplicates ----------------------------------------------------

RECORDS = st.lists(
    st.tuples(
        st.sampled_from(["PK1", "PK2"]),
        st.integers(min_value=0, max_value=90),
        st.sampled_from(["delete", "update"]),
        st.sampled_from(["api_token", "oauth", "browser"]),
        st.sampled_from(["198.51.100.1", "198.51.100.2", "203.0.113.3", None]),
    ),
    max_size=40,
)
#: unbounded first sightings (no max_values): a value seen is never forgotten, so a
#: redelivered record can never look new again
DETECTOR_RULES = parse_rules(
    toml_document(builtin=False, rules=[BURST3, {**NEW_IP, "learn_first": True}, NEW_METHOD])
)


def as_docs(spec: list[tuple[str, int, str, str, str | None]]) -> list[OutputDocument]:
    return [
        doc(f"r{i}", minute, actor=actor, action=action, method=method, ip=ip)
        for i, (actor, minute, action, method, ip) in enumerate(spec)
    ]


def evaluate_all(docs: list[OutputDocument], store: dict[bytes, bytes | None]) -> list[str]:
    detector = Detector(DETECTOR_RULES)
    ids = []
    for item in docs:
        findings, updates = detector.evaluate(item, store.get)
        store.update(updates)
        ids += [f.id for f in findings]
    return ids


@FAST
@given(RECORDS, st.data())
def test_redelivered_records_never_fire_again(spec: list, data: st.DataObject) -> None:
    docs = as_docs(spec)
    clean = evaluate_all(docs, {})
    # every record may come again later in the stream (a repeated batch)
    stream = list(docs)
    for item in docs:
        if data.draw(st.booleans()):
            position = data.draw(st.integers(stream.index(item) + 1, len(stream)))
            stream.insert(position, item)
    assert evaluate_all(stream, {}) == clean


@FAST
@given(RECORDS, st.data())
def test_a_crash_that_loses_state_writes_repeats_only_known_finding_ids(
    spec: list, data: st.DataObject
) -> None:
    docs = as_docs(spec)
    clean = evaluate_all(docs, {})
    lost_from = data.draw(st.integers(0, len(docs)))
    crash_at = data.draw(st.integers(lost_from, len(docs)))
    store: dict[bytes, bytes | None] = {}
    first = evaluate_all(docs[:lost_from], store)
    snapshot = dict(store)  # what reached the changelog
    published = first + evaluate_all(docs[lost_from:crash_at], store)
    resumed = evaluate_all(docs[lost_from:], snapshot)  # the input offset was not committed
    assert first + resumed == clean
    assert set(published) <= set(clean)


@FAST
@given(RECORDS)
def test_findings_are_deterministic_and_each_record_is_in_one_burst_at_most(spec: list) -> None:
    docs = as_docs(spec)
    assert evaluate_all(docs, {}) == evaluate_all(docs, {})
    detector = Detector(DETECTOR_RULES)
    store: dict[bytes, bytes | None] = {}
    counted: list[str] = []
    for item in docs:
        findings, updates = detector.evaluate(item, store.get)
        store.update(updates)
        counted += [rid for f in findings if f.rule_id == "burst3" for rid in f.record_ids]
        assert all(len(f.record_ids) == 3 for f in findings if f.rule_id == "burst3")
    assert len(counted) == len(set(counted))


def test_states_are_plain_json_for_the_changelog() -> None:
    state, _ = run(BURST, [doc("a", 0)])
    assert state is not None and msgspec.json.decode(state)["kind"] == "burst"
    state, _ = step(METHOD, None, doc("a"))
    assert state is not None and msgspec.json.decode(state)["kind"] == "first_seen"


@pytest.mark.parametrize("rule", [BURST, METHOD, ADDRESS], ids=lambda r: r.id)
def test_step_without_state_key_returns_state_untouched(rule: Rule) -> None:
    odd = doc("a", actor=None)
    assert step(rule, b"anything", odd) == (b"anything", [])

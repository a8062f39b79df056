"""Enrichment: golden documents for every example record of PagerDuty's OpenAPI document,
byte-exact ``raw``, and property tests that nothing but ``InvalidRecord`` ever escapes.

Goldens: ``tests/golden/inputs/NAME.json`` is an example record copied from PagerDuty's
OpenAPI document (one per resource type and action, plus every other example, named
``TYPE_ACTION__ID``); ``tests/golden/NAME.json`` is its output document and
``tests/golden/ocsf/NAME.json`` its OCSF event. ``STREAMAPP_UPDATE_GOLDEN=1`` rewrites them.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.core.categories import CATEGORIES, CATEGORY_TABLE, OTHER, categorize
from streamapp.core.enrich import InvalidRecord, decode_document, encode_document, enrich, timestamp
from streamapp.core.errors import StreamappError
from streamapp.core.ocsf import encode_ocsf, to_ocsf
from streamapp.core.output import OutputDocument
from tests.strategies import json_values

GOLDEN = Path(__file__).parent / "golden"
INPUTS = sorted((GOLDEN / "inputs").glob("*.json"))
UPDATE = os.environ.get("STREAMAPP_UPDATE_GOLDEN") == "1"
INGESTED_AT = datetime(2026, 11, 26, 6, 28, 3, 120000, tzinfo=UTC)

MINIMAL = (
    b'{"id":"R1","execution_time":"2020-06-04T15:30:16.272Z","method":{"type":"browser"},'
    b'"root_resource":{"id":"PXASDFE","type":"team_reference"},"action":"create"}'
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(record: bytes, source_name: str = "pagerduty") -> OutputDocument:
    return enrich(record, source_name=source_name, ingested_at=INGESTED_AT)


def outcome(record: bytes) -> OutputDocument | None:
    """A document, or None for InvalidRecord; anything else propagates and fails the test."""
    try:
        doc = run(record)
    except InvalidRecord as exc:
        assert "\n" not in exc.reason and exc.reason
        return None
    encoded = encode_document(doc)
    json.loads(encoded.decode("utf-8"))  # always valid UTF-8 JSON
    assert bytes(decode_document(encoded).raw) == bytes(record).strip(b" \t\r\n")
    return doc


def pretty(encoded: bytes) -> str:
    # parsed and re-printed in encoding order, so the goldens also pin the field order
    return json.dumps(json.loads(encoded), indent=2, ensure_ascii=False) + "\n"


def record_with(**changes: Any) -> bytes:
    base = json.loads(MINIMAL)
    for key, value in changes.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return json.dumps(base).encode()


# --- goldens ---------------------------------------------------------------------------


def test_there_is_a_golden_for_the_team_creation_example() -> None:
    assert (GOLDEN / "team_create.json").exists()
    doc = json.loads((GOLDEN / "team_create.json").read_text())
    assert doc["id"] == "PDRECORDID1_TEAM_CREATED"
    assert doc["event_name"] == "team.create"


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_example_record_matches_its_golden_document(source: Path) -> None:
    data = source.read_bytes()
    doc = run(data)
    assert bytes(doc.raw) == data.strip(b" \t\r\n")
    for path, text in (
        (GOLDEN / source.name, pretty(encode_document(doc))),
        (GOLDEN / "ocsf" / source.name, pretty(encode_ocsf(to_ocsf(doc)))),
    ):
        if UPDATE:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
        assert path.read_text(encoding="utf-8") == text, f"{path} differs; see module docstring"


EXPECTED_CATEGORIES = {
    "team_create": "teams_and_escalation",
    "team_create__pdrecord_team_created": "teams_and_escalation",
    "team_update": "user_access",  # member removed
    "team_update__pdrecord_user_added_to_team": "user_access",
    "team_update__pdrecord_user_role_on_team": "user_access",
    "team_update__pdrecordid5_users_team_role_updated": "user_access",
    "user_create": "user_access",
    "user_update": "user_access",  # email: the login
    "user_update__pdrecordid4_updated_users_notification_rule": "user_profile",
    "user_update__pd_add_high_urgency_notification": "user_profile",
    "user_update__pd_add_high_urgency_email_contact": "user_profile",
    "user_update__pd_add_low_urgency_email_rule": "user_profile",
    "user_update__pd_add_low_urgency_email_contact": "user_profile",
    "user_update__pd_email_contact_for_user": "user_profile",
    "user_update__pd_add_email_contact_to_user": "user_profile",
    "service_create": "service_changes",
    "schedule_create": "teams_and_escalation",
    "schedule_update": "teams_and_escalation",
    "escalation_policy_create": "teams_and_escalation",
    "escalation_policy_update": "teams_and_escalation",
    "ip_allow_list_create": "account_management",
    "ip_allow_list_update": "account_management",
    "ip_allow_list_delete": "account_management",
}


def test_every_example_has_an_expected_documented_category() -> None:
    assert {p.stem for p in INPUTS} == set(EXPECTED_CATEGORIES)
    for source in INPUTS:
        doc = run(source.read_bytes())
        assert doc.category == EXPECTED_CATEGORIES[source.stem], source.stem
        assert doc.category in CATEGORIES and doc.category != OTHER


def test_category_table_documents_every_category_once() -> None:
    names = [row[0] for row in CATEGORY_TABLE]
    assert len(names) == len(set(names)) == len(CATEGORIES)
    assert all(len(row) == 3 and all(row) for row in CATEGORY_TABLE)


@pytest.mark.parametrize(
    ("resource_type", "action", "fields", "expected"),
    [
        ("widget_reference", "create", [], "other"),
        ("", "", [], "other"),
        ("user", "update", ["role"], "user_access"),
        ("user_reference", "update", ["time_zone"], "user_profile"),
        ("user", "delete", [], "user_access"),
        ("team", "update", ["name"], "teams_and_escalation"),
        ("team", "create", ["default_role"], "teams_and_escalation"),
        ("service", "update", ["role"], "service_changes"),
        ("webhook_subscription", "create", [], "integrations"),
        ("incident", "frobnicate", [], "incident_management"),
    ],
)
def test_categorize(resource_type: str, action: str, fields: list[str], expected: str) -> None:
    assert categorize(resource_type, action, fields) == expected


@given(st.text(), st.text(), st.lists(st.text()))
@settings(max_examples=100, deadline=None)
def test_categorize_never_fails(resource_type: str, action: str, fields: list[str]) -> None:
    assert categorize(resource_type, action, fields) in CATEGORIES


# --- the document ----------------------------------------------------------------------


def test_minimal_record_gives_a_complete_document() -> None:
    doc = run(MINIMAL, source_name="prod-us")
    assert (doc.id, doc.source_type, doc.source_name) == ("R1", "pagerduty", "prod-us")
    assert (doc.event_name, doc.action, doc.resource_type) == ("team.create", "create", "team")
    assert doc.event_time == "2020-06-04T15:30:16.272Z"
    assert doc.ingested_at == "2026-11-26T06:28:03.120Z"
    assert doc.actor is None and doc.actors == []
    assert doc.resource == doc.root_resource
    assert doc.warnings == []


def test_field_changes_keep_json_values_and_absence() -> None:
    details = {
        "resource": {"id": "P1", "type": "user_reference"},
        "fields": [
            {"name": "a", "value": "new"},
            {"name": "b", "value": 2.50, "before_value": {"x": [1, None]}},
            {"name": "c", "before_value": None},
            {"name": "d", "description": "D"},
        ],
    }
    doc = run(record_with(details=details))
    encoded = json.loads(encode_document(doc))["changes"]
    assert encoded == [
        {"field": "a", "description": None, "after": "new"},
        {"field": "b", "description": None, "before": {"x": [1, None]}, "after": 2.5},
        {"field": "c", "description": None, "before": None},
        {"field": "d", "description": "D"},
    ]


def test_reference_changes_are_flattened_with_their_list_name() -> None:
    source = GOLDEN / "inputs" / "user_update__pdrecordid4_updated_users_notification_rule.json"
    doc = run(source.read_bytes())
    assert [(r.field, r.id, r.type) for r in doc.references_added] == [
        ("contact_method", "P4GTUMK", "sms_contact_method")
    ]
    assert [(r.field, r.id, r.type) for r in doc.references_removed] == [
        ("contact_method", "POE6L88", "push_notification_contact_method")
    ]
    assert doc.resource is not None and doc.resource.type == "assignment_notification_rule"
    assert doc.root_resource.type == "user"


@pytest.mark.parametrize(
    ("execution_time", "event_time"),
    [
        ("2020-06-04T15:30:16.272Z", "2020-06-04T15:30:16.272Z"),
        ("2026-04-20T18:09:47.563218Z", "2026-04-20T18:09:47.563218Z"),
        ("2020-06-04T17:30:16+02:00", "2020-06-04T15:30:16.000Z"),
        ("2020-06-04T15:30:16.272", "2020-06-04T15:30:16.272Z"),  # naive: taken as UTC
        ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00.000Z"),
    ],
)
def test_event_time_is_rfc3339_utc_with_the_records_precision(
    execution_time: str, event_time: str
) -> None:
    assert run(record_with(execution_time=execution_time)).event_time == event_time


def test_timestamp_converts_to_utc() -> None:
    moment = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert timestamp(moment) == "2026-01-01T00:00:00.000Z"


# --- raw is byte-exact -----------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        MINIMAL,
        b'  {"id" : "R1" ,\n\t"execution_time":"2020-06-04T15:30:16.272Z","method":{"type":"x"},'
        b'"root_resource":{"id":"P","type":"team_reference"},"action":"create"}  \n',
        MINIMAL[:-1] + b',"new_field":{"deep":[1,2.0,1E+2,-0.0,"\\u00e9\\ud83d\\ude00"]},'
        b'"note":"caf\xc3\xa9 \\"quoted\\" \\/ \\n","huge_int":123456789012345678901234567890}',
    ],
)
def test_raw_is_the_record_byte_for_byte(record: bytes) -> None:
    value = record.strip(b" \t\r\n")  # whitespace around the value is not part of it
    doc = run(record)
    assert bytes(doc.raw) == value
    encoded = encode_document(doc)
    assert value in encoded
    assert bytes(decode_document(encoded).raw) == value


def test_unicode_values_are_carried_through() -> None:
    doc = run(record_with(action="créer", id="ид-1"))
    assert (doc.action, doc.id, doc.event_name) == ("créer", "ид-1", "team.créer")


def test_huge_fields_are_accepted() -> None:
    big = "x" * 1_000_000
    details = {
        "resource": {"id": "P", "type": "team_reference"},
        "fields": [{"name": "n", "value": big}],
    }
    record = record_with(id=big, details=details, unknown=big)
    doc = run(record)
    assert doc.id == big and bytes(doc.raw) == record
    assert len(encode_document(doc)) > 3_000_000


# --- invalid records -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "named"),
    [
        (record_with(id=...), "`id`"),
        (record_with(execution_time=...), "`execution_time`"),
        (record_with(method=...), "`method`"),
        (record_with(method={}), "`type`"),
        (record_with(root_resource=...), "`root_resource`"),
        (record_with(root_resource={"id": "P"}), "`type`"),
        (record_with(root_resource={"type": "team_reference"}), "`id`"),
        (record_with(action=...), "`action`"),
        (record_with(id=7), "$.id"),
        (record_with(id=""), "$.id"),
        (record_with(execution_time="yesterday"), "$.execution_time"),
        (record_with(execution_time=1591284616), "$.execution_time"),
        (record_with(method={"type": None}), "$.method.type"),
        (record_with(root_resource=["team"]), "$.root_resource"),
        (record_with(action=True), "$.action"),
        (record_with(root_resource={"id": "P", "type": "_reference"}), "root_resource.type"),
        (record_with(execution_time="9999-12-31T23:59:59-23:59"), "execution_time"),
        (record_with(execution_time="0001-01-01T00:00:00+01:00"), "execution_time"),
        (b"[1, 2]", "object"),
        (b"", "JSON"),
        (b"{", "JSON"),
        (b"\xff\xfe", "UTF-8"),
        (MINIMAL[:-1] + b',"x":"\xff"}', "UTF-8"),
        (MINIMAL[:-1] + b',"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    ],
)
def test_invalid_record_names_the_problem_in_one_line(record: bytes, named: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        run(record)
    assert named in caught.value.reason
    assert "\n" not in caught.value.reason
    assert isinstance(caught.value, StreamappError)


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("actors", "nobody"),
        ("actors", [{"id": 5}, "x"]),
        ("execution_context", ["1.2.3.4"]),
        ("details", {"fields": "all"}),
        ("details", {"resource": 1}),
        ("details", {"references": [{"added": []}]}),
        ("details", [[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]),
    ],
)
def test_odd_optional_sections_are_skipped_with_a_warning(section: str, value: Any) -> None:
    doc = run(record_with(**{section: value}))
    assert doc.warnings and all(w.startswith(f"{section}") for w in doc.warnings)
    assert section in bytes(doc.raw).decode()


def test_odd_leaves_become_null() -> None:
    doc = run(
        record_with(
            actors=[{"id": 1, "type": "user_reference", "summary": ["a"]}],
            execution_context={"remote_address": 10, "request_id": {"a": 1}},
            method={"type": "browser", "truncated_token": 1234, "description": False},
        )
    )
    assert doc.actor is not None and (doc.actor.id, doc.actor.type, doc.actor.name) == (
        None,
        "user",
        None,
    )
    assert (doc.src_ip, doc.request_id, doc.truncated_token, doc.auth_description) == (None,) * 4
    assert doc.warnings == []


# --- properties ------------------------------------------------------------------------

REQUIRED = ("id", "execution_time", "method", "root_resource", "action")


@given(st.binary(max_size=2048))
@FAST
def test_arbitrary_bytes_give_a_document_or_invalid_record(data: bytes) -> None:
    outcome(data)


@given(st.sampled_from(INPUTS), st.data())
@FAST
def test_truncated_examples_are_invalid_records(source: Path, data: st.DataObject) -> None:
    record = source.read_bytes().rstrip()
    cut = data.draw(st.integers(min_value=0, max_value=len(record) - 1))
    assert outcome(record[:cut]) is None


@given(st.sampled_from(REQUIRED), json_values)
@FAST
def test_a_required_field_of_any_other_shape_is_an_invalid_record(field: str, value: Any) -> None:
    doc = outcome(record_with(**{field: value}))
    if doc is not None:  # the value happened to be of the right shape
        assert field in ("id", "action") and isinstance(value, str) and value


@given(st.sampled_from(["actors", "execution_context", "details", "self", "new"]), json_values)
@FAST
def test_optional_fields_never_make_a_record_invalid(field: str, value: Any) -> None:
    assert outcome(record_with(**{field: value})) is not None


@given(json_values)
@FAST
def test_arbitrary_json_gives_a_document_or_invalid_record(value: Any) -> None:
    outcome(json.dumps(value).encode())


@given(st.text(), st.text(min_size=1), st.text(min_size=1), st.text())
@FAST
def test_unicode_everywhere_round_trips(
    summary: str, record_id: str, action: str, extra: str
) -> None:
    record = record_with(
        id=record_id,
        action=action,
        root_resource={"id": record_id, "type": "team_reference", "summary": summary},
        details={"resource": {"id": "P"}, "fields": [{"name": extra, "value": extra}]},
    )
    for data in (record, json.dumps(json.loads(record), ensure_ascii=False).encode()):
        doc = outcome(data)
        assert doc is not None
        assert (doc.id, doc.action, doc.root_resource.name) == (record_id, action, summary)
        after = doc.changes[0].after
        assert isinstance(after, msgspec.Raw) and msgspec.json.decode(after) == extra

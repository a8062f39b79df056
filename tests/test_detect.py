"""Detections: the built-in pack on its golden records, findings, the detector, replays,
and the README's rule table.

Goldens (``tests/golden/detections/RULE/CASE.json`` and ``CASE.findings.json``) are
described in that directory's README; ``STREAMAPP_UPDATE_GOLDEN=1`` rewrites the findings.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import example as also_try
from hypothesis import strategies as st

from streamapp.core.detect import (
    RULE_TABLE,
    SEVERITIES,
    Detector,
    Finding,
    ReplayInputError,
    builtin_rules,
    decode_finding,
    encode_finding,
    finding_id,
    finding_key,
    parse_rules,
    read_records,
    render_findings,
    replay,
    rule_table_markdown,
)
from streamapp.core.detect.attack import TECHNIQUES
from streamapp.core.enrich import encode_document, enrich
from tests.helpers import frameworks_imported_by

GOLDEN = Path(__file__).parent / "golden"
DETECTIONS = GOLDEN / "detections"
CASES = sorted(p for p in DETECTIONS.glob("*/*.json") if not p.name.endswith(".findings.json"))
UPDATE = os.environ.get("STREAMAPP_UPDATE_GOLDEN") == "1"
INGESTED_AT = datetime(2026, 11, 26, 6, 28, 3, 120000, tzinfo=UTC)
MINIMAL = (
    b'{"id":"R1","execution_time":"2020-06-04T15:30:16.272Z","method":{"type":"browser"},'
    b'"root_resource":{"id":"PXASDFE","type":"team_reference"},"action":"create"}'
)


def doc_of(record: dict | bytes, source_name: str = "pagerduty"):
    data = record if isinstance(record, bytes) else json.dumps(record).encode()
    return enrich(data, source_name=source_name, ingested_at=INGESTED_AT)


def example(name: str) -> bytes:
    return (GOLDEN / "inputs" / f"{name}.json").read_bytes()


def pretty(findings: list[Finding]) -> str:
    documents = [json.loads(encode_finding(finding)) for finding in findings]
    return json.dumps(documents, indent=2, ensure_ascii=False) + "\n"


# --- the built-in pack on its goldens ----------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_builtin_rule_gives_its_golden_findings(case: Path) -> None:
    rule_id = case.parent.name
    findings = [f for f in replay(case.read_bytes(), origin=case) if f.rule_id == rule_id]
    expected = case.with_name(f"{case.stem}.findings.json")
    if UPDATE:
        expected.write_text(pretty(findings), encoding="utf-8")
    assert expected.read_text(encoding="utf-8") == pretty(findings), f"{expected} differs"
    if case.stem.startswith("miss_"):
        assert findings == [], "a near miss must not fire"
    else:
        assert findings, "a golden case must fire"


def test_every_builtin_rule_has_golden_cases_that_fire_and_near_misses() -> None:
    for rule in builtin_rules().rules:
        cases = [c.stem for c in CASES if c.parent.name == rule.id]
        assert any(not c.startswith("miss_") for c in cases), f"{rule.id}: no firing case"
        assert any(c.startswith("miss_") for c in cases), f"{rule.id}: no near miss"
    assert {c.parent.name for c in CASES} == {rule.id for rule in builtin_rules().rules}


def test_every_golden_findings_file_has_its_records() -> None:
    for expected in DETECTIONS.glob("*/*.findings.json"):
        assert expected.with_name(expected.name.replace(".findings", "")).exists()


def test_deletion_burst_golden_fires_once_with_the_first_ten_of_twelve() -> None:
    case = DETECTIONS / "deletion_burst" / "twelve_deletions_one_burst.json"
    records = json.loads(case.read_text())
    findings = [f for f in replay(case.read_bytes()) if f.rule_id == "deletion_burst"]
    assert len(findings) == 1
    oldest_first = [r["id"] for r in reversed(records)]
    assert findings[0].record_ids == oldest_first[:10]


def test_builtin_pack_is_well_formed() -> None:
    rules = builtin_rules().rules
    assert len({rule.id for rule in rules}) == len(rules)
    for rule in rules:
        assert rule.description and rule.limits, rule.id
        assert " | " not in rule.description and "|" not in rule.title, rule.id
        assert rule.attack is not None and rule.attack.id in TECHNIQUES, rule.id
        assert rule.summary, rule.id


def test_rules_that_pagerduty_cannot_show_today_say_so() -> None:
    pack = builtin_rules()
    for rule_id in ("account_auth_settings_changed", "api_credential_created"):
        rule = pack.get(rule_id)
        assert rule is not None and "not" in rule.limits
        assert "users, teams, schedules" in rule.limits or "not documented" in rule.limits


def test_attack_techniques_are_named_as_attack_names_them() -> None:
    assert TECHNIQUES["T1098.003"] == "Account Manipulation: Additional Cloud Roles"
    assert TECHNIQUES["T1098.001"] == "Account Manipulation: Additional Cloud Credentials"
    assert TECHNIQUES["T1136.003"] == "Create Account: Cloud Account"
    assert TECHNIQUES["T1531"] == "Account Access Removal"
    assert TECHNIQUES["T1078.004"] == "Valid Accounts: Cloud Accounts"
    for technique_id, name in TECHNIQUES.items():
        parent = technique_id.split(".")[0]
        if "." in technique_id:
            assert name.startswith(TECHNIQUES[parent] + ": ")


# --- findings ----------------------------------------------------------------------------


def test_finding_document_round_trips_and_omits_attack_when_none_fits() -> None:
    [finding] = [f for f in replay(example("user_create")) if f.rule_id == "user_created"]
    data = encode_finding(finding)
    assert decode_finding(data) == finding
    document = json.loads(data)
    assert document["attack"] == {
        "id": "T1136.003",
        "name": "Create Account: Cloud Account",
        "url": "https://attack.mitre.org/techniques/T1136/003/",
    }
    assert list(document)[:4] == ["id", "rule_id", "title", "severity"]
    assert finding_key(finding) == finding.id.encode()
    bare = msgspec.structs.replace(finding, attack=msgspec.UNSET)
    assert "attack" not in json.loads(encode_finding(bare))


def test_finding_schema_marks_what_every_finding_has() -> None:
    schema = msgspec.json.schema(Finding)
    definition = schema["$defs"]["Finding"]
    assert "attack" not in definition["required"]
    for name in ("id", "rule_id", "title", "severity", "summary", "record_ids", "at"):
        assert name in definition["required"]
    assert set(definition["properties"]["severity"]["enum"]) == set(SEVERITIES)


def test_every_golden_finding_validates_against_the_generated_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = msgspec.json.schema(Finding)
    for expected in DETECTIONS.glob("*/*.findings.json"):
        for document in json.loads(expected.read_text()):
            jsonschema.validate(document, schema)


def test_finding_id_depends_on_rule_source_key_and_record_set_only() -> None:
    base = finding_id("r", "prod", b"prod|r|PX", ["b", "a"])
    assert base == finding_id("r", "prod", b"prod|r|PX", ["a", "b", "a"])
    assert len(base) == 32 and int(base, 16) >= 0
    assert base != finding_id("r2", "prod", b"prod|r|PX", ["a", "b"])
    assert base != finding_id("r", "prod-eu", b"prod|r|PX", ["a", "b"])
    assert base != finding_id("r", "prod", b"prod|r|PY", ["a", "b"])
    assert base != finding_id("r", "prod", b"prod|r|PX", ["a"])


def test_same_record_gives_the_same_finding_id_whenever_and_wherever_it_is_enriched() -> None:
    record = example("ip_allow_list_delete")
    first = Detector().stateless(doc_of(record))
    later = Detector().stateless(
        enrich(record, source_name="pagerduty", ingested_at=INGESTED_AT + timedelta(days=3))
    )
    assert [f.id for f in first] == [f.id for f in later]
    assert first == later


def test_summary_is_one_line_even_when_names_carry_newlines_and_controls() -> None:
    record = json.loads(example("user_create"))
    record["actors"][0]["summary"] = "Evil\nName\x1b[31m"
    record["root_resource"]["summary"] = "x" * 5000
    record["details"]["resource"]["summary"] = "line1\r\nline2"
    [finding] = [f for f in Detector().stateless(doc_of(record)) if f.rule_id == "user_created"]
    assert "\n" not in finding.summary and "\r" not in finding.summary
    assert "\x1b" not in finding.summary
    assert len(finding.summary) <= 600
    assert "Evil Name" in finding.summary


def test_summary_says_what_changed_who_did_it_and_from_where() -> None:
    [finding] = Detector().stateless(
        doc_of(example("team_update__pdrecordid5_users_team_role_updated"))
    )
    assert finding.rule_id == "team_role_raised_to_manager"
    assert "team_role: observer → manager" in finding.summary
    assert "John Snow (user PDUSER)" in finding.summary
    assert "an unnamed actor" in finding.summary  # PagerDuty named no actor
    assert "api_token …2adm" in finding.summary
    assert "201.19.20.19" in finding.summary
    assert finding.evidence["change"] == "team_role: observer → manager"
    assert [r.id for r in finding.resources] == ["PDUSER", "PRY9M8B"]


# --- the detector --------------------------------------------------------------------------


def test_evaluate_returns_findings_and_only_the_states_that_changed() -> None:
    detector = Detector()
    store: dict[bytes, bytes | None] = {}
    doc = doc_of(example("service_create"))  # a user acting through an API token
    findings, updates = detector.evaluate(doc, store.get)
    assert [f.rule_id for f in findings] == ["new_auth_method_for_actor"]
    assert set(updates) == {
        b"pagerduty|new_auth_method_for_actor|PDUSER",
        b"pagerduty|new_source_ip_for_actor|PDUSER",
    }
    store.update(updates)
    again, updates = detector.evaluate(doc, store.get)
    assert again == [] and updates == {}


def test_keyed_and_step_split_the_work_for_a_partitioned_table() -> None:
    detector = Detector()
    doc = doc_of(example("service_create"))
    keyed = detector.keyed(doc)
    assert [(rule.id, key) for rule, key in keyed] == [
        ("new_auth_method_for_actor", b"pagerduty|new_auth_method_for_actor|PDUSER"),
        ("new_source_ip_for_actor", b"pagerduty|new_source_ip_for_actor|PDUSER"),
    ]
    state, findings = detector.step("new_auth_method_for_actor", None, doc)
    assert state is not None and [f.rule_id for f in findings] == ["new_auth_method_for_actor"]
    assert detector.step("no_such_rule", b"x", doc) == (b"x", [])
    assert detector.stateless(doc) == []


def test_disabled_rule_neither_fires_nor_keeps_state() -> None:
    rules = parse_rules(
        """
        [overrides."*".new_source_ip_for_actor]
        enabled = false
        [overrides."prod-us".new_auth_method_for_actor]
        enabled = false
        """
    )
    detector = Detector(rules)
    us = doc_of(example("service_create"), source_name="prod-us")
    eu = doc_of(example("service_create"), source_name="prod-eu")
    assert detector.keyed(us) == []
    assert [rule.id for rule, _ in detector.keyed(eu)] == ["new_auth_method_for_actor"]
    assert detector.rule("prod-us", "new_auth_method_for_actor") is None
    empty: dict[bytes, bytes | None] = {}
    findings, _ = detector.evaluate(us, empty.get)
    assert findings == []


def test_severity_override_changes_the_finding_but_not_its_id() -> None:
    rules = parse_rules('[overrides."prod-us".user_created]\nseverity = "critical"\n')
    record = example("user_create")
    [tuned] = Detector(rules).stateless(doc_of(record, "prod-us"))
    [plain] = Detector().stateless(doc_of(record, "prod-us"))
    assert tuned.severity == "critical" and plain.severity == "low"
    assert tuned.id == plain.id


def test_custom_rule_in_a_file_fires_alongside_the_builtin_pack(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        """
        [[rules]]
        id = "service_created_by_token"
        title = "Service created through an API token"
        severity = "info"
        description = "A service created with an API token."
        summary = "{actor} created {resource} with {method}"
        [[rules.match]]
        resource_type = "service_reference"
        action = "create"
        auth_method = "api_token"
        """
    )
    from streamapp.core.detect import load_rules

    detector = Detector(load_rules(path))
    findings = detector.stateless(doc_of(example("service_create")))
    [finding] = [f for f in findings if f.rule_id == "service_created_by_token"]
    assert finding.summary == (
        "John Snow (user PDUSER) created Documentation Hub (service PD_SERVICE_ID) "
        "with api_token …3usr"
    )
    assert isinstance(finding.attack, msgspec.UnsetType)
    assert "attack" not in json.loads(encode_finding(finding))


def test_builtin_false_replaces_the_pack() -> None:
    rules = parse_rules(
        """
        builtin = false
        [[rules]]
        id = "anything_deleted"
        title = "Deleted"
        severity = "info"
        description = "Anything deleted."
        [[rules.match]]
        action = "delete"
        """
    )
    assert [rule.id for rule in rules.rules] == ["anything_deleted"]
    findings = Detector(rules).stateless(doc_of(example("ip_allow_list_delete")))
    assert [f.rule_id for f in findings] == ["anything_deleted"]
    assert "Deleted:" in findings[0].summary  # the default summary starts with the title


# --- replay: `rules test FILE` --------------------------------------------------------------


def test_replay_reads_json_lines_arrays_single_objects_pages_and_output_documents() -> None:
    records = [json.loads(example(n)) for n in ("user_create", "ip_allow_list_delete")]
    lines = b"\n".join(json.dumps(r).encode() for r in records) + b"\n\n"
    array = json.dumps(records, indent=2).encode()
    page = json.dumps({"records": records, "limit": 100, "next_cursor": None}).encode()
    documents = b"\n".join(encode_document(doc_of(r)) for r in records)
    expected = replay(lines)
    assert [f.rule_id for f in expected] == [
        "user_created",
        "ip_allow_list_removed_or_widened",  # one-record rules before stateful ones
        "new_api_credential_seen",
    ]
    for data in (array, page, documents):
        assert replay(data) == expected
    assert [f.rule_id for f in replay(example("user_create"))] == ["user_created"]
    assert replay(b"") == [] and replay(b"  \n") == []


def test_replay_runs_records_in_execution_order_whatever_the_file_order() -> None:
    case = DETECTIONS / "new_source_ip_for_actor" / "new_address.json"
    records = json.loads(case.read_text())
    forwards = replay(json.dumps(records).encode())
    backwards = replay(json.dumps(records[::-1]).encode())
    assert forwards == backwards
    assert [f.rule_id for f in forwards] == ["new_source_ip_for_actor"]


def test_replay_names_source_of_records_it_enriches() -> None:
    [finding] = replay(example("user_create"), source_name="prod-eu")
    assert finding.source_name == "prod-eu"
    [document] = read_records(
        example("user_create"), source_name="prod-eu", ingested_at=INGESTED_AT
    )
    assert document.source_name == "prod-eu"
    assert document.ingested_at == "2026-11-26T06:28:03.120Z"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (MINIMAL + b'\n\n{"id": ', "records.jsonl: line 3: not JSON"),
        (b'{"id": "x"}\n', "records.jsonl: line 1: invalid audit record"),
        (b"[1, 2", "records.jsonl: not a JSON array of records"),
        (b'[{"id": "x"}]', "records.jsonl: item 1: invalid audit record"),
        (b'{"records": [1], "limit": 1}', "records.jsonl: records[0]: invalid audit record"),
        (b'{"records": 3}', "records.jsonl: not a page of records"),
    ],
)
def test_replay_refuses_bad_input_with_one_line_naming_file_and_place(
    data: bytes, message: str
) -> None:
    with pytest.raises(ReplayInputError) as caught:
        replay(data, origin="records.jsonl")
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "id",
                            "records",
                            "execution_time",
                            "raw",
                            "event_name",
                            "source_name",
                            "method",
                            "action",
                            "root_resource",
                            "details",
                            "actors",
                        ]
                    ),
                    inner,
                    max_size=6,
                )
            ),
            max_leaves=30,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
@also_try(b'"\x80"')  # a JSON string holding a byte that is not UTF-8
@also_try(b'[{"id": "\xff"}]')
def test_replay_of_any_bytes_gives_findings_or_one_error_line(data: bytes) -> None:
    try:
        replay(data, origin="any.json")
    except ReplayInputError as exc:
        assert str(exc).startswith("any.json: ") and "\n" not in str(exc)


def test_replay_refuses_deep_nesting_with_one_line() -> None:
    for data in (b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        with pytest.raises(ReplayInputError, match="JSON nested too deeply"):
            replay(data, origin="deep.json")


def test_render_findings_reads_as_lines_for_a_person() -> None:
    case = DETECTIONS / "deletion_burst" / "twelve_deletions_one_burst.json"
    findings = [f for f in replay(case.read_bytes()) if f.rule_id == "deletion_burst"]
    lines = render_findings(findings, records=12)
    assert lines[0].startswith("2026-03-10T09:18:35.120Z  HIGH      deletion_burst  T1485")
    assert lines[1].startswith("    Terraform key (api_key P8AC329) deleted 10 objects within 10m")
    assert lines[2].endswith(f"and 5 more; finding id {findings[0].id}")
    assert lines[-1] == "1 finding in 12 records: 1 high"
    assert render_findings([], records=3) == ["no rule fired in 3 records"]
    assert render_findings([]) == ["no rule fired"]
    assert all("\n" not in line for line in lines)


# --- the README table ----------------------------------------------------------------------


def test_rule_table_is_the_builtin_pack() -> None:
    assert [row[0] for row in RULE_TABLE] == [rule.id for rule in builtin_rules().rules]
    row = dict((r[0], r) for r in RULE_TABLE)["user_granted_admin_role"]
    assert row == (
        "user_granted_admin_role",
        "User granted an admin or owner base role",
        "high",
        "T1098.003 Account Manipulation: Additional Cloud Roles",
        "A user created or changed with the base role admin or owner.",
    )


def test_rule_table_markdown_parses_back_into_the_table() -> None:
    markdown = rule_table_markdown()
    block = markdown.split("<!-- rule-table:start -->")[1].split("<!-- rule-table:end -->")[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("|")][2:]
    cells = [tuple(cell.strip() for cell in row.strip("|").split(" | ")) for row in rows]
    assert cells == [(f"`{r[0]}`", *r[1:]) for r in RULE_TABLE]


# --- purity ----------------------------------------------------------------------------------


def test_detect_package_imports_no_faust_kafka_or_http() -> None:
    assert frameworks_imported_by("streamapp.core.detect") == []

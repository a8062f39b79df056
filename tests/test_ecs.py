"""ECS rendering: every document uses only ECS fields, each with its ECS type and allowed
values, and matches its golden file.

``tests/reference/ecs_flat.yml`` is ECS's own field list (trimmed to the field sets we
emit, see its header); ``pagerduty.*`` is our custom namespace and is not checked against
it. ``tests/golden/ecs/NAME.json`` is the ECS event of ``tests/golden/inputs/NAME.json``;
``STREAMAPP_UPDATE_GOLDEN=1`` rewrites them, as for the other goldens (test_enrich.py).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from streamapp.core.ecs import ECS_VERSION, EcsDocument, encode_ecs, to_ecs
from streamapp.core.enrich import enrich
from streamapp.core.geoip import GeoPoint, SourceAs, SourceGeo
from streamapp.core.output import OutputDocument

TESTS = Path(__file__).parent
GOLDEN = TESTS / "golden"
INPUTS = sorted((GOLDEN / "inputs").glob("*.json"))
REFERENCE = TESTS / "reference" / "ecs_flat.yml"
UPDATE = os.environ.get("STREAMAPP_UPDATE_GOLDEN") == "1"
INGESTED_AT = datetime(2026, 11, 26, 6, 28, 3, 120000, tzinfo=UTC)
#: our custom namespace: ECS leaves it to us
CUSTOM = "pagerduty"

GEO = SourceGeo(
    country_iso_code="BR",
    country_name="Brazil",
    city_name="São Paulo",
    location=GeoPoint(lat=-23.5475, lon=-46.6361),
)
ASN = SourceAs(number=28573, organization="Claro NXT Telecomunicacoes Ltda")


def run(record: bytes) -> OutputDocument:
    return enrich(record, source_name="pagerduty", ingested_at=INGESTED_AT)


def rendered(doc: OutputDocument, **kwargs: Any) -> dict[str, Any]:
    value = json.loads(encode_ecs(to_ecs(doc, **kwargs)))
    assert isinstance(value, dict)
    return value


def record(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "id": "R1",
        "execution_time": "2020-06-04T15:30:16.272Z",
        "method": {"type": "browser"},
        "root_resource": {"id": "PXASDFE", "type": "team_reference", "summary": "DevOps"},
        "action": "create",
    }
    base.update(fields)
    return json.dumps(base).encode()


def pretty(encoded: bytes) -> str:
    return json.dumps(json.loads(encoded), indent=2, ensure_ascii=False) + "\n"


# --- the ECS definitions -------------------------------------------------------------------


@cache
def fields() -> dict[str, dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with REFERENCE.open(encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=loader)
    assert isinstance(loaded, dict)
    return loaded


def reference_version() -> str:
    header = REFERENCE.read_text(encoding="utf-8").split("\n", 1)[0]
    match = re.match(r"# Elastic Common Schema \(ECS\) (\d+\.\d+\.\d+):", header)
    assert match, f"{REFERENCE} must name its ECS version on its first line"
    return match.group(1)


def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str) or "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_geo_point(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"lat", "lon"}
        and _is_number(value["lat"])
        and _is_number(value["lon"])
        and -90 <= value["lat"] <= 90
        and -180 <= value["lon"] <= 180
    )


#: ECS type → the JSON values Elasticsearch accepts for it (as we emit them)
TYPE_CHECKS = {
    "keyword": lambda v: isinstance(v, str),
    "constant_keyword": lambda v: isinstance(v, str),
    "wildcard": lambda v: isinstance(v, str),
    "match_only_text": lambda v: isinstance(v, str),
    "date": _is_date,
    "ip": _is_ip,
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
    "float": _is_number,
    "scaled_float": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "geo_point": _is_geo_point,
    "object": lambda v: isinstance(v, dict),
}


def ecs_problems(document: dict[str, Any]) -> list[str]:
    """What in an ECS document is not ECS: unknown fields, wrong types, values outside the
    allowed ones, arrays where ECS wants one value, beta fields, nulls and empty values."""
    problems: list[str] = []

    def check(path: str, value: Any) -> None:
        definition = fields()[path]
        if "beta" in definition:
            problems.append(f"{path}: a beta field")
        if isinstance(value, list):
            if "array" not in definition.get("normalize", []):
                problems.append(f"{path}: an array, but ECS defines one value")
            if not value:
                problems.append(f"{path}: an empty array")
        check_type = TYPE_CHECKS.get(definition["type"])
        allowed = {a["name"] for a in definition.get("allowed_values", [])}
        for item in value if isinstance(value, list) else [value]:
            if check_type is None:
                problems.append(f"{path}: no check for ECS type {definition['type']}")
            elif not check_type(item):
                problems.append(f"{path}: {item!r} is not an ECS {definition['type']}")
            if allowed and item not in allowed:
                problems.append(f"{path}: {item!r} is not an allowed value")

    def walk(path: str, value: Any) -> None:
        custom = path == CUSTOM or path.startswith(CUSTOM + ".")
        # an empty string is data in PagerDuty's terms (a field set to ""), not in ECS's
        if value is None or value == {} or (value == "" and not custom):
            problems.append(f"{path}: {value!r} (absent values are left out)")
        elif path in fields():
            check(path, value)
        elif custom:
            if isinstance(value, dict):
                for key, item in value.items():
                    walk(f"{path}.{key}", item)
            elif isinstance(value, list):
                for item in value:
                    walk(path, item)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{path}.{key}" if path else key, item)
        else:
            problems.append(f"{path}: not an ECS field")

    walk("", document)
    return problems


def categorisation_problems(event: dict[str, Any]) -> list[str]:
    """ECS lists, for each event.category, the event.type values expected with it: each
    category needs one of its types, and each type must be expected by some category."""
    expected = {
        a["name"]: set(a.get("expected_event_types") or [])
        for a in fields()["event.category"]["allowed_values"]
    }
    categories, types = event["category"], set(event["type"])
    problems = [
        f"category {c!r} without any of {sorted(expected[c])}"
        for c in categories
        if not expected[c] & types
    ]
    for kind in types:
        if not any(kind in expected[c] for c in categories):
            problems.append(f"type {kind!r} is expected by none of {categories}")
    return problems


# --- the reference file --------------------------------------------------------------------


def test_reference_file_is_the_ecs_version_we_declare() -> None:
    assert reference_version() == ECS_VERSION
    for name in ("@timestamp", "ecs.version", "event.kind", "event.category", "event.type"):
        assert name in fields()
    assert {a["name"] for a in fields()["event.outcome"]["allowed_values"]} == {
        "success",
        "failure",
        "unknown",
    }


def test_the_checker_catches_what_is_not_ecs() -> None:
    bad = {
        "@timestamp": "yesterday",
        "event": {"kind": "happening", "id": ["a", "b"], "severity": True},
        "source": {"ip": "201.19.20.19:443", "geo": {"location": {"lat": 91, "lon": 0}}},
        "user": {"nickname": "x", "target": None},
        "pagerduty": {"anything": {"goes": [1, "x"]}},
    }
    problems = "\n".join(ecs_problems(bad))
    for expected in (
        "@timestamp: 'yesterday' is not an ECS date",
        "event.kind: 'happening' is not an allowed value",
        "event.id: an array",
        "event.severity: True is not an ECS long",
        "source.ip: '201.19.20.19:443' is not an ECS ip",
        "source.geo.location: {'lat': 91, 'lon': 0} is not an ECS geo_point",
        "user.nickname: not an ECS field",
        "user.target: None",
    ):
        assert expected in problems
    assert "pagerduty" not in problems


# --- every golden record -------------------------------------------------------------------


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_ecs_document_uses_only_ecs_fields_with_their_types_and_values(source: Path) -> None:
    data = source.read_bytes()
    doc = run(data)
    ecs = rendered(doc)
    assert ecs_problems(ecs) == []
    assert categorisation_problems(ecs["event"]) == []
    assert ecs["event"]["id"] == json.loads(data)["id"]
    assert ecs["@timestamp"] == doc.event_time
    assert ecs["ecs"]["version"] == ECS_VERSION
    assert ecs["event"]["original"] == data.decode("utf-8").strip()
    assert ecs["event"]["kind"] == "event" and ecs["event"]["outcome"] == "success"


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_ecs_document_matches_its_golden(source: Path) -> None:
    encoded = encode_ecs(to_ecs(run(source.read_bytes())))
    text = pretty(encoded)
    path = GOLDEN / "ecs" / source.name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    actual = json.loads(text)
    # event.ingested belongs to Elasticsearch (its ingest pipeline); we never send it
    assert "ingested" not in actual["event"]
    expected["event"].pop("ingested", None)
    assert actual == expected, f"{path} differs; see module docstring"
    assert path.read_text(encoding="utf-8") == text, f"{path}: field order differs"


def test_every_golden_input_has_an_ecs_golden_and_no_other() -> None:
    assert {p.name for p in (GOLDEN / "ecs").glob("*.json")} == {p.name for p in INPUTS}


@pytest.mark.parametrize("source", INPUTS[:3], ids=lambda p: p.stem)
def test_ecs_document_decodes_back_into_the_struct(source: Path) -> None:
    event = to_ecs(run(source.read_bytes()))
    assert msgspec.json.decode(encode_ecs(event), type=EcsDocument) == event


# --- categorisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "action", "category", "types"),
    [
        ("user", "create", ["iam"], ["user", "creation"]),
        ("user", "delete", ["iam"], ["user", "deletion"]),
        ("team", "create", ["iam"], ["group", "creation"]),
        ("team", "delete", ["iam"], ["group", "deletion"]),
        ("api_key", "create", ["iam", "configuration"], ["admin", "creation"]),
        ("ip_allow_list", "update", ["iam", "configuration"], ["admin", "change"]),
        ("sso_settings", "update", ["iam", "configuration"], ["admin", "change"]),
        ("schedule", "update", ["configuration"], ["change"]),
        ("service", "delete", ["configuration"], ["deletion"]),
        ("webhook_subscription", "create", ["configuration"], ["creation"]),
        ("service", "enable", ["configuration"], ["change"]),
        ("something_new", "create", ["configuration"], ["creation"]),
    ],
)
def test_category_and_type_follow_the_resource_and_action(
    resource_type: str, action: str, category: list[str], types: list[str]
) -> None:
    root = {"id": "P1", "type": f"{resource_type}_reference", "summary": "one"}
    ecs = rendered(run(record(root_resource=root, action=action)))
    assert (ecs["event"]["category"], ecs["event"]["type"]) == (category, types)
    assert ecs["event"]["action"] == f"{resource_type}.{action}"
    assert ecs_problems(ecs) == []
    assert categorisation_problems(ecs["event"]) == []


# --- users, groups, changes ----------------------------------------------------------------


def test_team_member_removed_is_the_target_user_with_the_team_as_its_group() -> None:
    ecs = rendered(run((GOLDEN / "inputs" / "team_update.json").read_bytes()))
    team = {"id": "PRY9M8B", "name": "DevOps"}
    assert ecs["group"] == team
    assert ecs["user"] == {"target": {"id": "PRY9M8B", "name": "John Doe", "group": team}}
    assert ecs["event"]["type"] == ["group", "user", "change"]
    assert "John Doe" in ecs["related"]["user"]


def test_team_with_several_members_changed_names_no_single_target() -> None:
    members = [{"id": f"PU{n}", "type": "user_reference", "summary": f"User {n}"} for n in (1, 2)]
    details = {"references": [{"name": "members", "added": members}]}
    ecs = rendered(run(record(action="update", details=details)))
    assert "user" not in ecs
    assert ecs["event"]["type"] == ["group", "change"]
    assert ecs["related"]["user"] == ["PU1", "User 1", "PU2", "User 2"]


def test_user_rename_keeps_the_prior_state_in_target_and_the_new_values_in_changes() -> None:
    ecs = rendered(run((GOLDEN / "inputs" / "user_update.json").read_bytes()))
    assert ecs["user"]["id"] == "PDUSER"
    assert ecs["user"]["target"] == {
        "id": "PDUSER",
        "name": "Bob Doe",
        "email": "bob.doe@domain.com",
    }
    assert ecs["user"]["changes"] == {"name": "Jon Snow", "email": "john.snow@domain.com"}
    assert {"Bob Doe", "Jon Snow", "john.snow@domain.com"} <= set(ecs["related"]["user"])


def test_team_role_change_puts_old_role_in_target_and_new_role_in_changes() -> None:
    name = "team_update__pdrecordid5_users_team_role_updated.json"
    ecs = rendered(run((GOLDEN / "inputs" / name).read_bytes()))
    assert ecs["user"]["target"]["roles"] == ["observer"]
    assert ecs["user"]["changes"] == {"roles": ["manager"]}
    assert ecs["user"]["target"]["group"] == {"id": "PRY9M8B", "name": "DevOps"}


def test_user_created_is_the_target_with_its_new_values_and_no_changes() -> None:
    ecs = rendered(run((GOLDEN / "inputs" / "user_create.json").read_bytes()))
    assert ecs["user"]["target"] == {
        "id": "PD_USER_999",
        "name": "Test User",
        "email": "testuser@testabc123.com",
        "roles": ["user"],
    }
    assert "changes" not in ecs["user"]


def test_change_under_a_user_to_another_object_does_not_rename_the_user() -> None:
    root = {"id": "PU1", "type": "user_reference", "summary": "Ann"}
    details = {
        "resource": {"id": "PC1", "type": "email_contact_method_reference", "summary": "Work"},
        "fields": [{"name": "name", "before_value": "Home", "value": "Work"}],
    }
    ecs = rendered(run(record(root_resource=root, action="update", details=details)))
    assert ecs["user"] == {"target": {"id": "PU1", "name": "Ann"}}
    assert ecs["pagerduty"]["audit"]["resource"]["type"] == "email_contact_method"


def test_api_key_actor_is_the_user_and_its_type_stays_in_pagerduty_audit() -> None:
    ecs = rendered(run((GOLDEN / "inputs" / "ip_allow_list_delete.json").read_bytes()))
    assert ecs["user"] == {"id": "P8AC329"}
    assert ecs["pagerduty"]["audit"]["actors"] == [{"id": "P8AC329", "type": "api_key"}]


def test_change_values_are_text_so_one_field_never_mixes_strings_and_objects() -> None:
    details = {
        "fields": [
            {"name": "text", "value": "DevOps"},
            {"name": "number", "before_value": 1, "value": 2.5},
            {"name": "object", "value": {"a": [1, True]}},
            {"name": "nulled", "before_value": "x", "value": None},
            {"name": "nothing"},
        ]
    }
    ecs = rendered(run(record(details=details)))
    assert ecs["pagerduty"]["audit"]["changes"] == [
        {"field": "text", "after": "DevOps"},
        {"field": "number", "before": "1", "after": "2.5"},
        {"field": "object", "after": '{"a":[1,true]}'},
        {"field": "nulled", "before": "x", "after": "null"},
        {"field": "nothing"},
    ]


# --- source address, geo, AS ---------------------------------------------------------------


def test_geo_and_as_fill_source_geo_and_source_as_with_ecs_types() -> None:
    doc = run((GOLDEN / "inputs" / "team_create.json").read_bytes())
    ecs = rendered(doc, geo=GEO, asn=ASN)
    assert ecs["source"] == {
        "address": "201.19.20.19",
        "ip": "201.19.20.19",
        "geo": {
            "country_iso_code": "BR",
            "country_name": "Brazil",
            "city_name": "São Paulo",
            "location": {"lat": -23.5475, "lon": -46.6361},
        },
        "as": {"number": 28573, "organization": {"name": "Claro NXT Telecomunicacoes Ltda"}},
    }
    assert ecs["related"]["ip"] == ["201.19.20.19"]
    assert ecs_problems(ecs) == []


def test_partial_geo_and_as_give_only_what_is_known() -> None:
    doc = run((GOLDEN / "inputs" / "team_create.json").read_bytes())
    ecs = rendered(doc, geo=SourceGeo(country_iso_code="BR"), asn=SourceAs(number=28573))
    assert ecs["source"]["geo"] == {"country_iso_code": "BR"}
    assert ecs["source"]["as"] == {"number": 28573}
    empty = rendered(doc, geo=SourceGeo(), asn=SourceAs())
    assert empty["source"] == {"address": "201.19.20.19", "ip": "201.19.20.19"}


def test_without_a_source_address_there_is_no_source_and_geo_is_ignored() -> None:
    doc = run((GOLDEN / "inputs" / "user_create.json").read_bytes())
    assert doc.src_ip is None
    ecs = rendered(doc, geo=GEO, asn=ASN)
    assert "source" not in ecs and "ip" not in ecs["related"]


@pytest.mark.parametrize("address", ["201.19.20.19:443", "10.0.0.1, 201.19.20.19", "fe80::1%eth0"])
def test_an_address_that_is_not_a_plain_ip_stays_in_source_address_only(address: str) -> None:
    doc = msgspec.structs.replace(run(record()), src_ip=address)
    ecs = rendered(doc, geo=GEO, asn=ASN)
    assert ecs["source"] == {"address": address}
    assert "related" not in ecs
    assert ecs_problems(ecs) == []


def test_ipv6_address_is_written_in_canonical_form() -> None:
    doc = msgspec.structs.replace(run(record()), src_ip="2A02:CF40:0::1")
    ecs = rendered(doc)
    assert ecs["source"] == {"address": "2A02:CF40:0::1", "ip": "2a02:cf40::1"}
    assert ecs["related"]["ip"] == ["2a02:cf40::1"]


def test_minimal_record_has_no_nulls_and_the_required_ecs_fields() -> None:
    ecs = rendered(run(record()))
    assert ecs_problems(ecs) == []
    assert set(ecs) == {"@timestamp", "ecs", "message", "event", "group", "pagerduty"}
    assert ecs["message"] == "team.create DevOps"

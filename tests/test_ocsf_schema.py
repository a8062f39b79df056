"""Every OCSF event we render validates against the official OCSF schema of the class and
version it claims (``class_uid``, ``metadata.version``, ``metadata.profiles``).

The schemas are built offline by ``ocsf-json-schema`` from the OCSF releases it bundles
(exports of schema.ocsf.io): no ``null`` is admitted, nor any attribute the class does not
define, and required attributes, types, enums and ``at_least_one`` constraints are checked.
Checked on the golden files, on fresh renderings of the golden inputs, of every example
record of PagerDuty's OpenAPI document, of simulated records, and of records whose optional
sections hold anything at all.
"""

from __future__ import annotations

import copy
import functools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema, get_packaged_versions

from streamapp.core.enrich import enrich
from streamapp.core.ocsf import encode_ocsf, to_ocsf
from streamapp.devtools.simulator.data import OPENAPI_PATH, example_records, generate_records
from tests.strategies import json_values

GOLDEN = Path(__file__).parent / "golden"
EVENTS = sorted((GOLDEN / "ocsf").glob("*.json"))
INPUTS = sorted((GOLDEN / "inputs").glob("*.json"))
INGESTED_AT = datetime(2026, 11, 26, 6, 28, 3, 120000, tzinfo=UTC)
#: every class ``streamapp.core.ocsf`` maps to
CLASSES = {3001, 3004, 3005, 3006, 6003}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def _ocsf(version: str) -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))


@functools.cache
def validator(version: str, class_uid: int, profiles: tuple[str, ...]) -> Any:
    ocsf = _ocsf(version)
    class_name = ocsf.lookup_class_name_from_uid(class_uid)
    schema = ocsf.get_class_schema(class_name=class_name, profiles=list(profiles))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(event: dict[str, Any]) -> list[str]:
    """What the official schema of the event's class and version finds wrong with it."""
    metadata = event.get("metadata") or {}
    version = metadata.get("version")
    if version not in get_packaged_versions():
        return [f"metadata.version {version!r} is not an OCSF release"]
    check = validator(version, event["class_uid"], tuple(metadata.get("profiles", ())))
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '(event)'}: {error.message[:300]}"
        for error in check.iter_errors(event)
    ]


def assert_valid(event: dict[str, Any]) -> None:
    found = problems(event)
    assert not found, "\n".join(found)


def rendered(record: bytes) -> dict[str, Any]:
    doc = enrich(record, source_name="pagerduty", ingested_at=INGESTED_AT)
    event: dict[str, Any] = json.loads(encode_ocsf(to_ocsf(doc)))
    return event


def golden(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((GOLDEN / "ocsf" / name).read_text(encoding="utf-8"))
    return event


# --- the golden files and the golden inputs --------------------------------------------


def test_there_is_a_golden_event_of_every_class_for_every_input() -> None:
    assert [p.name for p in EVENTS] == [p.name for p in INPUTS]
    assert {golden(p.name)["class_uid"] for p in EVENTS} == CLASSES


@pytest.mark.parametrize("path", EVENTS, ids=lambda p: p.stem)
def test_golden_event_validates_against_the_ocsf_schema_it_claims(path: Path) -> None:
    assert_valid(golden(path.name))


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_fresh_rendering_of_a_golden_input_validates(source: Path) -> None:
    assert_valid(rendered(source.read_bytes()))


# --- the validation really is strict ---------------------------------------------------


def test_a_null_attribute_does_not_validate() -> None:
    event = golden("team_create.json")
    event["src_endpoint"] = None
    assert problems(event)
    event = golden("team_create.json")
    event["actor"]["app_name"] = None
    assert problems(event)


@pytest.mark.parametrize(
    ("name", "foreign", "donor"),
    [
        ("team_create.json", "group", "team_update.json"),  # API Activity has no group
        ("team_create.json", "user", "user_create.json"),
        ("team_create.json", "entity", "ip_allow_list_create.json"),
        ("user_create.json", "api", "team_create.json"),  # IAM: api only with the cloud profile
        ("user_create.json", "resources", "team_create.json"),
        ("ip_allow_list_create.json", "privileges", "team_update__pdrecord_user_role_on_team.json"),
        ("team_update.json", "entity", "ip_allow_list_create.json"),
    ],
)
def test_an_attribute_of_another_class_does_not_validate(
    name: str, foreign: str, donor: str
) -> None:
    event = golden(name)
    assert foreign not in event
    event[foreign] = golden(donor)[foreign]  # a valid value where it belongs
    assert problems(event)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("team_create.json", ("src_endpoint",)),  # required by API Activity
        ("team_create.json", ("actor",)),
        ("team_create.json", ("api", "operation")),
        ("user_create.json", ("user",)),
        ("team_update__pdrecord_user_role_on_team.json", ("privileges",)),
        ("ip_allow_list_create.json", ("entity",)),
        ("team_update.json", ("group",)),
        ("team_create.json", ("metadata", "version")),
    ],
)
def test_a_missing_required_attribute_does_not_validate(name: str, path: tuple[str, ...]) -> None:
    event = golden(name)
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    assert problems(event)


def test_a_value_outside_its_enum_does_not_validate() -> None:
    event = golden("team_create.json")
    event["activity_id"] = 42
    assert problems(event)


# --- fresh renderings of other records -------------------------------------------------


def test_every_openapi_example_record_renders_a_valid_event() -> None:
    records = example_records(OPENAPI_PATH)
    assert len(records) >= 20
    classes = set()
    for record in records:
        event = rendered(json.dumps(record).encode())
        classes.add(event["class_uid"])
        found = problems(event)
        assert not found, f"{record['id']}: " + "\n".join(found)
    assert classes == CLASSES


def test_simulated_records_render_valid_events() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    records = generate_records(
        400, start=start, end=start + timedelta(days=2), seed=11, odd_fraction=0.5
    )
    for record in records:
        found = problems(rendered(json.dumps(record).encode()))
        assert not found, f"{record['id']}: " + "\n".join(found)


BASE: dict[str, Any] = json.loads(
    (GOLDEN / "inputs" / "team_update__pdrecord_user_role_on_team.json").read_bytes()
)

refs = st.fixed_dictionaries(
    {},
    optional={
        "id": st.none() | st.text(max_size=8) | st.integers(),
        "type": st.sampled_from(
            ["user_reference", "api_key_reference", "app_reference", "team_reference", "x"]
        ),
        "summary": st.none() | st.text(max_size=8),
    },
)


@given(
    section=st.sampled_from(["actors", "execution_context", "details"]),
    value=json_values,
    resource_type=st.sampled_from(["user_reference", "team_reference", "ip_allow_list_reference"]),
    action=st.sampled_from(["create", "update", "delete", "reset_password"]),
)
@FAST
def test_any_optional_section_renders_a_valid_event(
    section: str, value: Any, resource_type: str, action: str
) -> None:
    record = copy.deepcopy(BASE)
    record[section] = value
    record["root_resource"]["type"] = resource_type
    record["action"] = action
    assert_valid(rendered(json.dumps(record).encode()))


@given(
    actors=st.lists(refs, max_size=2) | st.none(),
    resource=refs,
    added=st.lists(refs, max_size=2),
    removed=st.lists(refs, max_size=2),
    remote_address=st.none() | st.ip_addresses().map(str) | st.text(max_size=50),
    request_id=st.none() | st.text(max_size=8),
    resource_type=st.sampled_from(["user_reference", "team_reference", "ip_allow_list_reference"]),
    action=st.sampled_from(["create", "update", "delete", "other"]),
)
@FAST
def test_odd_actors_resources_and_addresses_render_valid_events(
    actors: Any,
    resource: dict[str, Any],
    added: list[dict[str, Any]],
    removed: list[dict[str, Any]],
    remote_address: str | None,
    request_id: str | None,
    resource_type: str,
    action: str,
) -> None:
    record = copy.deepcopy(BASE)
    record.update(actors=actors, action=action)
    record["root_resource"]["type"] = resource_type
    record["execution_context"] = {"remote_address": remote_address, "request_id": request_id}
    record["details"] = {
        "resource": resource,
        "fields": [{"name": "role", "value": "manager"}],
        "references": [{"name": "members", "added": added, "removed": removed}],
    }
    event = rendered(json.dumps(record).encode())
    assert_valid(event)
    if remote_address is not None and "ip" not in event.get("src_endpoint", {}):
        assert event["unmapped"]["src_ip"] == remote_address


@given(st.ip_addresses())
@FAST
def test_every_ip_address_is_the_source_endpoints_ip(address: Any) -> None:
    record = copy.deepcopy(BASE)
    record["execution_context"] = {"remote_address": str(address)}
    event = rendered(json.dumps(record).encode())
    assert event["src_endpoint"] == {"ip": str(address)}
    assert_valid(event)


# --- what stands in for what PagerDuty did not say -------------------------------------

MINIMAL = (
    b'{"id":"R1","execution_time":"2020-06-04T15:30:16.272Z","method":{"type":"api_token"},'
    b'"root_resource":{"id":"PXASDFE","type":"schedule_reference"},"action":"update"}'
)


def test_api_activity_without_actor_or_address_says_unknown_and_validates() -> None:
    event = rendered(MINIMAL)
    assert event["class_uid"] == 6003
    assert event["actor"] == {"user": {"name": "Unknown", "type": "Unknown", "type_id": 0}}
    assert event["src_endpoint"] == {"name": "Unknown"}
    assert event["api"] == {"operation": "schedule.update"}  # no request id: no request
    assert "src_ip" not in event["unmapped"] and "event_name" not in event["unmapped"]
    assert_valid(event)


def test_iam_event_keeps_the_event_name_and_request_id_in_unmapped() -> None:
    event = golden("user_create.json")
    assert event["class_uid"] == 3001
    assert "api" not in event and "resources" not in event
    assert event["unmapped"]["event_name"] == "user.create"
    assert event["unmapped"]["request_id"] == "a68929b2-d0f4-4def-b1d2-6bb744c44e3d"


def test_team_role_names_the_team_as_the_resource_it_gives_access_to() -> None:
    event = golden("team_update__pdrecord_user_role_on_team.json")
    assert (event["class_uid"], event["privileges"]) == (3005, ["manager"])
    assert event["user"]["uid"] == "PD_ADMIN_USER123"
    assert event["resource"] == {"uid": "PD_TEAM123", "name": "my DevOps team", "type": "team"}


def test_a_remote_address_that_is_not_an_ip_goes_to_unmapped() -> None:
    record = copy.deepcopy(BASE)
    record["execution_context"] = {"remote_address": "10.0.0.1, 10.0.0.2"}
    event = rendered(json.dumps(record).encode())
    assert "src_endpoint" not in event  # recommended only, in the IAM classes
    assert event["unmapped"]["src_ip"] == "10.0.0.1, 10.0.0.2"
    assert_valid(event)

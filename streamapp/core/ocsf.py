"""Optional rendering of an output document as an OCSF 1.3.0 event.

One record → one event. The class is chosen from what the record provably says; anything
we cannot place honestly stays an API Activity, the class for "an API changed something":

=====================================  ==========================================  ==========
record                                 OCSF class                                  activity
=====================================  ==========================================  ==========
user create / delete                   3001 Account Change (IAM)                   1 / 6
user or team update of a role field    3005 User Access Management (IAM)           1 Assign
(role, base_role, team_role,           ``user`` = the user changed, ``privileges``   Privileges
members.role) naming a user            = the new role values
team update adding / removing exactly  3006 Group Management (IAM)                 3 Add User
one member (``members``)               ``group`` = the team, ``user`` = the member  4 Remove
category ``account_management``        3004 Entity Management (IAM)                1 / 3 / 4
(ip_allow_list, api keys, …)           ``entity`` = the object                     (99 other)
everything else                        6003 API Activity (Application Activity)    1 / 3 / 4
                                                                                   (99 other)
=====================================  ==========================================  ==========

Activities follow the action: create 1, update 3, delete 4 (Account Change: delete is 6),
any other action 99 "Other" with the action as ``activity_name``. ``type_uid`` is
``class_uid * 100 + activity_id``. Every event has ``severity_id`` 1 (an audit record is
information, not a finding) and ``status_id`` 1 (PagerDuty records only what was done).
What no OCSF attribute holds (the source, category, auth method, field changes,
reference changes, PagerDuty's actor type) goes to ``unmapped``; the record itself to
``raw_data``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from streamapp.core.categories import ACCOUNT_MANAGEMENT
from streamapp.core.output import (
    OcsfActor,
    OcsfApi,
    OcsfDocument,
    OcsfEndpoint,
    OcsfGroup,
    OcsfMetadata,
    OcsfRequest,
    OcsfResource,
    OcsfUnmapped,
    OcsfUser,
    OutputDocument,
    ResourceRef,
)

ACCOUNT_CHANGE: Final = 3001
ENTITY_MANAGEMENT: Final = 3004
USER_ACCESS_MANAGEMENT: Final = 3005
GROUP_MANAGEMENT: Final = 3006
API_ACTIVITY: Final = 6003

_CLASSES: Final[dict[int, tuple[str, int, str]]] = {
    ACCOUNT_CHANGE: ("Account Change", 3, "Identity & Access Management"),
    ENTITY_MANAGEMENT: ("Entity Management", 3, "Identity & Access Management"),
    USER_ACCESS_MANAGEMENT: ("User Access Management", 3, "Identity & Access Management"),
    GROUP_MANAGEMENT: ("Group Management", 3, "Identity & Access Management"),
    API_ACTIVITY: ("API Activity", 6, "Application Activity"),
}

_CRUD: Final[dict[str, tuple[int, str]]] = {
    "create": (1, "Create"),
    "update": (3, "Update"),
    "delete": (4, "Delete"),
}

#: changed fields whose new value is a role a user holds
ROLE_FIELDS: Final = frozenset({"role", "base_role", "team_role", "members.role"})

_ENCODER = msgspec.json.Encoder()
_ANY = msgspec.json.Decoder()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_ocsf(doc: OutputDocument) -> OcsfDocument:
    """The OCSF 1.3.0 event for one output document (see the module docstring)."""
    class_uid, activity_id, activity_name = _crud(API_ACTIVITY, doc.action)
    user: OcsfUser | None = None
    group: OcsfGroup | None = None
    privileges: list[str] | None = None
    entity: OcsfResource | None = None
    target = doc.resource or doc.root_resource
    roles = _role_values(doc)

    if doc.resource_type == "user" and doc.action in ("create", "delete"):
        class_uid = ACCOUNT_CHANGE
        activity_id, activity_name = (1, "Create") if doc.action == "create" else (6, "Delete")
        user = _user(target)
    elif doc.action == "update" and roles and target.type == "user":
        class_uid, activity_id, activity_name = USER_ACCESS_MANAGEMENT, 1, "Assign Privileges"
        user, privileges = _user(target), roles
    elif doc.resource_type == "team" and doc.action == "update" and _one_member_change(doc):
        added = [r for r in doc.references_added if r.field == "members"]
        member = (added or [r for r in doc.references_removed if r.field == "members"])[0]
        class_uid = GROUP_MANAGEMENT
        activity_id, activity_name = (3, "Add User") if added else (4, "Remove User")
        group = OcsfGroup(uid=doc.root_resource.id, name=doc.root_resource.name)
        user = OcsfUser(uid=member.id, name=member.name, type="User", type_id=1)
    elif doc.category == ACCOUNT_MANAGEMENT:
        class_uid, activity_id, activity_name = _crud(ENTITY_MANAGEMENT, doc.action)
        entity = _resource(target)

    class_name, category_uid, category_name = _CLASSES[class_uid]
    first = doc.actor
    resources = [_resource(doc.root_resource)]
    if doc.resource is not None and doc.resource != doc.root_resource:
        resources.append(_resource(doc.resource))
    return OcsfDocument(
        class_uid=class_uid,
        class_name=class_name,
        category_uid=category_uid,
        category_name=category_name,
        activity_id=activity_id,
        activity_name=activity_name,
        type_uid=class_uid * 100 + activity_id,
        type_name=f"{class_name}: {activity_name}",
        time=_epoch_ms(doc.event_time),
        message=_message(doc, target),
        metadata=OcsfMetadata(
            uid=doc.id, original_time=doc.event_time, logged_time=_epoch_ms(doc.ingested_at)
        ),
        actor=_actor(doc),
        src_endpoint=OcsfEndpoint(ip=doc.src_ip) if doc.src_ip else None,
        api=OcsfApi(operation=doc.event_name, request=OcsfRequest(uid=doc.request_id)),
        resources=resources,
        user=user,
        group=group,
        privileges=privileges,
        entity=entity,
        unmapped=OcsfUnmapped(
            source_name=doc.source_name,
            category=doc.category,
            actor_type=first.type if first else None,
            auth_method=doc.auth_method,
            auth_description=doc.auth_description,
            truncated_token=doc.truncated_token,
            changes=doc.changes,
            references_added=doc.references_added,
            references_removed=doc.references_removed,
        ),
        raw_data=bytes(doc.raw).decode("utf-8", "replace"),
    )


def encode_ocsf(event: OcsfDocument) -> bytes:
    return _ENCODER.encode(event)


def _crud(class_uid: int, action: str) -> tuple[int, int, str]:
    activity_id, activity_name = _CRUD.get(action, (99, action or "Other"))
    return class_uid, activity_id, activity_name


def _role_values(doc: OutputDocument) -> list[str]:
    """The new values of role fields, as text (a role removed gives no value)."""
    values = []
    for change in doc.changes:
        if change.field in ROLE_FIELDS and isinstance(change.after, msgspec.Raw):
            try:
                value = _ANY.decode(change.after)
            except (msgspec.DecodeError, RecursionError):
                continue
            if isinstance(value, str) and value:
                values.append(value)
    return values


def _one_member_change(doc: OutputDocument) -> bool:
    changes = [r for r in (*doc.references_added, *doc.references_removed) if r.field == "members"]
    return len(changes) == 1


def _user(ref: ResourceRef) -> OcsfUser:
    return OcsfUser(uid=ref.id, name=ref.name, type="User", type_id=1)


def _resource(ref: ResourceRef) -> OcsfResource:
    return OcsfResource(uid=ref.id, name=ref.name, type=ref.type)


def _actor(doc: OutputDocument) -> OcsfActor | None:
    first = doc.actor
    if first is None:
        return None
    if first.type == "app":
        return OcsfActor(app_uid=first.id, app_name=first.name)
    if first.type == "user":
        return OcsfActor(user=OcsfUser(uid=first.id, name=first.name, type="User", type_id=1))
    # an API key (or a kind OCSF has no user type for): PagerDuty's type is in unmapped
    return OcsfActor(user=OcsfUser(uid=first.id, name=first.name, type="Other", type_id=99))


def _message(doc: OutputDocument, target: ResourceRef) -> str:
    what = target.name or target.id or doc.root_resource.id or "?"
    who = (doc.actor.name or doc.actor.id) if doc.actor else None
    return f"{doc.event_name} {what}" + (f" by {who}" if who else "")


def _epoch_ms(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)

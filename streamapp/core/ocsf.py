"""Optional rendering of an output document as an OCSF 1.4.0 event.

One record → one event, valid against the official OCSF 1.4.0 schema of its class (no
profiles). The class is chosen from what the record provably says; anything we cannot place
honestly stays an API Activity, the class for "an API changed something":

=====================================  ============================================  ==========
record                                 OCSF class                                    activity
=====================================  ============================================  ==========
user create / delete                   3001 Account Change (IAM)                     1 / 6
                                       ``user`` = the user
user or team update of a role field    3005 User Access Management (IAM)             1 Assign
(role, base_role, team_role,           ``user`` = the user changed,                  Privileges
members.role) naming a user            ``privileges`` = the new role values,
                                       ``resource`` = the team of a team role
team update adding / removing exactly  3006 Group Management (IAM)                   3 Add User
one member (``members``)               ``group`` = the team, ``user`` = the member   4 Remove
category ``account_management``        3004 Entity Management (IAM)                  1 / 3 / 4
(ip_allow_list, api keys, …)           ``entity`` = the object                       (99 other)
everything else                        6003 API Activity (Application Activity)      1 / 3 / 4
                                       ``api``, ``resources``                        (99 other)
=====================================  ============================================  ==========

Activities follow the action: create 1, update 3, delete 4 (Account Change: delete is 6),
any other action 99 "Other" with the action as ``activity_name``. ``type_uid`` is
``class_uid * 100 + activity_id``. Every event has ``severity_id`` 1 (an audit record is
information, not a finding) and ``status_id`` 1 (PagerDuty records only what was done).

An event holds only attributes of its class and never a ``null``: what is unknown is left
out. The IAM classes have no ``api`` (OCSF keeps it for the cloud profile) and no
``resources``, so their event name and request id go to ``unmapped``. API Activity requires
``actor`` and ``src_endpoint``: when PagerDuty names no actor (or one with neither id nor
name) the actor is a user of type Unknown named ``Unknown``, and without an IP address the
source endpoint is named ``Unknown``; nothing is invented. Why 1.4.0: in 1.3.0 only Account
Change has an ``actor`` (the other IAM classes only with the host profile), and who did it
is the point of an audit record.

What no OCSF attribute holds (the source, category, auth method, field changes, reference
changes, PagerDuty's actor type, a remote address that is not an IP) goes to ``unmapped``;
the record itself to ``raw_data``.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from streamapp.core.categories import ACCOUNT_MANAGEMENT
from streamapp.core.geoip import SourceAs, SourceGeo
from streamapp.core.output import (
    Actor,
    OcsfActor,
    OcsfApi,
    OcsfAutonomousSystem,
    OcsfDocument,
    OcsfEndpoint,
    OcsfGroup,
    OcsfLocation,
    OcsfMetadata,
    OcsfRequest,
    OcsfResource,
    OcsfUnmapped,
    OcsfUser,
    OutputDocument,
    ReferenceChange,
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

#: OCSF's caption for an unknown value; stands in where API Activity requires an attribute
UNKNOWN: Final = "Unknown"
_UNKNOWN_ACTOR: Final = OcsfActor(user=OcsfUser(name=UNKNOWN, type=UNKNOWN, type_id=0))
_UNKNOWN_ENDPOINT: Final = OcsfEndpoint(name=UNKNOWN)
#: the longest text OCSF's ``ip_t`` admits
_IP_MAX_LEN: Final = 40

_UNSET: Final = msgspec.UNSET
_ENCODER = msgspec.json.Encoder()
_ANY = msgspec.json.Decoder()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_ocsf(doc: OutputDocument) -> OcsfDocument:
    """The OCSF 1.4.0 event for one output document (see the module docstring)."""
    class_uid, activity_id, activity_name = _crud(API_ACTIVITY, doc.action)
    user: OcsfUser | msgspec.UnsetType = _UNSET
    group: OcsfGroup | msgspec.UnsetType = _UNSET
    privileges: list[str] | msgspec.UnsetType = _UNSET
    resource: OcsfResource | msgspec.UnsetType = _UNSET
    entity: OcsfResource | msgspec.UnsetType = _UNSET
    # the changed object, unless PagerDuty gave it neither id nor name
    target = (
        doc.resource if doc.resource is not None and _named(doc.resource) else doc.root_resource
    )
    roles = _role_values(doc)
    member = _member_change(doc)

    if doc.resource_type == "user" and doc.action in ("create", "delete"):
        class_uid = ACCOUNT_CHANGE
        activity_id, activity_name = (1, "Create") if doc.action == "create" else (6, "Delete")
        user = _user(target)
    elif doc.action == "update" and roles and target.type == "user":
        class_uid, activity_id, activity_name = USER_ACCESS_MANAGEMENT, 1, "Assign Privileges"
        user, privileges = _user(target), roles
        if doc.root_resource.id != target.id:  # a team role: the team it gives access to
            resource = _resource(doc.root_resource)
    elif doc.resource_type == "team" and doc.action == "update" and member is not None:
        ref, added = member
        class_uid = GROUP_MANAGEMENT
        activity_id, activity_name = (3, "Add User") if added else (4, "Remove User")
        group = OcsfGroup(uid=_opt(doc.root_resource.id), name=_opt(doc.root_resource.name))
        user = _user(ref)
    elif doc.category == ACCOUNT_MANAGEMENT:
        class_uid, activity_id, activity_name = _crud(ENTITY_MANAGEMENT, doc.action)
        entity = _resource(target)

    class_name, category_uid, category_name = _CLASSES[class_uid]
    api_activity = class_uid == API_ACTIVITY
    actor = _actor(doc.actor)
    ip = _ip(doc.src_ip)
    if ip is not None:
        src_endpoint: OcsfEndpoint | msgspec.UnsetType = OcsfEndpoint(
            ip=ip, location=_location(doc.src_geo), autonomous_system=_as(doc.src_as)
        )
    else:
        src_endpoint = _UNKNOWN_ENDPOINT if api_activity else _UNSET
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
        actor=_UNKNOWN_ACTOR if api_activity and actor is _UNSET else actor,
        src_endpoint=src_endpoint,
        api=_api(doc) if api_activity else _UNSET,
        resources=_resources(doc) if api_activity else _UNSET,
        user=user,
        group=group,
        privileges=privileges,
        resource=resource,
        entity=entity,
        unmapped=OcsfUnmapped(
            source_name=doc.source_name,
            category=doc.category,
            event_name=_UNSET if api_activity else doc.event_name,
            request_id=_UNSET if api_activity else _opt(doc.request_id),
            src_ip=_opt(doc.src_ip) if ip is None else _UNSET,
            actor_type=_opt(doc.actor.type if doc.actor else None),
            auth_method=_opt(doc.auth_method),
            auth_description=_opt(doc.auth_description),
            truncated_token=_opt(doc.truncated_token),
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


def _member_change(doc: OutputDocument) -> tuple[ReferenceChange, bool] | None:
    """The one member added (True) or removed (False), when exactly one is and we can name it."""
    added = [r for r in doc.references_added if r.field == "members"]
    removed = [r for r in doc.references_removed if r.field == "members"]
    if len(added) + len(removed) != 1:
        return None
    ref = (added or removed)[0]
    return (ref, bool(added)) if _named(ref) else None


def _named(ref: ResourceRef | ReferenceChange | Actor) -> bool:
    """Whether OCSF can identify it: objects need a ``uid`` or a ``name``."""
    return bool(ref.id or ref.name)


def _opt(value: str | None) -> str | msgspec.UnsetType:
    return _UNSET if value is None else value


def _ip(text: str | None) -> str | None:
    """``text`` when it is an IP address OCSF's ``ip_t`` admits, else None."""
    if text is None or len(text) > _IP_MAX_LEN:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text


def _user(ref: ResourceRef | ReferenceChange) -> OcsfUser:
    return OcsfUser(uid=_opt(ref.id), name=_opt(ref.name), type="User", type_id=1)


def _resource(ref: ResourceRef) -> OcsfResource:
    return OcsfResource(uid=_opt(ref.id), name=_opt(ref.name), type=_opt(ref.type))


def _resources(doc: OutputDocument) -> list[OcsfResource]:
    """The root resource, then the changed object when it is another one we can name."""
    resources = [_resource(doc.root_resource)]
    changed = doc.resource
    if changed is not None and changed != doc.root_resource and _named(changed):
        resources.append(_resource(changed))
    return resources


def _api(doc: OutputDocument) -> OcsfApi:
    if doc.request_id is None:
        return OcsfApi(operation=doc.event_name)
    return OcsfApi(operation=doc.event_name, request=OcsfRequest(uid=doc.request_id))


def _actor(first: Actor | None) -> OcsfActor | msgspec.UnsetType:
    """The first actor; unset when there is none OCSF can identify."""
    if first is None or not _named(first):
        return _UNSET
    if first.type == "app":
        return OcsfActor(app_uid=_opt(first.id), app_name=_opt(first.name))
    # an API key (or a kind OCSF has no user type for) is Other: PagerDuty's type is in unmapped
    kind, kind_id = ("User", 1) if first.type == "user" else ("Other", 99)
    user = OcsfUser(uid=_opt(first.id), name=_opt(first.name), type=kind, type_id=kind_id)
    return OcsfActor(user=user)


def _message(doc: OutputDocument, target: ResourceRef) -> str:
    what = target.name or target.id or doc.root_resource.id or "?"
    who = (doc.actor.name or doc.actor.id) if doc.actor else None
    return f"{doc.event_name} {what}" + (f" by {who}" if who else "")


def _epoch_ms(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)


def _location(geo: SourceGeo | msgspec.UnsetType) -> OcsfLocation | msgspec.UnsetType:
    """OCSF's Location from our GeoIP answer (absent when there is none)."""
    if isinstance(geo, msgspec.UnsetType):
        return _UNSET
    point = geo.location
    location = OcsfLocation(
        city=_opt(geo.city_name),
        country=_opt(geo.country_iso_code),
        lat=point.lat if point is not None else _UNSET,
        long=point.lon if point is not None else _UNSET,
    )
    return location if location != OcsfLocation() else _UNSET


def _as(system: SourceAs | msgspec.UnsetType) -> OcsfAutonomousSystem | msgspec.UnsetType:
    if isinstance(system, msgspec.UnsetType):
        return _UNSET
    found = OcsfAutonomousSystem(
        number=system.number if system.number is not None else _UNSET,
        name=_opt(system.organization),
    )
    return found if found != OcsfAutonomousSystem() else _UNSET

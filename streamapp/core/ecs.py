"""Optional rendering of an output document as an Elastic Common Schema (ECS 9.4.0) event.

Elastic has no PagerDuty integration; this is the document for Elasticsearch. Fields follow
ECS's definitions (``tests/reference/ecs_flat.yml``, checked by ``tests/test_ecs.py``);
what ECS has no field for goes under ``pagerduty.audit.*``. Absent values are left out,
never ``null``.

Categorisation (``event.kind`` is always ``event``, ``event.outcome`` always ``success``:
PagerDuty records only what was done):

===============================================  ===================  ========================
record                                           event.category       event.type
===============================================  ===================  ========================
root resource a user                             iam                  user + action
root resource a team                             iam                  group + action (+ user
                                                                      when it names one user)
api_key, ip_allow_list, sso/saml settings,       iam, configuration   admin + action
oauth_client (who may reach the account, how)
anything else (schedules, services, ...)         configuration        action
===============================================  ===================  ========================

The action type: create → ``creation``, update → ``change``, delete → ``deletion``; any
other action is a ``change`` (the audit trail records changes only).

Who and what, after ECS's user guide ("Identity and access management"): the first actor is
``user.*`` at the root (whatever PagerDuty's actor type: user, API key or app; the type is in
``pagerduty.audit.actors``); a team is ``group.*``; the user acted on is ``user.target.*``
(the changed resource, the root resource, or the one member a team change adds or removes),
with the team as ``user.target.group``. ``user.target`` holds the user as it was, and
``user.changes`` only what the record changed (name, email, roles), so a create puts the
new values in ``user.target`` and a delete the old ones. ``related.user`` lists every user
id, name and email seen.

``source.address`` is the address as PagerDuty gave it, ``source.ip`` only when it is an IP
address (ECS's ``ip`` type rejects anything else); ``source.geo.*`` / ``source.as.*`` come
from :mod:`streamapp.core.geoip` when the operator configured its databases.

Field changes (``pagerduty.audit.changes``): ``before`` / ``after`` are text: a JSON string
as it is, any other JSON value (number, object, null, ...) as its compact JSON text, so one
Elasticsearch field never receives both strings and objects. ``event.original`` keeps the
record exactly as PagerDuty sent it.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final, NamedTuple

import msgspec

from streamapp.core.geoip import SourceAs, SourceGeo
from streamapp.core.output import OutputDocument, ReferenceChange, ResourceRef, Timestamp

__all__ = ["ECS_VERSION", "EcsDocument", "encode_ecs", "to_ecs"]

ECS_VERSION: Final = "9.4.0"
DATASET: Final = "pagerduty.audit"
MODULE: Final = "pagerduty"

#: resource types whose changes administer access to the whole account
IAM_ADMIN_TYPES: Final = frozenset(
    {"api_key", "ip_allow_list", "sso_settings", "saml_settings", "oauth_client"}
)
_ACTION_TYPES: Final = {"create": "creation", "update": "change", "delete": "deletion"}
#: changed fields that name a role the user holds (the account's or a team's)
ROLE_FIELDS: Final = frozenset({"role", "base_role", "team_role", "members.role"})
#: PagerDuty field → ECS user field (besides the roles)
_USER_FIELDS: Final = {"name": "name", "email": "email"}
#: the reference list of a team's members
MEMBERS: Final = "members"


class EcsGroup(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    id: str | None = None
    name: str | None = None


class EcsUserInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    id: str | None = None
    name: str | None = None
    email: str | None = None
    roles: list[str] = []
    group: EcsGroup | None = None


class EcsUser(EcsUserInfo, kw_only=True, frozen=True, omit_defaults=True):
    """The actor; ``target`` the user acted on as it was, ``changes`` what changed."""

    target: EcsUserInfo | None = None
    changes: EcsUserInfo | None = None


class EcsEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    kind: str
    category: list[str]
    type: list[str]
    #: ``{resource_type}.{action}``, e.g. ``team.create``
    action: str
    outcome: str
    #: the audit record's id: the document id for idempotent indexing
    id: str
    dataset: str
    module: str
    provider: str
    #: when the collector read the record (ECS: first read by the pipeline)
    created: str
    original: str | None = None


class EcsOrganization(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    name: str | None = None


class EcsAs(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    number: int | None = None
    organization: EcsOrganization | None = None


class EcsSource(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    address: str
    ip: str | None = None
    geo: SourceGeo | None = None
    as_: EcsAs | None = msgspec.field(default=None, name="as")


class EcsRelated(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    user: list[str] = []
    ip: list[str] = []


class EcsVersion(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    version: str


class AuditRef(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    id: str | None = None
    type: str | None = None
    name: str | None = None
    url: str | None = None


class AuditActor(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    id: str | None = None
    type: str | None = None
    name: str | None = None


class AuditMethod(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    type: str | None = None
    description: str | None = None
    truncated_token: str | None = None


class AuditChange(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    field: str
    description: str | None = None
    #: the value as text (see the module docstring); absent when PagerDuty sent none
    before: str | None = None
    after: str | None = None


class AuditReference(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    field: str
    id: str | None = None
    type: str | None = None
    name: str | None = None


class PagerDutyAudit(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What ECS has no field for, in PagerDuty's terms (``pagerduty.audit.*``)."""

    source_name: str
    action: str
    resource_type: str
    category: str
    resource: AuditRef | None = None
    root_resource: AuditRef
    actors: list[AuditActor] = []
    method: AuditMethod | None = None
    request_id: str | None = None
    changes: list[AuditChange] = []
    references_added: list[AuditReference] = []
    references_removed: list[AuditReference] = []
    warnings: list[str] = []


class PagerDuty(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    audit: PagerDutyAudit


class EcsDocument(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One audit record as an ECS event (the value on ``pagerduty_audit_logs.ecs``)."""

    timestamp: Timestamp = msgspec.field(name="@timestamp")
    ecs: EcsVersion
    message: str
    event: EcsEvent
    user: EcsUser | None = None
    group: EcsGroup | None = None
    source: EcsSource | None = None
    related: EcsRelated | None = None
    pagerduty: PagerDuty


_ENCODER = msgspec.json.Encoder()
_ANY = msgspec.json.Decoder()


def to_ecs(
    doc: OutputDocument, *, geo: SourceGeo | None = None, asn: SourceAs | None = None
) -> EcsDocument:
    """The ECS event for one output document (see the module docstring). ``geo`` / ``asn``
    place the source address (``streamapp.core.geoip``); they are used only when the
    document has a source IP address."""
    target = _target(doc)
    team = _team(doc)
    user = _user(doc, target, team)
    source, ip = _source(doc.src_ip, geo, asn)
    related = _related(doc, user, ip)
    return EcsDocument(
        timestamp=doc.event_time,
        ecs=EcsVersion(version=ECS_VERSION),
        message=_message(doc),
        event=EcsEvent(
            kind="event",
            category=_categories(doc),
            type=_types(doc, target),
            action=doc.event_name,
            outcome="success",
            id=doc.id,
            dataset=DATASET,
            module=MODULE,
            provider=doc.source_type,
            created=doc.ingested_at,
            original=bytes(doc.raw).decode("utf-8", "replace"),
        ),
        user=user,
        group=team,
        source=source,
        related=related,
        pagerduty=PagerDuty(audit=_audit(doc)),
    )


def encode_ecs(event: EcsDocument) -> bytes:
    """The UTF-8 JSON value published on ``pagerduty_audit_logs.ecs``."""
    return _ENCODER.encode(event)


# --- categorisation ------------------------------------------------------------------------


def _categories(doc: OutputDocument) -> list[str]:
    if doc.resource_type in ("user", "team"):
        return ["iam"]
    if doc.resource_type in IAM_ADMIN_TYPES:
        return ["iam", "configuration"]
    return ["configuration"]


def _types(doc: OutputDocument, target: _Target | None) -> list[str]:
    action = _ACTION_TYPES.get(doc.action, "change")
    if doc.resource_type == "user":
        return ["user", action]
    if doc.resource_type == "team":
        return ["group", "user", action] if target is not None else ["group", action]
    if doc.resource_type in IAM_ADMIN_TYPES:
        return ["admin", action]
    return [action]


# --- users and groups ----------------------------------------------------------------------


def _team(doc: OutputDocument) -> EcsGroup | None:
    root = doc.root_resource
    if root.type != "team" or not (root.id or root.name):
        return None
    return EcsGroup(id=root.id or None, name=root.name or None)


class _Target(NamedTuple):
    """The user acted on; ``own`` when the record's field changes are that user's own."""

    ref: ResourceRef | ReferenceChange
    own: bool


def _target(doc: OutputDocument) -> _Target | None:
    """The user acted on: the changed resource or else the root resource when it is a user
    (a contact method changed under a user), else the one member a team change adds or
    removes."""
    if doc.resource is not None and doc.resource.type == "user":
        return _Target(doc.resource, own=True)
    if doc.root_resource.type == "user":
        return _Target(doc.root_resource, own=doc.resource is None)
    if doc.resource_type == "team":
        members = [
            ref
            for ref in (*doc.references_added, *doc.references_removed)
            if ref.field == MEMBERS and ref.type == "user"
        ]
        if len(members) == 1:
            return _Target(members[0], own=False)
    return None


def _user(doc: OutputDocument, target: _Target | None, team: EcsGroup | None) -> EcsUser | None:
    actor = doc.actor
    target_info: EcsUserInfo | None = None
    changes: EcsUserInfo | None = None
    if target is not None:
        before = _user_values(doc, "before") if target.own else {}
        after = _user_values(doc, "after") if target.own else {}
        # ECS: a target holds the user as it was; a create has no prior state but the new
        # user, a delete no later state
        prior = after if doc.action == "create" else before
        target_info = EcsUserInfo(
            id=target.ref.id or None,
            name=prior.get("name") or target.ref.name or None,
            email=prior.get("email"),
            roles=prior.get("roles", []),
            group=team,
        )
        if doc.action not in ("create", "delete") and after:
            changes = EcsUserInfo(
                name=after.get("name"), email=after.get("email"), roles=after.get("roles", [])
            )
    actor_id = actor.id if actor else None
    actor_name = actor.name if actor else None
    if not (actor_id or actor_name) and target_info is None:
        return None
    return EcsUser(
        id=actor_id or None,
        name=actor_name or None,
        target=target_info,
        changes=changes,
    )


def _user_values(doc: OutputDocument, side: str) -> dict[str, Any]:
    """The user fields a record's changes set, one side (``before``/``after``) of them."""
    values: dict[str, Any] = {}
    roles: list[str] = []
    for change in doc.changes:
        raw = getattr(change, side)
        if not isinstance(raw, msgspec.Raw):
            continue
        value = _json_value(raw)
        if not isinstance(value, str) or not value:
            continue
        if change.field in ROLE_FIELDS:
            roles.append(value)
        elif change.field in _USER_FIELDS:
            values[_USER_FIELDS[change.field]] = value
    if roles:
        values["roles"] = roles
    return values


# --- source and related --------------------------------------------------------------------


def _source(
    address: str | None, geo: SourceGeo | None, asn: SourceAs | None
) -> tuple[EcsSource | None, str | None]:
    if not address:
        return None, None
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        parsed = None
    # a zone (fe80::1%eth0) means nothing outside its host, and Elasticsearch's ip rejects it
    if parsed is None or getattr(parsed, "scope_id", None):
        return EcsSource(address=address), None
    ip = str(parsed)
    as_ = None
    if asn is not None and asn != SourceAs():
        org = EcsOrganization(name=asn.organization) if asn.organization else None
        as_ = EcsAs(number=asn.number, organization=org)
    geo = geo if geo != SourceGeo() else None
    return EcsSource(address=address, ip=ip, geo=geo, as_=as_), ip


def _related(doc: OutputDocument, user: EcsUser | None, ip: str | None) -> EcsRelated | None:
    names: list[str | None] = []
    for actor in doc.actors:
        names += [actor.id, actor.name]
    if user is not None:
        for info in (user.target, user.changes):
            if info is not None:
                names += [info.id, info.name, info.email]
    for ref in (*doc.references_added, *doc.references_removed):
        if ref.type == "user":
            names += [ref.id, ref.name]
    users = list(dict.fromkeys(name for name in names if name))
    if not users and ip is None:
        return None
    return EcsRelated(user=users, ip=[ip] if ip else [])


# --- pagerduty.audit -----------------------------------------------------------------------


def _audit(doc: OutputDocument) -> PagerDutyAudit:
    method = AuditMethod(
        type=doc.auth_method,
        description=doc.auth_description,
        truncated_token=doc.truncated_token,
    )
    return PagerDutyAudit(
        source_name=doc.source_name,
        action=doc.action,
        resource_type=doc.resource_type,
        category=doc.category,
        resource=_ref(doc.resource) if doc.resource else None,
        root_resource=_ref(doc.root_resource),
        actors=[AuditActor(id=a.id, type=a.type, name=a.name) for a in doc.actors],
        method=method if method != AuditMethod() else None,
        request_id=doc.request_id,
        changes=[
            AuditChange(
                field=c.field,
                description=c.description,
                before=_value_text(c.before),
                after=_value_text(c.after),
            )
            for c in doc.changes
        ],
        references_added=[_reference(r) for r in doc.references_added],
        references_removed=[_reference(r) for r in doc.references_removed],
        warnings=doc.warnings,
    )


def _ref(ref: ResourceRef) -> AuditRef:
    return AuditRef(id=ref.id, type=ref.type, name=ref.name, url=ref.url)


def _reference(ref: ReferenceChange) -> AuditReference:
    return AuditReference(field=ref.field, id=ref.id, type=ref.type, name=ref.name)


def _json_value(raw: msgspec.Raw) -> Any:
    try:
        return _ANY.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


def _value_text(raw: msgspec.Raw | msgspec.UnsetType) -> str | None:
    """A change's JSON value as text: a string as it is, anything else as compact JSON."""
    if not isinstance(raw, msgspec.Raw):
        return None
    try:
        value = _ANY.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return bytes(raw).decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return _ENCODER.encode(value).decode("utf-8")


def _message(doc: OutputDocument) -> str:
    target = doc.resource or doc.root_resource
    what = target.name or target.id or doc.root_resource.id or "?"
    who = (doc.actor.name or doc.actor.id) if doc.actor else None
    return f"{doc.event_name} {what}" + (f" by {who}" if who else "")

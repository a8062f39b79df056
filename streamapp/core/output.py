"""msgspec models of what we publish: the output document and its optional OCSF rendering.

The output document is the value on ``pagerduty_audit_logs`` (CONTRACT.md, "Output
document"). Schema evolution rules (msgspec docs/schema-evolution.rst): fields are only
ever added, each new one with a default, and no existing field changes type. The JSON
Schema files under ``schemas/`` are generated from these classes (``python -m
streamapp.cli.schemas``) and a test fails when they drift.

Field order is the encoding order, so it is part of the interface: identity first, then
routing attributes, then who/how/where, then what changed, and the untouched record last.
Optional values are encoded as ``null`` (not omitted) so every document has the same keys,
except a change's ``before``/``after``, which are present exactly when PagerDuty sent
``before_value``/``value`` (``"before": null`` means PagerDuty said the value was null).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from streamapp.core.geoip import SourceAs, SourceGeo

#: an RFC 3339 UTC timestamp string, ``2020-06-04T15:30:16.272Z``
Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class ResourceRef(msgspec.Struct, kw_only=True, frozen=True):
    """A PagerDuty object: ``type`` without the ``_reference`` suffix, ``name`` its summary."""

    id: str | None = None
    type: str | None = None
    name: str | None = None
    url: str | None = None


class Actor(msgspec.Struct, kw_only=True, frozen=True):
    """Who acted: ``type`` is ``user``, ``api_key`` or ``app`` (minus ``_reference``)."""

    id: str | None = None
    type: str | None = None
    name: str | None = None


class Change(msgspec.Struct, kw_only=True, frozen=True):
    """One changed field. ``before``/``after`` are the JSON values exactly as PagerDuty sent them
    (``before_value``/``value``); each is absent when PagerDuty did not send it: a create
    normally has only ``after``, an update both, a delete only ``before``."""

    field: str
    description: str | None = None
    before: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    after: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class ReferenceChange(msgspec.Struct, kw_only=True, frozen=True):
    """One object added to or removed from a reference list (``field``: the list's name)."""

    field: str
    id: str | None = None
    type: str | None = None
    name: str | None = None


class OutputDocument(msgspec.Struct, kw_only=True, frozen=True):
    """One audit record, enriched: the value on ``pagerduty_audit_logs``."""

    id: str
    source_type: str = "pagerduty"
    source_name: str
    #: ``execution_time`` in UTC: milliseconds, or microseconds when the record had them
    event_time: Timestamp
    #: ``{resource_type}.{action}``, e.g. ``team.create``
    event_name: str
    action: str
    #: the root resource's type without ``_reference``
    resource_type: str
    #: one of ``streamapp.core.categories.CATEGORIES``
    category: str
    ingested_at: Timestamp
    #: the first actor, or null when PagerDuty named none
    actor: Actor | None = None
    actors: list[Actor] = []
    #: ``method.type``: browser, oauth, api_token, identity_provider, other
    auth_method: str | None = None
    auth_description: str | None = None
    #: the last four characters of the API token or OAuth token used, when PagerDuty gives them
    truncated_token: str | None = None
    src_ip: str | None = None
    #: where ``src_ip`` is (STREAMAPP_GEOIP_DB); absent without a database or an answer
    src_geo: SourceGeo | msgspec.UnsetType = msgspec.UNSET
    #: the autonomous system announcing ``src_ip`` (STREAMAPP_ASN_DB); absent likewise
    src_as: SourceAs | msgspec.UnsetType = msgspec.UNSET
    request_id: str | None = None
    #: the changed object (``details.resource``; the root resource when there are no details)
    resource: ResourceRef | None = None
    #: the object whose audit trail holds the record (``root_resource``)
    root_resource: ResourceRef
    changes: list[Change] = []
    references_added: list[ReferenceChange] = []
    references_removed: list[ReferenceChange] = []
    #: parts of the record that could not be read (they stay intact in ``raw``)
    warnings: list[str] = []
    #: the audit record byte for byte as PagerDuty returned it
    raw: Annotated[
        msgspec.Raw,
        msgspec.Meta(
            description="the audit record as returned", extra_json_schema={"type": "object"}
        ),
    ]


# --- OCSF (https://schema.ocsf.io/1.4.0) -------------------------------------------------
# Unlike the output document, an OCSF event never holds ``null``: the official schema types
# every attribute and forbids the attributes of other classes, so what is unknown or does
# not belong to the event's class is left out (``UNSET``, never encoded).


class OcsfProduct(msgspec.Struct, kw_only=True, frozen=True):
    name: str = "PagerDuty"
    vendor_name: str = "PagerDuty"


class OcsfMetadata(msgspec.Struct, kw_only=True, frozen=True):
    version: str = "1.4.0"
    product: OcsfProduct = OcsfProduct()
    #: the audit record's id
    uid: str
    #: the record's ``execution_time`` as PagerDuty sent it (normalised to RFC 3339 UTC)
    original_time: str
    #: when we ingested the record, ms since the epoch
    logged_time: int | msgspec.UnsetType = msgspec.UNSET


class OcsfUser(msgspec.Struct, kw_only=True, frozen=True):
    uid: str | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET
    #: OCSF user type caption (``User``, ``Other``, ``Unknown``)
    type: str | msgspec.UnsetType = msgspec.UNSET
    type_id: int | msgspec.UnsetType = msgspec.UNSET


class OcsfActor(msgspec.Struct, kw_only=True, frozen=True):
    user: OcsfUser | msgspec.UnsetType = msgspec.UNSET
    app_uid: str | msgspec.UnsetType = msgspec.UNSET
    app_name: str | msgspec.UnsetType = msgspec.UNSET


class OcsfLocation(msgspec.Struct, kw_only=True, frozen=True):
    city: str | msgspec.UnsetType = msgspec.UNSET
    #: ISO 3166-1 alpha-2
    country: str | msgspec.UnsetType = msgspec.UNSET
    lat: float | msgspec.UnsetType = msgspec.UNSET
    long: float | msgspec.UnsetType = msgspec.UNSET


class OcsfAutonomousSystem(msgspec.Struct, kw_only=True, frozen=True):
    number: int | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET


class OcsfEndpoint(msgspec.Struct, kw_only=True, frozen=True):
    #: the record's ``remote_address`` when it is an IP address
    ip: str | msgspec.UnsetType = msgspec.UNSET
    #: ``Unknown`` when an API Activity's source has no address
    name: str | msgspec.UnsetType = msgspec.UNSET
    #: from the GeoIP database, when one is configured and knows the address
    location: OcsfLocation | msgspec.UnsetType = msgspec.UNSET
    autonomous_system: OcsfAutonomousSystem | msgspec.UnsetType = msgspec.UNSET


class OcsfRequest(msgspec.Struct, kw_only=True, frozen=True):
    uid: str


class OcsfApi(msgspec.Struct, kw_only=True, frozen=True):
    operation: str
    request: OcsfRequest | msgspec.UnsetType = msgspec.UNSET


class OcsfResource(msgspec.Struct, kw_only=True, frozen=True):
    uid: str | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET
    type: str | msgspec.UnsetType = msgspec.UNSET


class OcsfGroup(msgspec.Struct, kw_only=True, frozen=True):
    uid: str | msgspec.UnsetType = msgspec.UNSET
    name: str | msgspec.UnsetType = msgspec.UNSET


class OcsfUnmapped(msgspec.Struct, kw_only=True, frozen=True):
    """What PagerDuty says that the chosen OCSF class has no place for."""

    source_name: str
    category: str
    #: IAM classes, which have no ``api``: the event name and the request id
    event_name: str | msgspec.UnsetType = msgspec.UNSET
    request_id: str | msgspec.UnsetType = msgspec.UNSET
    #: a ``remote_address`` that is not an IP address (``src_endpoint.ip`` must be one)
    src_ip: str | msgspec.UnsetType = msgspec.UNSET
    actor_type: str | msgspec.UnsetType = msgspec.UNSET
    auth_method: str | msgspec.UnsetType = msgspec.UNSET
    auth_description: str | msgspec.UnsetType = msgspec.UNSET
    truncated_token: str | msgspec.UnsetType = msgspec.UNSET
    changes: list[Change] = []
    references_added: list[ReferenceChange] = []
    references_removed: list[ReferenceChange] = []


class OcsfDocument(msgspec.Struct, kw_only=True, frozen=True):
    """One audit record as an OCSF 1.4.0 event (``streamapp.core.ocsf`` maps the classes).

    An event holds only attributes of its class: ``api`` and ``resources`` appear in API
    Activity only; ``user``, ``group``, ``privileges``, ``resource`` and ``entity`` only in
    the IAM classes that define them."""

    class_uid: int
    class_name: str
    category_uid: int
    category_name: str
    activity_id: int
    activity_name: str
    type_uid: int
    type_name: str
    severity_id: int = 1
    severity: str = "Informational"
    status_id: int = 1
    status: str = "Success"
    #: the record's ``execution_time``, ms since the epoch
    time: int
    message: str
    metadata: OcsfMetadata
    actor: OcsfActor | msgspec.UnsetType = msgspec.UNSET
    src_endpoint: OcsfEndpoint | msgspec.UnsetType = msgspec.UNSET
    #: API Activity: the event name and the request id
    api: OcsfApi | msgspec.UnsetType = msgspec.UNSET
    #: API Activity: the root resource, then the changed object when it is another one
    resources: list[OcsfResource] | msgspec.UnsetType = msgspec.UNSET
    #: Account Change / User Access Management: the user acted on; Group Management: the member
    user: OcsfUser | msgspec.UnsetType = msgspec.UNSET
    #: Group Management: the team
    group: OcsfGroup | msgspec.UnsetType = msgspec.UNSET
    #: User Access Management: the role values granted
    privileges: list[str] | msgspec.UnsetType = msgspec.UNSET
    #: User Access Management: what the role gives access to (the team), if not the user
    resource: OcsfResource | msgspec.UnsetType = msgspec.UNSET
    #: Entity Management: the object managed
    entity: OcsfResource | msgspec.UnsetType = msgspec.UNSET
    unmapped: OcsfUnmapped
    #: the audit record as PagerDuty returned it, as text
    raw_data: str | msgspec.UnsetType = msgspec.UNSET

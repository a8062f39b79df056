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


# --- OCSF (https://schema.ocsf.io/1.3.0) -------------------------------------------------


class OcsfProduct(msgspec.Struct, kw_only=True, frozen=True):
    name: str = "PagerDuty"
    vendor_name: str = "PagerDuty"


class OcsfMetadata(msgspec.Struct, kw_only=True, frozen=True):
    version: str = "1.3.0"
    product: OcsfProduct = OcsfProduct()
    #: the audit record's id
    uid: str
    #: the record's ``execution_time`` as PagerDuty sent it (normalised to RFC 3339 UTC)
    original_time: str
    #: when we ingested the record, ms since the epoch
    logged_time: int | None = None


class OcsfUser(msgspec.Struct, kw_only=True, frozen=True):
    uid: str | None = None
    name: str | None = None
    #: OCSF user type caption (``User``, ``Other``, ``Unknown``)
    type: str | None = None
    type_id: int | None = None


class OcsfActor(msgspec.Struct, kw_only=True, frozen=True):
    user: OcsfUser | None = None
    app_uid: str | None = None
    app_name: str | None = None


class OcsfEndpoint(msgspec.Struct, kw_only=True, frozen=True):
    ip: str | None = None


class OcsfRequest(msgspec.Struct, kw_only=True, frozen=True):
    uid: str | None = None


class OcsfApi(msgspec.Struct, kw_only=True, frozen=True):
    operation: str
    request: OcsfRequest | None = None


class OcsfResource(msgspec.Struct, kw_only=True, frozen=True):
    uid: str | None = None
    name: str | None = None
    type: str | None = None


class OcsfGroup(msgspec.Struct, kw_only=True, frozen=True):
    uid: str | None = None
    name: str | None = None


class OcsfUnmapped(msgspec.Struct, kw_only=True, frozen=True):
    """What PagerDuty says that the chosen OCSF class has no place for."""

    source_name: str
    category: str
    actor_type: str | None = None
    auth_method: str | None = None
    auth_description: str | None = None
    truncated_token: str | None = None
    changes: list[Change] = []
    references_added: list[ReferenceChange] = []
    references_removed: list[ReferenceChange] = []


class OcsfDocument(msgspec.Struct, kw_only=True, frozen=True):
    """One audit record as an OCSF 1.3.0 event (``streamapp.core.ocsf`` maps the classes)."""

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
    actor: OcsfActor | None = None
    src_endpoint: OcsfEndpoint | None = None
    api: OcsfApi
    resources: list[OcsfResource] = []
    #: Account Change / User Access Management: the user acted on
    user: OcsfUser | None = None
    #: Group Management: the team
    group: OcsfGroup | None = None
    #: User Access Management: the role values granted
    privileges: list[str] | None = None
    #: Entity Management: the object managed
    entity: OcsfResource | None = None
    unmapped: OcsfUnmapped
    #: the audit record as PagerDuty returned it, as text
    raw_data: str | None = None

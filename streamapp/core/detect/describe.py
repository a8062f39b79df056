"""The words of a finding: who, how, from where, on what, and the one-line summary.

A rule's ``summary`` is a template of named placeholders (``{actor} deleted {resource}``),
checked when the rules are loaded (:func:`placeholders`), filled here with values that are
cleaned to one line each. Every value has a readable fallback (``an unnamed actor``, ``an
unrecorded address``), so a summary never shows ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from streamapp.core.detect.finding import Finding, finding_id
from streamapp.core.detect.matchers import Evidence
from streamapp.core.detect.rules import Kind, Rule
from streamapp.core.output import Actor, OutputDocument, ResourceRef

__all__ = [
    "DEFAULT_SUMMARIES",
    "actor_text",
    "make_finding",
    "one_line",
    "placeholders",
    "record_evidence",
    "record_finding",
    "record_values",
    "render_summary",
    "resource_text",
    "resources_of",
]

_COMMON: Final = frozenset(
    {
        "title",  # the rule's title
        "source",  # the source's name
        "actor",  # John Snow (user PDUSER)
        "method",  # api_token …3usr
        "ip",  # the record's remote address
        "event",  # user.update
        "action",  # created / updated / deleted / the action as sent
        "resource",  # the changed object: Test User (user PD_USER_999)
        "root",  # the root resource
        "change",  # the matched change: role: user → admin
        "reference",  # the matched reference: cidr_entries added 0.0.0.0/0
        "detail",  # the matched change or reference, else the action
    }
)
_KIND_PLACEHOLDERS: Final[dict[Kind, frozenset[str]]] = {
    "record": _COMMON,
    # the record-level placeholders name the record that completed the burst
    "burst": _COMMON | {"count", "threshold", "window", "resources"},
    "first_seen": _COMMON | {"track", "value", "known", "retention"},
}

#: the summary of a rule that gives none
DEFAULT_SUMMARIES: Final[dict[Kind, str]] = {
    "record": "{title}: {actor} {detail} ({event} on {resource}) via {method} from {ip}",
    "burst": "{title}: {actor}, {count} records within {window} ({resources})",
    "first_seen": "{title}: {actor}, new {track} {value} (known: {known})",
}

_PAST: Final = {"create": "created", "update": "updated", "delete": "deleted"}
_MAX_VALUE: Final = 160
_MAX_SUMMARY: Final = 600


def placeholders(kind: Kind) -> frozenset[str]:
    """The placeholders a ``kind`` rule's summary may use."""
    return _KIND_PLACEHOLDERS[kind]


def one_line(text: str, limit: int = _MAX_VALUE) -> str:
    """``text`` without control characters or runs of whitespace, at most ``limit`` long."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def actor_text(actor: Actor | None) -> str:
    """``John Snow (user PDUSER)``, ``api_key P8AC329``, or ``an unnamed actor``."""
    return _named(actor, "actor")


def resource_text(ref: ResourceRef | None) -> str:
    """``Test User (user PD_USER_999)``, ``ip_allow_list B2KTPSXM…``, or ``an unnamed object``."""
    return _named(ref, "object")


def _named(ref: Actor | ResourceRef | None, noun: str) -> str:
    """``name (type id)``, ``type id`` or ``an unnamed {noun}``; ``noun`` also stands in for
    a missing type."""
    if ref is None or not (ref.id or ref.name):
        return f"an unnamed {noun}"
    kind = ref.type or noun
    if ref.name and ref.id:
        return one_line(f"{ref.name} ({kind} {ref.id})")
    return one_line(f"{kind} {ref.id or ref.name}")


def _method_text(doc: OutputDocument) -> str:
    method = doc.auth_method or "an unknown method"
    if doc.truncated_token:
        method += f" …{doc.truncated_token}"
    if doc.auth_description:
        method += f" ({doc.auth_description})"
    return one_line(method)


def resources_of(doc: OutputDocument, extra: Iterable[ResourceRef] = ()) -> list[ResourceRef]:
    """The changed resource, the root resource and ``extra``, each (type, id) once."""
    found: list[ResourceRef] = []
    seen: set[tuple[str | None, str | None]] = set()
    for ref in (doc.resource, doc.root_resource, *extra):
        if ref is None or (ref.type, ref.id) in seen:
            continue
        seen.add((ref.type, ref.id))
        found.append(ref)
    return found


def record_values(rule: Rule, doc: OutputDocument, evidence: Evidence) -> dict[str, str]:
    """The record-level placeholder values for ``doc``."""
    action = _PAST.get(doc.action, doc.action)
    return {
        "title": rule.title,
        "source": one_line(doc.source_name),
        "actor": actor_text(doc.actor),
        "method": _method_text(doc),
        "ip": one_line(doc.src_ip) if doc.src_ip else "an unrecorded address",
        "event": one_line(doc.event_name),
        "action": one_line(action),
        "resource": resource_text(doc.resource or doc.root_resource),
        "root": resource_text(doc.root_resource),
        "change": one_line(evidence.change or ""),
        "reference": one_line(evidence.reference or ""),
        "detail": one_line(evidence.change or evidence.reference or action),
    }


def render_summary(rule: Rule, values: dict[str, str]) -> str:
    """The rule's summary (or its kind's default) filled with ``values``, one line."""
    template = rule.summary or DEFAULT_SUMMARIES[rule.kind]
    return one_line(template.format_map(values), _MAX_SUMMARY)


def record_evidence(doc: OutputDocument, evidence: Evidence) -> dict[str, str]:
    """The ``evidence`` map of a finding about ``doc``: what matched and how it was done."""
    found = {"event": doc.event_name, "auth_method": _method_text(doc)}
    if doc.src_ip:
        found["src_ip"] = one_line(doc.src_ip)
    if doc.request_id:
        found["request_id"] = one_line(doc.request_id)
    if evidence.change:
        found["change"] = one_line(evidence.change)
    if evidence.reference:
        found["reference"] = one_line(evidence.reference, 400)
    return found


def make_finding(
    rule: Rule,
    *,
    source_name: str,
    key: bytes,
    record_ids: Sequence[str],
    at: str,
    first_seen: str,
    actor: Actor | None,
    resources: list[ResourceRef],
    summary: str,
    evidence: dict[str, str],
) -> Finding:
    return Finding(
        id=finding_id(rule.id, source_name, key, record_ids),
        rule_id=rule.id,
        title=rule.title,
        severity=rule.severity,
        attack=rule.attack if rule.attack is not None else msgspec.UNSET,
        summary=summary,
        source_name=source_name,
        at=at,
        first_seen=first_seen,
        record_ids=list(record_ids),
        actor=actor,
        resources=resources,
        evidence=evidence,
    )


def record_finding(rule: Rule, doc: OutputDocument, evidence: Evidence) -> Finding:
    """The finding of a one-record rule that matched ``doc``."""
    return make_finding(
        rule,
        source_name=doc.source_name,
        key=b"",
        record_ids=[doc.id],
        at=doc.event_time,
        first_seen=doc.event_time,
        actor=doc.actor,
        resources=resources_of(doc, evidence.references),
        summary=render_summary(rule, record_values(rule, doc, evidence)),
        evidence=record_evidence(doc, evidence),
    )

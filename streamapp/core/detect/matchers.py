"""What a rule looks at in an output document: attributes, and the clauses of ``match``.

A rule's ``match`` is a list of clauses: the rule matches a document when any clause does
(OR); a clause matches when all its conditions do (AND); inside one condition the listed
values are alternatives (OR), as in routing rules. Conditions:

- on a document attribute (:data:`CLAUSE_ATTRIBUTES`): its value is one of those given;
- ``change``: some changed field is named in ``field`` and, when given, its new value is in
  ``to`` (and differs from the old one) and its old value is in ``from``; without ``to`` and
  ``from`` the field must have changed. Values compare as text, case-insensitively;
- ``reference``: some reference added (``side = "added"``, the default), removed, or either
  (``"any"``) is in the list ``list`` and its type and id match the patterns ``type`` and
  ``id`` (``*`` and ``?`` as in shell globs, case-insensitive).

What matched comes back as :class:`Evidence`, the words a finding's summary is made of.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from streamapp.core.output import Change, OutputDocument, ReferenceChange, ResourceRef

__all__ = [
    "ATTRIBUTES",
    "CLAUSE_ATTRIBUTES",
    "ChangeCondition",
    "Clause",
    "Evidence",
    "ReferenceCondition",
    "attribute",
    "text_of",
]


def _actor_id(doc: OutputDocument) -> str | None:
    return doc.actor.id if doc.actor else None


def _actor_type(doc: OutputDocument) -> str | None:
    return doc.actor.type if doc.actor else None


def _changed_type(doc: OutputDocument) -> str | None:
    return doc.resource.type if doc.resource else None


def _changed_id(doc: OutputDocument) -> str | None:
    return doc.resource.id if doc.resource else None


#: attributes a rule may group by or track (``group_by``, ``track``), read from a document
ATTRIBUTES: Final[dict[str, Callable[[OutputDocument], str | None]]] = {
    "actor_id": _actor_id,
    "actor_type": _actor_type,
    "auth_method": lambda doc: doc.auth_method,
    "src_ip": lambda doc: doc.src_ip,
    "truncated_token": lambda doc: doc.truncated_token,
    "action": lambda doc: doc.action,
    "category": lambda doc: doc.category,
    "resource_type": lambda doc: doc.resource_type,
    "root_resource_id": lambda doc: doc.root_resource.id,
    "changed_resource_type": _changed_type,
    "changed_resource_id": _changed_id,
}

#: attributes a clause may compare (``source`` is the document's ``source_name``)
CLAUSE_ATTRIBUTES: Final[dict[str, Callable[[OutputDocument], str | None]]] = {
    "category": ATTRIBUTES["category"],
    "action": ATTRIBUTES["action"],
    "resource_type": ATTRIBUTES["resource_type"],
    "changed_resource_type": _changed_type,
    "source": lambda doc: doc.source_name,
    "auth_method": ATTRIBUTES["auth_method"],
    "actor_type": _actor_type,
}


def attribute(doc: OutputDocument, name: str) -> str | None:
    """The value of attribute ``name`` (a key of :data:`ATTRIBUTES`); None when absent or
    empty."""
    value = ATTRIBUTES[name](doc)
    return value if value else None


def text_of(value: msgspec.Raw | msgspec.UnsetType) -> str | None:
    """A change's JSON value as text: strings as they are, null/absent as None, other JSON
    as its JSON text."""
    if isinstance(value, msgspec.UnsetType):
        return None
    try:
        decoded = msgspec.json.decode(bytes(value))
        if decoded is None or isinstance(decoded, str):
            return decoded
        return msgspec.json.encode(decoded).decode("utf-8")
    except (msgspec.DecodeError, msgspec.EncodeError, RecursionError):
        return None


def _fold(value: str | None) -> str | None:
    return value.casefold() if value is not None else None


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a clause matched: texts for the summary and references for ``resources``."""

    change: str | None = None
    reference: str | None = None
    references: tuple[ResourceRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeCondition:
    fields: frozenset[str]
    to: frozenset[str] | None = None
    from_: frozenset[str] | None = None

    def find(self, doc: OutputDocument) -> Change | None:
        """The first change of ``doc`` that meets the condition."""
        for change in doc.changes:
            if change.field.casefold() not in self.fields:
                continue
            before, after = _fold(text_of(change.before)), _fold(text_of(change.after))
            if self.to is not None and (after not in self.to or before == after):
                continue
            if self.from_ is not None and before not in self.from_:
                continue
            if self.to is None and self.from_ is None and before == after:
                continue
            return change
        return None


@dataclass(frozen=True, slots=True)
class ReferenceCondition:
    lists: frozenset[str] | None = None
    side: Literal["added", "removed", "any"] = "added"
    types: tuple[str, ...] | None = None
    ids: tuple[str, ...] | None = None

    def find(self, doc: OutputDocument) -> list[tuple[str, ReferenceChange]]:
        """Every reference of ``doc`` that meets the condition, with its side."""
        candidates: list[tuple[str, ReferenceChange]] = []
        if self.side in ("added", "any"):
            candidates += [("added", ref) for ref in doc.references_added]
        if self.side in ("removed", "any"):
            candidates += [("removed", ref) for ref in doc.references_removed]
        return [(side, ref) for side, ref in candidates if self._fits(ref)]

    def _fits(self, ref: ReferenceChange) -> bool:
        if self.lists is not None and ref.field.casefold() not in self.lists:
            return False
        if self.types is not None and not _glob(ref.type, self.types):
            return False
        return self.ids is None or _glob(ref.id, self.ids)


def _glob(value: str | None, patterns: tuple[str, ...]) -> bool:
    if value is None:
        return False
    folded = value.casefold()
    return any(fnmatch.fnmatchcase(folded, pattern) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class Clause:
    """Conditions that must all hold; ``values`` maps a clause attribute to allowed values."""

    values: tuple[tuple[str, frozenset[str]], ...] = ()
    change: ChangeCondition | None = None
    reference: ReferenceCondition | None = None

    def evaluate(self, doc: OutputDocument) -> Evidence | None:
        """The evidence when the clause matches ``doc``, else None."""
        for name, allowed in self.values:
            value = CLAUSE_ATTRIBUTES[name](doc)
            if value is None or value.casefold() not in allowed:
                return None
        evidence = Evidence()
        if self.change is not None:
            change = self.change.find(doc)
            if change is None:
                return None
            evidence = Evidence(change=describe_change(change))
        if self.reference is not None:
            found = self.reference.find(doc)
            if not found:
                return None
            evidence = Evidence(
                change=evidence.change,
                reference="; ".join(describe_reference(side, ref) for side, ref in found[:5])
                + (f" and {len(found) - 5} more" if len(found) > 5 else ""),
                references=tuple(
                    ResourceRef(id=ref.id, type=ref.type, name=ref.name) for _, ref in found[:20]
                ),
            )
        return evidence


def describe_change(change: Change) -> str:
    """``role: user → admin``; ``members.role = manager`` (new value only); ``role was x``."""
    before, after = text_of(change.before), text_of(change.after)
    if before is not None and after is not None:
        return f"{change.field}: {before} → {after}"
    if after is not None:
        return f"{change.field} = {after}"
    if before is not None:
        return f"{change.field} was {before}"
    return f"{change.field} cleared"


def describe_reference(side: str, ref: ReferenceChange) -> str:
    """``cidr_entries added 198.51.100.0/24 (Home VPN)``."""
    label = ref.id or ref.name or "?"
    if ref.name and ref.id and ref.name != ref.id:
        label = f"{ref.id} ({ref.name})"
    return f"{ref.field} {side} {label}"

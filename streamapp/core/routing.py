"""Routing: Kafka headers, the message key, and extra topics chosen by rules.

Every output document goes to ``pagerduty_audit_logs``; rules (a TOML file) may send it
*also* to further topics, e.g. only user-access changes to a topic a SOC watches::

    [[routes]]
    topic = "pagerduty_audit_logs.user_access"
    category = ["user_access"]        # each matcher optional: a string or a list of strings
    action = ["create", "delete"]     # all given matchers must match (AND),
    resource_type = ["user"]          # values inside one matcher are alternatives (OR)
    source = ["prod-us"]              # the source's name

A rule without matchers takes every record. Keys other than these are refused, like any
malformed value, with one :class:`~streamapp.core.errors.ConfigError` line naming file and key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from streamapp.core.categories import check_categories
from streamapp.core.errors import ConfigError
from streamapp.core.output import OutputDocument

#: Kafka headers on every output message, in this order (CONTRACT.md)
HEADER_NAMES: Final = ("source_name", "action", "resource_type", "category")

#: matcher key in the file → the document attribute it compares
MATCHERS: Final[dict[str, str]] = {
    "category": "category",
    "action": "action",
    "resource_type": "resource_type",
    "source": "source_name",
}

_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def headers_for(doc: OutputDocument) -> list[tuple[str, bytes]]:
    """The Kafka headers of an output message: ``HEADER_NAMES``, values UTF-8."""
    return [(name, str(getattr(doc, name)).encode("utf-8")) for name in HEADER_NAMES]


def message_key(doc: OutputDocument) -> bytes:
    """``{resource_type}:{root_resource.id}``, e.g. ``b"team:PXASDFE"``.

    Keyed by the root resource, not by record id: every change to one object (a user, a
    team, a service) lands on one partition, so a consumer sees them in the order they
    were published and can rebuild an object's history without re-sorting. The type is
    part of the key because PagerDuty ids are unique per type only. Records arrive
    newest-first within a poll window, so order on a partition is publish order; consumers
    that need execution order sort by ``event_time`` within a key.
    """
    return f"{doc.resource_type}:{doc.root_resource.id or ''}".encode()


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[routes]]`` table: ``matchers`` maps a document attribute to allowed values."""

    topic: str
    matchers: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, doc: OutputDocument) -> bool:
        return all(getattr(doc, attr) in allowed for attr, allowed in self.matchers)


@dataclass(frozen=True, slots=True)
class Router:
    """The extra topics of each document. No rules → no extra topics."""

    rules: tuple[Rule, ...] = ()

    @property
    def extra_topics(self) -> list[str]:
        """Every topic some rule can route to, deduplicated, in rule order (to declare them)."""
        return _unique(rule.topic for rule in self.rules)

    def topics_for(self, doc: OutputDocument) -> list[str]:
        """The extra topics ``doc`` goes to, deduplicated, in rule order."""
        if not self.rules:  # the common case, on the hot path
            return []
        return _unique(rule.topic for rule in self.rules if rule.matches(doc))

    @classmethod
    def from_toml_text(cls, text: str, *, origin: str | Path = "<routes>") -> Router:
        """Parse and validate a rules file's text; ``origin`` names it in error messages."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML: {_one_line(exc)}") from None
        return cls.from_mapping(data, origin=origin)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, origin: str | Path = "<routes>") -> Router:
        unknown = sorted(set(data) - {"routes"})
        if unknown:
            raise ConfigError(f"{origin}: unknown key {unknown[0]!r} (expected [[routes]])")
        routes = data.get("routes", [])
        if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
            raise ConfigError(f"{origin}: routes: must be an array of tables ([[routes]])")
        return cls(tuple(_rule(route, f"{origin}: routes[{i}]") for i, route in enumerate(routes)))


def load_rules(path: str | Path) -> Router:
    """Read a rules file; :class:`ConfigError` when it cannot be read or is malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read routing rules: {_one_line(reason)}") from None
    return Router.from_toml_text(text, origin=path)


def _rule(route: dict[str, Any], where: str) -> Rule:
    unknown = sorted(set(route) - {"topic", *MATCHERS})
    if unknown:
        allowed = ", ".join(["topic", *MATCHERS])
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {allowed})")
    if "topic" not in route:
        raise ConfigError(f"{where}.topic: missing")
    topic = route["topic"]
    if not isinstance(topic, str):
        raise ConfigError(f"{where}.topic: must be a string")
    if not topic:
        raise ConfigError(f"{where}.topic: must not be empty")
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise ConfigError(
            f"{where}.topic: {topic[:60]!r} is not a valid Kafka topic name "
            "(1-249 of a-z A-Z 0-9 . _ -)"
        )
    matchers = []
    for key, attr in MATCHERS.items():
        if key in route:
            matchers.append((attr, _values(route[key], f"{where}.{key}", key)))
    return Rule(topic=topic, matchers=tuple(matchers))


def _values(value: Any, where: str, key: str) -> frozenset[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: must be a string or a list of strings")
    if not values:
        raise ConfigError(f"{where}: must not be an empty list (leave the key out to match all)")
    if any(not v for v in values):
        raise ConfigError(f"{where}: values must not be empty strings")
    if key == "resource_type":
        values = [v.removesuffix("_reference") for v in values]
    if key == "category":
        check_categories(values, where)
    return frozenset(values)


def _unique(topics: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(topics))


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split())

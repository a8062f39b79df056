"""Detection rules as data: a TOML file, validated into :class:`~.rules.Rule` objects.

The built-in pack (``builtin.toml`` beside this module) is the default. A rules file
(``STREAMAPP_RULES_FILE``) adds rules to it, tunes or disables its rules per source, or,
with ``builtin = false``, replaces it::

    builtin = true                          # keep the built-in pack (the default)

    [[rules]]
    id = "service_deleted"                  # a-z, 0-9, _; unique
    title = "Service deleted"
    severity = "medium"                     # info, low, medium, high, critical
    attack = "T1485"                        # an id of attack.TECHNIQUES, or { id, name }
    description = "A service was deleted."  # one line: the README table's last column
    limits = "..."                          # optional: what PagerDuty records cannot tell
    summary = "{actor} deleted {resource}"  # optional template (see describe.placeholders)
    kind = "record"                         # record (default), burst or first_seen
    [[rules.match]]                         # clauses: any may match (OR) ...
    resource_type = "service"               # ... each condition must hold (AND)
    action = "delete"

    [overrides."prod-us".deletion_burst]    # per source ("*": every source)
    threshold = 20
    [overrides."*".new_source_ip_for_actor]
    enabled = false

Stateful kinds take parameters: ``burst`` (``threshold``, ``window``, ``group_by``) and
``first_seen`` (``track``, ``group_by``, ``retention``, ``learn_first``, ``max_values``); see
``stateful``. Unknown keys are refused like any malformed value: one
:class:`~streamapp.core.errors.ConfigError` line naming the file and the key.
"""

from __future__ import annotations

import re
import string
import tomllib
from datetime import timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, cast

from streamapp.core.categories import check_categories
from streamapp.core.detect.attack import TECHNIQUES, Attack, technique
from streamapp.core.detect.describe import placeholders
from streamapp.core.detect.finding import SEVERITIES, Severity
from streamapp.core.detect.matchers import (
    ATTRIBUTES,
    CLAUSE_ATTRIBUTES,
    ChangeCondition,
    Clause,
    ReferenceCondition,
)
from streamapp.core.detect.rules import (
    KINDS,
    BurstParams,
    FirstSeenParams,
    Kind,
    Override,
    Rule,
    RuleSet,
)
from streamapp.core.durations import format_duration, parse_duration
from streamapp.core.errors import ConfigError

__all__ = ["BUILTIN_ORIGIN", "builtin_rules", "load_rules", "parse_rules", "rules_from_mapping"]

#: how the built-in pack is named in error messages
BUILTIN_ORIGIN: Final = "streamapp/core/detect/builtin.toml"

_RULE_ID: Final = re.compile(r"[a-z][a-z0-9_]{1,63}")
_SOURCE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")

_MAX_THRESHOLD: Final = 1000
_MAX_WINDOW: Final = timedelta(days=7)
_MAX_RETENTION: Final = timedelta(days=400)
_MAX_VALUES: Final = 10_000

_COMMON_KEYS: Final = (
    "id",
    "title",
    "severity",
    "attack",
    "description",
    "limits",
    "summary",
    "enabled",
    "kind",
    "match",
)
_KIND_KEYS: Final[dict[Kind, tuple[str, ...]]] = {
    "record": (),
    "burst": ("threshold", "window", "group_by"),
    "first_seen": ("track", "group_by", "retention", "learn_first", "max_values"),
}
_OVERRIDE_KEYS: Final[dict[Kind, tuple[str, ...]]] = {
    "record": ("enabled", "severity"),
    "burst": ("enabled", "severity", "threshold", "window"),
    "first_seen": ("enabled", "severity", "retention", "learn_first", "max_values"),
}
_CLAUSE_KEYS: Final = (*CLAUSE_ATTRIBUTES, "change", "reference")
_CHANGE_KEYS: Final = ("field", "to", "from")
_REFERENCE_KEYS: Final = ("list", "side", "type", "id")


def parse_rules(text: str, *, origin: str | Path = "<rules>", builtin: bool = True) -> RuleSet:
    """Parse and validate a rules file's text; ``origin`` names it in errors.
    ``builtin=False`` reads the text as the built-in pack itself (no ``builtin`` key,
    nothing to merge)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {_one_line(exc)}") from None
    return rules_from_mapping(data, origin=origin, builtin=builtin)


def rules_from_mapping(
    data: dict[str, Any], *, origin: str | Path = "<rules>", builtin: bool = True
) -> RuleSet:
    """Validate a parsed rules file (see :func:`parse_rules`)."""
    allowed = ("builtin", "rules", "overrides") if builtin else ("rules",)
    _no_unknown(data, allowed, f"{origin}: ", top=True)
    base = RuleSet()
    if builtin and _bool(data.get("builtin", True), f"{origin}: builtin"):
        base = builtin_rules()
    items = data.get("rules", [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"{origin}: rules: must be an array of tables ([[rules]])")
    rules = list(base.rules)
    for index, item in enumerate(items):
        rule = _rule(item, f"{origin}: rules[{index}]")
        if any(known.id == rule.id for known in rules):
            hint = (
                " (a built-in rule: tune it under [overrides], or set builtin = false)"
                if base.get(rule.id)
                else ""
            )
            raise ConfigError(f"{origin}: rules[{index}].id: duplicate id {rule.id!r}{hint}")
        rules.append(rule)
    ruleset = RuleSet(tuple(rules))
    overrides = _overrides(data.get("overrides", {}), ruleset, f"{origin}: overrides")
    return RuleSet(ruleset.rules, overrides)


@lru_cache(maxsize=1)
def builtin_rules() -> RuleSet:
    """The built-in pack, shipped as package data (``builtin.toml``)."""
    text = resources.files(__package__).joinpath("builtin.toml").read_text(encoding="utf-8")
    return parse_rules(text, origin=BUILTIN_ORIGIN, builtin=False)


def load_rules(path: str | Path | None = None) -> RuleSet:
    """The rules of ``path`` (None: the built-in pack); ConfigError when the file cannot be
    read or is malformed."""
    if path is None:
        return builtin_rules()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read detection rules: {_one_line(reason)}") from None
    return parse_rules(text, origin=path)


# --- parsing: one function per table ---------------------------------------------------


def _rule(item: dict[str, Any], where: str) -> Rule:
    rule_id = _text(item.get("id"), f"{where}.id", limit=64)
    if not _RULE_ID.fullmatch(rule_id):
        raise ConfigError(
            f"{where}.id: {rule_id!r} is not a rule id (2-64 of a-z 0-9 _, starting with a letter)"
        )
    kind = _choice(item.get("kind", "record"), KINDS, f"{where}.kind")
    _no_unknown(item, (*_COMMON_KEYS, *_KIND_KEYS[kind]), f"{where}.", kind=kind)
    severity = cast(Severity, _choice(item.get("severity"), SEVERITIES, f"{where}.severity"))
    params: BurstParams | FirstSeenParams | None = None
    if kind == "burst":
        params = BurstParams(
            threshold=_int(item.get("threshold"), f"{where}.threshold", 2, _MAX_THRESHOLD),
            window=_duration(item.get("window"), f"{where}.window", _MAX_WINDOW),
            group_by=_attributes(item.get("group_by", ["actor_id"]), f"{where}.group_by"),
        )
    elif kind == "first_seen":
        track = _choice(item.get("track"), tuple(ATTRIBUTES), f"{where}.track")
        group_by = _attributes(item.get("group_by", []), f"{where}.group_by")
        if track in group_by:
            raise ConfigError(f"{where}.group_by: must not contain the tracked {track!r}")
        params = FirstSeenParams(
            track=track,
            group_by=group_by,
            retention=_duration(item.get("retention", "30d"), f"{where}.retention", _MAX_RETENTION),
            learn_first=_bool(item.get("learn_first", False), f"{where}.learn_first"),
            max_values=_int(item.get("max_values", 256), f"{where}.max_values", 1, _MAX_VALUES),
        )
    match = _match(item.get("match"), f"{where}.match", required=kind == "record")
    summary = None
    if "summary" in item:
        summary = _template(_text(item["summary"], f"{where}.summary", limit=300), kind, where)
    return Rule(
        id=rule_id,
        title=_text(item.get("title"), f"{where}.title", limit=120),
        severity=severity,
        description=_text(item.get("description"), f"{where}.description", limit=500),
        match=match,
        attack=_attack(item["attack"], f"{where}.attack") if "attack" in item else None,
        limits=_text(item["limits"], f"{where}.limits", limit=1000) if "limits" in item else "",
        summary=summary,
        enabled=_bool(item.get("enabled", True), f"{where}.enabled"),
        params=params,
    )


def _match(value: Any, where: str, *, required: bool) -> tuple[Clause, ...]:
    if value is None:
        if required:
            raise ConfigError(
                f"{where}: missing (a record rule needs at least one [[rules.match]])"
            )
        return ()
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(clause, dict) for clause in value):
        raise ConfigError(f"{where}: must be an array of tables ([[rules.match]])")
    if not value:
        raise ConfigError(f"{where}: must not be empty (leave it out to match every record)")
    return tuple(_clause(clause, f"{where}[{i}]") for i, clause in enumerate(value))


def _clause(table: dict[str, Any], where: str) -> Clause:
    _no_unknown(table, _CLAUSE_KEYS, f"{where}.")
    if not table:
        raise ConfigError(f"{where}: a clause needs at least one condition ({_keys(_CLAUSE_KEYS)})")
    values = []
    for name in CLAUSE_ATTRIBUTES:
        if name in table:
            values.append((name, _attribute_values(table[name], f"{where}.{name}", name)))
    change = _change(table["change"], f"{where}.change") if "change" in table else None
    reference = (
        _reference(table["reference"], f"{where}.reference") if "reference" in table else None
    )
    return Clause(values=tuple(values), change=change, reference=reference)


def _attribute_values(value: Any, where: str, name: str) -> frozenset[str]:
    values = _strings(value, where)
    if name in ("resource_type", "changed_resource_type", "actor_type"):
        values = [v.removesuffix("_reference") for v in values]
    if name == "category":
        check_categories(values, where)
    return frozenset(v.casefold() for v in values)


def _change(table: Any, where: str) -> ChangeCondition:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ({{ field = ..., to = ... }})")
    _no_unknown(table, _CHANGE_KEYS, f"{where}.")
    if "field" not in table:
        raise ConfigError(f"{where}.field: missing")

    def folded(key: str) -> frozenset[str] | None:
        if key not in table:
            return None
        return frozenset(v.casefold() for v in _strings(table[key], f"{where}.{key}"))

    fields = folded("field")
    assert fields is not None
    return ChangeCondition(fields=fields, to=folded("to"), from_=folded("from"))


def _reference(table: Any, where: str) -> ReferenceCondition:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ({{ list = ..., side = ... }})")
    _no_unknown(table, _REFERENCE_KEYS, f"{where}.")
    side = _choice(table.get("side", "added"), ("added", "removed", "any"), f"{where}.side")
    lists = (
        frozenset(v.casefold() for v in _strings(table["list"], f"{where}.list"))
        if "list" in table
        else None
    )

    def patterns(key: str) -> tuple[str, ...] | None:
        if key not in table:
            return None
        return tuple(v.casefold() for v in _strings(table[key], f"{where}.{key}"))

    return ReferenceCondition(
        lists=lists,
        side=cast(Literal["added", "removed", "any"], side),
        types=patterns("type"),
        ids=patterns("id"),
    )


def _attack(value: Any, where: str) -> Attack:
    if isinstance(value, dict):
        _no_unknown(value, ("id", "name"), f"{where}.")
        technique_id = _text(value.get("id"), f"{where}.id", limit=9)
        name: str | None = _text(value.get("name"), f"{where}.name", limit=200)
    elif isinstance(value, str):
        technique_id, name = value, None
    else:
        raise ConfigError(f"{where}: must be a technique id such as 'T1098.003' or {{ id, name }}")
    try:
        return technique(technique_id, name)
    except ValueError:
        raise ConfigError(
            f"{where}: {technique_id[:20]!r} is not an ATT&CK technique id (T1234 or T1234.001)"
        ) from None
    except KeyError:
        raise ConfigError(
            f"{where}: {technique_id!r} is not in the built-in technique table "
            f"({', '.join(TECHNIQUES)}); give it as {{ id = ..., name = ... }}"
        ) from None


def _template(text: str, kind: Kind, where: str) -> str:
    allowed = placeholders(kind)
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"{where}.summary: not a valid template: {_one_line(exc)}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name in allowed and (spec or conversion):
            raise ConfigError(
                f"{where}.summary: placeholder {{{name}}} takes no format or conversion"
            )
        if name not in allowed:
            raise ConfigError(
                f"{where}.summary: unknown placeholder {{{name}}} (allowed for a {kind} rule: "
                f"{', '.join('{' + p + '}' for p in sorted(allowed))})"
            )
    return text


def _overrides(value: Any, ruleset: RuleSet, where: str) -> dict[str, dict[str, Override]]:
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: must be a table ([overrides."SOURCE".RULE_ID])')
    result: dict[str, dict[str, Override]] = {}
    for source, per_rule in value.items():
        source_where = f"{where}.{_key(source)}"
        if source != "*" and not _SOURCE.fullmatch(source):
            raise ConfigError(
                f"{source_where}: not a source name (1-64 letters, digits, '.', '_', '-'; "
                "'*' for every source)"
            )
        if not isinstance(per_rule, dict):
            raise ConfigError(
                f'{source_where}: must be a table of rules ([overrides."{source}".RULE_ID])'
            )
        result[source] = {}
        for rule_id, table in per_rule.items():
            rule_where = f"{source_where}.{_key(rule_id)}"
            rule = ruleset.get(rule_id)
            if rule is None:
                raise ConfigError(f"{rule_where}: no rule has this id")
            if not isinstance(table, dict):
                raise ConfigError(f"{rule_where}: must be a table (enabled, severity, ...)")
            result[source][rule_id] = _override(table, rule, rule_where)
    return result


def _override(table: dict[str, Any], rule: Rule, where: str) -> Override:
    _no_unknown(table, _OVERRIDE_KEYS[rule.kind], f"{where}.", kind=rule.kind, overriding=True)
    if not table:
        raise ConfigError(f"{where}: empty (set enabled, severity or a parameter)")
    get = table.get
    return Override(
        enabled=_bool(get("enabled"), f"{where}.enabled") if "enabled" in table else None,
        severity=(
            cast(Severity, _choice(get("severity"), SEVERITIES, f"{where}.severity"))
            if "severity" in table
            else None
        ),
        threshold=(
            _int(get("threshold"), f"{where}.threshold", 2, _MAX_THRESHOLD)
            if "threshold" in table
            else None
        ),
        window=(
            _duration(get("window"), f"{where}.window", _MAX_WINDOW) if "window" in table else None
        ),
        retention=(
            _duration(get("retention"), f"{where}.retention", _MAX_RETENTION)
            if "retention" in table
            else None
        ),
        learn_first=(
            _bool(get("learn_first"), f"{where}.learn_first") if "learn_first" in table else None
        ),
        max_values=(
            _int(get("max_values"), f"{where}.max_values", 1, _MAX_VALUES)
            if "max_values" in table
            else None
        ),
    )


# --- value readers: each raises one ConfigError line naming ``where`` --------------------


def _no_unknown(
    table: dict[str, Any],
    allowed: tuple[str, ...],
    prefix: str,
    *,
    kind: Kind | None = None,
    top: bool = False,
    overriding: bool = False,
) -> None:
    unknown = sorted(set(table) - set(allowed))
    if not unknown:
        return
    what = f" for a {kind} rule" if kind else ""
    if overriding:
        what = f" to override a {kind} rule"
    if top:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (allowed: {_keys(allowed)})")
    raise ConfigError(f"{prefix}{_key(unknown[0])}: unknown key (allowed{what}: {_keys(allowed)})")


def _text(value: Any, where: str, *, limit: int) -> str:
    if value is None:
        raise ConfigError(f"{where}: missing")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string")
    text = " ".join(value.split())
    if not text:
        raise ConfigError(f"{where}: must not be empty")
    if len(text) > limit:
        raise ConfigError(f"{where}: longer than {limit} characters")
    return text


def _strings(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: must be a string or a list of strings")
    if not values:
        raise ConfigError(f"{where}: must not be an empty list")
    if any(not v.strip() for v in values):
        raise ConfigError(f"{where}: values must not be empty strings")
    return [v.strip() for v in values]


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> Any:
    if value is None:
        raise ConfigError(f"{where}: missing (one of {', '.join(allowed)})")
    if not isinstance(value, str) or value not in allowed:
        shown = repr(value)[:60]
        raise ConfigError(f"{where}: {shown} is not one of {', '.join(allowed)}")
    return value


def _attributes(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, list) and not value:
        return ()
    names = _strings(value, where)
    for name in names:
        if name not in ATTRIBUTES:
            raise ConfigError(f"{where}: {name[:60]!r} is not one of {', '.join(ATTRIBUTES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: names an attribute twice")
    return tuple(names)


def _int(value: Any, where: str, low: int, high: int) -> int:
    if value is None:
        raise ConfigError(f"{where}: missing (an integer from {low} to {high})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer from {low} to {high}, got {value!r:.60}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: must be from {low} to {high}, got {value}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r:.60}")
    return value


def _duration(value: Any, where: str, most: timedelta) -> timedelta:
    if value is None:
        raise ConfigError(f"{where}: missing (a duration such as 30s, 10m, 24h or 30d)")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as 30s, 10m, 24h or 30d")
    duration = parse_duration(value, what=where)
    if duration > most:
        raise ConfigError(f"{where}: at most {format_duration(most)}, got {value!r}")
    return duration


def _key(name: str) -> str:
    """A TOML key as written in a dotted path: bare when it can be, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"')[:64] + '"'


def _keys(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split())

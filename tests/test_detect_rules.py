"""Rules files: what they may say, and one ConfigError line (file and key) for each mistake."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.core.detect import builtin_rules, load_rules, parse_rules, rules_from_mapping
from streamapp.core.detect.rules import BurstParams, FirstSeenParams
from streamapp.core.errors import ConfigError
from tests.helpers import edited
from tests.helpers import toml_document as document

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


#: a valid record rule, for ``rule`` to edit
RULE: dict[str, Any] = {
    "id": "custom_rule",
    "title": "Custom",
    "severity": "low",
    "description": "Something.",
    "match": [{"action": "delete"}],
}


def rule(**changes: Any) -> dict[str, Any]:
    """RULE with ``changes`` (a change to ``...`` drops the key)."""
    return edited(RULE, **changes)


def burst(**changes: Any) -> dict[str, Any]:
    return rule(**{"kind": "burst", "threshold": 5, "window": "5m", **changes})


def first_seen(**changes: Any) -> dict[str, Any]:
    return rule(**{"kind": "first_seen", "track": "src_ip", **changes})


BAD: list[tuple[str, str]] = [
    ("rules = [", "r.toml: not valid TOML: "),
    (document(colour=1), "r.toml: colour: unknown key (allowed: builtin, rules, overrides)"),
    (document(builtin="yes"), "r.toml: builtin: must be true or false"),
    (document(rules=3), "r.toml: rules: must be an array of tables ([[rules]])"),
    (document(rules=[rule(id=...)]), "r.toml: rules[0].id: missing"),
    (document(rules=[rule(id="Bad-Id")]), "r.toml: rules[0].id: 'Bad-Id' is not a rule id"),
    (document(rules=[rule(id=7)]), "r.toml: rules[0].id: must be a string"),
    (
        document(rules=[rule(), rule()]),
        "r.toml: rules[1].id: duplicate id 'custom_rule'",
    ),
    (
        document(rules=[rule(id="user_created")]),
        "r.toml: rules[0].id: duplicate id 'user_created' (a built-in rule: tune it under "
        "[overrides], or set builtin = false)",
    ),
    (
        document(rules=[rule(colour="red")]),
        "r.toml: rules[0].colour: unknown key (allowed for a record rule: id, title,",
    ),
    (
        document(rules=[rule(threshold=3)]),
        "r.toml: rules[0].threshold: unknown key (allowed for a record rule:",
    ),
    (
        document(rules=[first_seen(window="5m")]),
        "r.toml: rules[0].window: unknown key (allowed for a first_seen rule:",
    ),
    (
        document(rules=[rule(kind="window")]),
        "r.toml: rules[0].kind: 'window' is not one of record, burst, first_seen",
    ),
    (
        document(rules=[rule(severity="urgent")]),
        "r.toml: rules[0].severity: 'urgent' is not one of info, low, medium, high, critical",
    ),
    (document(rules=[rule(severity=...)]), "r.toml: rules[0].severity: missing"),
    (document(rules=[rule(title=...)]), "r.toml: rules[0].title: missing"),
    (document(rules=[rule(title="  ")]), "r.toml: rules[0].title: must not be empty"),
    (
        document(rules=[rule(description="x" * 501)]),
        "r.toml: rules[0].description: longer than 500 characters",
    ),
    (document(rules=[rule(enabled="no")]), "r.toml: rules[0].enabled: must be true or false"),
    (
        document(rules=[rule(attack="T9999")]),
        "r.toml: rules[0].attack: 'T9999' is not in the built-in technique table",
    ),
    (
        document(rules=[rule(attack="1098")]),
        "r.toml: rules[0].attack: '1098' is not an ATT&CK technique id",
    ),
    (
        document(rules=[rule(attack={"id": "T1199", "name": "x", "url": "y"})]),
        "r.toml: rules[0].attack.url: unknown key (allowed: id, name)",
    ),
    (
        document(rules=[rule(attack={"id": "T1199"})]),
        "r.toml: rules[0].attack.name: missing",
    ),
    (document(rules=[rule(attack=3)]), "r.toml: rules[0].attack: must be a technique id"),
    (
        document(rules=[rule(match=...)]),
        "r.toml: rules[0].match: missing (a record rule needs at least one [[rules.match]])",
    ),
    (document(rules=[rule(match=[])]), "r.toml: rules[0].match: must not be empty"),
    (document(rules=[rule(match="delete")]), "r.toml: rules[0].match: must be an array of tables"),
    (
        document(rules=[rule(match=[{}])]),
        "r.toml: rules[0].match[0]: a clause needs at least one condition",
    ),
    (
        document(rules=[rule(match=[{"action": "delete"}, {"colour": "red"}])]),
        "r.toml: rules[0].match[1].colour: unknown key (allowed: category, action,",
    ),
    (
        document(rules=[rule(match=[{"category": "security"}])]),
        "r.toml: rules[0].match[0].category: unknown category 'security'",
    ),
    (
        document(rules=[rule(match=[{"action": 3}])]),
        "r.toml: rules[0].match[0].action: must be a string or a list of strings",
    ),
    (
        document(rules=[rule(match=[{"action": []}])]),
        "r.toml: rules[0].match[0].action: must not be an empty list",
    ),
    (
        document(rules=[rule(match=[{"action": ["delete", ""]}])]),
        "r.toml: rules[0].match[0].action: values must not be empty strings",
    ),
    (
        document(rules=[rule(match=[{"change": {"to": "admin"}}])]),
        "r.toml: rules[0].match[0].change.field: missing",
    ),
    (
        document(rules=[rule(match=[{"change": {"field": "role", "value": "admin"}}])]),
        "r.toml: rules[0].match[0].change.value: unknown key (allowed: field, to, from)",
    ),
    (
        document(rules=[rule(match=[{"change": "role"}])]),
        "r.toml: rules[0].match[0].change: must be a table",
    ),
    (
        document(rules=[rule(match=[{"reference": {"side": "both"}}])]),
        "r.toml: rules[0].match[0].reference.side: 'both' is not one of added, removed, any",
    ),
    (
        document(rules=[rule(match=[{"reference": {"kind": "x"}}])]),
        "r.toml: rules[0].match[0].reference.kind: unknown key (allowed: list, side, type, id)",
    ),
    (
        document(rules=[burst(threshold=...)]),
        "r.toml: rules[0].threshold: missing (an integer from 2 to 1000)",
    ),
    (document(rules=[burst(threshold=1)]), "r.toml: rules[0].threshold: must be from 2 to 1000"),
    (
        document(rules=[burst(threshold="20")]),
        "r.toml: rules[0].threshold: must be an integer from 2 to 1000, got '20'",
    ),
    (
        document(rules=[burst(threshold=True)]),
        "r.toml: rules[0].threshold: must be an integer from 2 to 1000, got True",
    ),
    (
        document(rules=[burst(window="10 minutes")]),
        "r.toml: rules[0].window: expected a duration such as 30s, 90m, 24h or 7d",
    ),
    (document(rules=[burst(window="30d")]), "r.toml: rules[0].window: at most 7d, got '30d'"),
    (document(rules=[burst(window="0s")]), "r.toml: rules[0].window: must be greater than zero"),
    (document(rules=[burst(window=[1])]), "r.toml: rules[0].window: expected a duration"),
    (
        document(rules=[burst(group_by=["actor"])]),
        "r.toml: rules[0].group_by: 'actor' is not one of actor_id, actor_type,",
    ),
    (
        document(rules=[burst(group_by=["actor_id", "actor_id"])]),
        "r.toml: rules[0].group_by: names an attribute twice",
    ),
    (
        document(rules=[first_seen(track=...)]),
        "r.toml: rules[0].track: missing (one of actor_id,",
    ),
    (
        document(rules=[first_seen(track="ip")]),
        "r.toml: rules[0].track: 'ip' is not one of actor_id,",
    ),
    (
        document(rules=[first_seen(group_by=["src_ip"])]),
        "r.toml: rules[0].group_by: must not contain the tracked 'src_ip'",
    ),
    (
        document(rules=[first_seen(retention="500d")]),
        "r.toml: rules[0].retention: at most 400d",
    ),
    (
        document(rules=[first_seen(max_values=0)]),
        "r.toml: rules[0].max_values: must be from 1 to 10000, got 0",
    ),
    (
        document(rules=[first_seen(learn_first=1)]),
        "r.toml: rules[0].learn_first: must be true or false, got 1",
    ),
    (
        document(rules=[rule(summary="{actor.__class__}")]),
        "r.toml: rules[0].summary: unknown placeholder {actor.__class__} (allowed for a record",
    ),
    (
        document(rules=[rule(summary="{0} did it")]),
        "r.toml: rules[0].summary: unknown placeholder {0}",
    ),
    (
        document(rules=[rule(summary="{count} deletions")]),
        "r.toml: rules[0].summary: unknown placeholder {count} (allowed for a record rule:",
    ),
    (
        document(rules=[rule(summary="{actor!r}")]),
        "r.toml: rules[0].summary: placeholder {actor} takes no format or conversion",
    ),
    (
        document(rules=[rule(summary="{actor:>99999}")]),
        "r.toml: rules[0].summary: placeholder {actor} takes no format or conversion",
    ),
    (document(rules=[rule(summary="{actor")]), "r.toml: rules[0].summary: not a valid template"),
    (document(overrides=3), 'r.toml: overrides: must be a table ([overrides."SOURCE".RULE_ID])'),
    (
        document(overrides={"prod us": {"deletion_burst": {"threshold": 20}}}),
        'r.toml: overrides."prod us": not a source name',
    ),
    (
        document(overrides={"prod-us": 3}),
        "r.toml: overrides.prod-us: must be a table of rules",
    ),
    (
        document(overrides={"prod-us": {"no_such_rule": {"enabled": False}}}),
        "r.toml: overrides.prod-us.no_such_rule: no rule has this id",
    ),
    (
        document(overrides={"prod-us": {"deletion_burst": True}}),
        "r.toml: overrides.prod-us.deletion_burst: must be a table",
    ),
    (
        document(overrides={"prod-us": {"deletion_burst": {}}}),
        "r.toml: overrides.prod-us.deletion_burst: empty",
    ),
    (
        document(overrides={"prod-us": {"deletion_burst": {"treshold": 20}}}),
        "r.toml: overrides.prod-us.deletion_burst.treshold: unknown key (allowed to override "
        "a burst rule: enabled, severity, threshold, window)",
    ),
    (
        document(overrides={"*": {"user_created": {"threshold": 2}}}),
        'r.toml: overrides."*".user_created.threshold: unknown key (allowed to override a '
        "record rule: enabled, severity)",
    ),
    (
        document(overrides={"prod-us": {"deletion_burst": {"threshold": 0}}}),
        "r.toml: overrides.prod-us.deletion_burst.threshold: must be from 2 to 1000",
    ),
    (
        document(overrides={"prod.eu": {"new_source_ip_for_actor": {"retention": "forever"}}}),
        'r.toml: overrides."prod.eu".new_source_ip_for_actor.retention: expected a duration',
    ),
    (
        document(overrides={"prod-us": {"deletion_burst": {"enabled": "false"}}}),
        "r.toml: overrides.prod-us.deletion_burst.enabled: must be true or false",
    ),
    (
        document(overrides={"prod-us": {"deletion_burst": {"severity": "severe"}}}),
        "r.toml: overrides.prod-us.deletion_burst.severity: 'severe' is not one of",
    ),
    (
        document(builtin=False, overrides={"prod-us": {"deletion_burst": {"enabled": False}}}),
        "r.toml: overrides.prod-us.deletion_burst: no rule has this id",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[8:60] for _, m in BAD])
def test_bad_rules_file_is_one_config_error_line_naming_file_and_key(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, origin="r.toml")
    error = caught.value
    assert str(error).startswith(message), str(error)
    assert "\n" not in str(error)
    # nothing chained: the line is the whole story
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_rules_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent.toml: cannot read detection rules: No such"):
        load_rules(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary.toml: cannot read detection rules: "):
        load_rules(binary)


def test_a_bad_file_on_disk_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[overrides."prod-us".deletion_burst]\nthreshold = "many"\n')
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}: overrides.prod-us.deletion_burst.threshold:")


def test_no_file_means_the_builtin_pack() -> None:
    assert load_rules(None) is builtin_rules()
    assert parse_rules("").rules == builtin_rules().rules


def test_overrides_tune_each_source_and_star_sets_every_source() -> None:
    rules = parse_rules(
        """
        [overrides."*".deletion_burst]
        threshold = 15
        window = "30m"

        [overrides."prod-us".deletion_burst]
        threshold = 20

        [overrides."prod-eu".deletion_burst]
        enabled = false

        [overrides."prod-us".new_source_ip_for_actor]
        retention = "7d"
        learn_first = false
        max_values = 10
        severity = "medium"
        """
    )

    def effective(source: str, rule_id: str):
        return next((r for r in rules.for_source(source) if r.id == rule_id), None)

    us = effective("prod-us", "deletion_burst")
    assert us is not None and us.params == BurstParams(
        threshold=20, window=timedelta(minutes=30), group_by=("actor_id",)
    )
    other = effective("other", "deletion_burst")
    assert other is not None and isinstance(other.params, BurstParams)
    assert other.params.threshold == 15
    assert effective("prod-eu", "deletion_burst") is None
    ip = effective("prod-us", "new_source_ip_for_actor")
    assert ip is not None and ip.severity == "medium"
    assert ip.params == FirstSeenParams(
        track="src_ip",
        group_by=("actor_id",),
        retention=timedelta(days=7),
        learn_first=False,
        max_values=10,
    )
    builtin = builtin_rules().get("deletion_burst")
    assert builtin is not None and isinstance(builtin.params, BurstParams)
    assert builtin.params.threshold == 10  # the pack itself is untouched


def test_a_rule_disabled_in_the_file_is_off_everywhere_unless_a_source_enables_it() -> None:
    rules = parse_rules(
        document(
            builtin=False,
            rules=[rule(id="quiet_rule", enabled=False)],
            overrides={"prod-us": {"quiet_rule": {"enabled": True}}},
        )
    )
    assert [r.id for r in rules.for_source("prod-us")] == ["quiet_rule"]
    assert rules.for_source("prod-eu") == ()


def test_matcher_values_read_like_routing_rules() -> None:
    clause = {
        "resource_type": ["USER_reference", "team"],
        "actor_type": "api_key_reference",
        "change": {"field": "Role", "to": "ADMIN"},
        "reference": {"list": "members", "side": "any", "type": "User*"},
    }
    rules = parse_rules(document(builtin=False, rules=[rule(id="typed", match=[clause])]))
    [matcher] = rules.rules[0].match
    assert dict(matcher.values) == {
        "resource_type": frozenset({"user", "team"}),
        "actor_type": frozenset({"api_key"}),
    }
    assert matcher.change is not None and matcher.change.fields == frozenset({"role"})
    assert matcher.change.to == frozenset({"admin"})
    assert matcher.reference is not None and matcher.reference.types == ("user*",)


# --- any input: ConfigError or a rule set, nothing else ---------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2000),
    st.sampled_from(
        [
            "delete",
            "user",
            "10m",
            "30d",
            "T1485",
            "high",
            "burst",
            "first_seen",
            "src_ip",
            "",
            "{x}",
        ]
    ),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "title",
                    "severity",
                    "description",
                    "kind",
                    "match",
                    "threshold",
                    "window",
                    "track",
                    "group_by",
                    "action",
                    "change",
                    "field",
                    "to",
                    "reference",
                    "summary",
                    "attack",
                    "enabled",
                    "prod-us",
                    "deletion_burst",
                    "*",
                ]
            ),
            inner,
            max_size=6,
        ),
    ),
    max_leaves=25,
)


@FAST
@given(
    st.dictionaries(st.sampled_from(["builtin", "rules", "overrides", "other"]), VALUES, max_size=3)
)
def test_any_mapping_gives_a_rule_set_or_one_config_error_line(data: dict[str, Any]) -> None:
    try:
        rules_from_mapping(data, origin="fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ") and "\n" not in str(exc)


@FAST
@given(st.text(max_size=200))
def test_any_text_gives_a_rule_set_or_one_config_error_line(text: str) -> None:
    try:
        parse_rules(text, origin="fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ") and "\n" not in str(exc)

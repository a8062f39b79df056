"""The README's tables are the code's own: the settings the code accepts, the categories it
assigns, and CONTRACT.md's variables and topics, all kept in sync."""

from __future__ import annotations

import re
from pathlib import Path

from streamapp.config import SETTINGS_TABLE, Topics
from streamapp.core.categories import CATEGORY_TABLE

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def table(marker: str) -> list[tuple[str, ...]]:
    block = README.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("|")][2:]
    return [tuple(cell.strip() for cell in row.strip("|").split(" | ")) for row in rows]


def test_readme_configuration_table_equals_the_settings_the_code_accepts():
    expected = [(f"`{name}`", default, meaning) for name, default, meaning in SETTINGS_TABLE]
    assert table("settings-table") == expected


def test_readme_category_table_equals_the_code():
    expected = [(f"`{name}`", what, meaning) for name, what, meaning in CATEGORY_TABLE]
    assert table("category-table") == expected


def test_every_contract_variable_is_accepted_and_documented():
    # a copy of the product's outside interface, kept with the tests
    text = (ROOT / "tests" / "reference" / "CONTRACT.md").read_text()
    section = text.split("## Configuration")[1].split("##")[0]
    variables = set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.M))
    accepted = {name for name, _, _ in SETTINGS_TABLE}
    assert variables and variables <= accepted


def test_readme_names_every_topic():
    for topic in (Topics().raw, Topics().output, Topics().notifications, Topics().dlq):
        assert f"`{topic}`" in README


def test_readme_starts_with_the_two_commands():
    head = README[:1500]
    assert "make run" in head and "make test" in head


def test_readme_rule_table_equals_the_built_in_pack():
    from streamapp.core.detect import RULE_TABLE

    expected = [(f"`{rule_id}`", *rest) for rule_id, *rest in RULE_TABLE]
    assert table("rule-table") == expected


def test_every_variable_the_contract_adds_this_round_is_accepted_and_documented():
    text = (ROOT / "tests" / "reference" / "CONTRACT.md").read_text()
    added = text.split("Added in this round")[1].split("##")[0]
    variables = set(re.findall(r"`([A-Z][A-Z_]+)`", added))
    accepted = {name for name, _, _ in SETTINGS_TABLE}
    assert {"STREAMAPP_WEB_BIND", "STREAMAPP_ECS", "STREAMAPP_GEOIP_DB"} <= variables
    assert variables <= accepted
    for topic in ("pagerduty_audit_logs.ecs", "pagerduty_audit_findings"):
        assert f"`{topic}`" in README

"""The README's table of built-in rules, derived from the pack so a test can compare them.

:data:`RULE_TABLE` rows are ``(rule id, title, severity, ATT&CK, what it detects)``;
:func:`rule_table_markdown` renders them between ``<!-- rule-table:start -->`` and
``<!-- rule-table:end -->`` in the README's table style (id in backticks).
"""

from __future__ import annotations

from typing import Final

from streamapp.core.detect.load import builtin_rules
from streamapp.core.detect.rules import Rule, RuleSet

__all__ = ["RULE_TABLE", "attack_cell", "rule_table", "rule_table_markdown"]

_NONE: Final = "—"


def attack_cell(rule: Rule) -> str:
    """``T1098.003 Account Manipulation: Additional Cloud Roles``, or ``—``."""
    return f"{rule.attack.id} {rule.attack.name}" if rule.attack else _NONE


def rule_table(rules: RuleSet | None = None) -> list[tuple[str, str, str, str, str]]:
    """One row per rule of ``rules`` (None: the built-in pack), in file order."""
    pack = rules if rules is not None else builtin_rules()
    return [
        (rule.id, rule.title, rule.severity, attack_cell(rule), rule.description)
        for rule in pack.rules
    ]


#: the built-in pack's rows: (rule id, title, severity, ATT&CK, what it detects)
RULE_TABLE: Final[list[tuple[str, str, str, str, str]]] = rule_table()


def rule_table_markdown(rules: RuleSet | None = None) -> str:
    """The Markdown table with its markers, newline-terminated."""
    lines = [
        "<!-- rule-table:start -->",
        "| rule | title | severity | ATT&CK | what it detects |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rule_id, title, severity, attack, detects in rule_table(rules):
        lines.append(f"| `{rule_id}` | {title} | {severity} | {attack} | {detects} |")
    lines.append("<!-- rule-table:end -->")
    return "\n".join(lines) + "\n"

"""Detections: rules over enriched audit records, findings on ``pagerduty_audit_findings``.

Pure (no faust, no Kafka): the worker feeds output documents in and publishes what
comes out. The flow, by module::

    load.py      TOML → a RuleSet (built-in pack: builtin.toml), one error line per mistake
    rules.py     Rule, its parameters and per-source overrides; RuleSet
    matchers.py  what a rule's ``match`` clauses compare in a document
    stateful.py  burst / first_seen state machines: state_key, step, expire (state as bytes)
    engine.py    Detector: every rule over one document, with a state lookup
    describe.py  the words of a finding (summary templates)
    finding.py   the Finding document, its stable id, its encoder
    replay.py    ``rules test FILE``: records from a file → findings → lines for a person
    table.py     RULE_TABLE: the README's table of built-in rules
"""

from __future__ import annotations

from streamapp.core.detect.attack import TECHNIQUES, Attack
from streamapp.core.detect.engine import Detector, StateLookup
from streamapp.core.detect.finding import (
    SEVERITIES,
    Finding,
    Severity,
    decode_finding,
    encode_finding,
    finding_id,
    finding_key,
)
from streamapp.core.detect.load import builtin_rules, load_rules, parse_rules, rules_from_mapping
from streamapp.core.detect.replay import (
    ReplayInputError,
    read_records,
    render_findings,
    replay,
    replay_documents,
)
from streamapp.core.detect.rules import Rule, RuleSet
from streamapp.core.detect.stateful import decode_state, expire, state_key, step
from streamapp.core.detect.table import RULE_TABLE, rule_table, rule_table_markdown

__all__ = [
    "RULE_TABLE",
    "SEVERITIES",
    "TECHNIQUES",
    "Attack",
    "Detector",
    "Finding",
    "ReplayInputError",
    "Rule",
    "RuleSet",
    "Severity",
    "StateLookup",
    "builtin_rules",
    "decode_finding",
    "decode_state",
    "encode_finding",
    "expire",
    "finding_id",
    "finding_key",
    "load_rules",
    "parse_rules",
    "read_records",
    "render_findings",
    "replay",
    "replay_documents",
    "rule_table",
    "rule_table_markdown",
    "rules_from_mapping",
    "state_key",
    "step",
]

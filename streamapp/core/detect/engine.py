"""The detector: every rule of a rule set over one output document at a time.

One-record rules need nothing but the document. Stateful rules need the state stored under
their key; :meth:`Detector.evaluate` reads it through a lookup function and returns what
to store, so it runs the same against a dict (replays, tests) and against a table.

In the worker, where a table is partitioned by key and a document's stateful keys differ
per rule (one per actor, one per source...), the state of a key must be read on the
partition that owns the key: send ``(key, document)`` for each of :meth:`Detector.keyed`
through a topic keyed by ``key`` and :func:`~streamapp.core.detect.stateful.step` it there;
findings of one-record rules come from :meth:`Detector.stateless` where the document is
read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from streamapp.core.detect.describe import record_finding
from streamapp.core.detect.finding import Finding
from streamapp.core.detect.load import builtin_rules
from streamapp.core.detect.rules import Rule, RuleSet
from streamapp.core.detect.stateful import expire, state_key, step
from streamapp.core.output import OutputDocument

__all__ = ["Detector", "StateLookup"]

#: reads the state stored under a key; None when there is none
StateLookup = Callable[[bytes], bytes | None]


class Detector:
    """Rules in effect per source, and their evaluation. Holds no state of its own but a
    cache of each source's effective rules."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self.rules = rules if rules is not None else builtin_rules()
        self._by_source: dict[str, tuple[Rule, ...]] = {}

    def rules_for(self, source_name: str) -> tuple[Rule, ...]:
        """The enabled rules of ``source_name``, overrides applied (cached)."""
        rules = self._by_source.get(source_name)
        if rules is None:
            rules = self._by_source[source_name] = self.rules.for_source(source_name)
        return rules

    def rule(self, source_name: str, rule_id: str) -> Rule | None:
        """Rule ``rule_id`` as in effect for ``source_name``; None when unknown or disabled."""
        return next((r for r in self.rules_for(source_name) if r.id == rule_id), None)

    def stateless(self, doc: OutputDocument) -> list[Finding]:
        """The findings of the one-record rules for ``doc``, in rule order."""
        findings = []
        for rule in self.rules_for(doc.source_name):
            if rule.params is None:
                evidence = rule.evidence(doc)
                if evidence is not None:
                    findings.append(record_finding(rule, doc, evidence))
        return findings

    def keyed(self, doc: OutputDocument) -> list[tuple[Rule, bytes]]:
        """The stateful rules that keep state for ``doc``, each with its state key."""
        found = []
        for rule in self.rules_for(doc.source_name):
            if rule.params is not None:
                key = state_key(rule, doc)
                if key is not None:
                    found.append((rule, key))
        return found

    def step(
        self, rule_id: str, state: bytes | None, doc: OutputDocument
    ) -> tuple[bytes | None, list[Finding]]:
        """:func:`stateful.step` for the rule named ``rule_id`` as in effect for ``doc``'s
        source; the state unchanged and no findings when that rule is unknown or disabled."""
        rule = self.rule(doc.source_name, rule_id)
        if rule is None:
            return state, []
        return step(rule, state, doc)

    def evaluate(
        self, doc: OutputDocument, state_lookup: StateLookup
    ) -> tuple[list[Finding], dict[bytes, bytes | None]]:
        """Every rule over ``doc``: the findings (one-record rules', then stateful rules', each
        in rule order) and the states to store by key (None: delete the key). Only keys whose
        state changed are in the map."""
        findings = self.stateless(doc)
        updates: dict[bytes, bytes | None] = {}
        for rule, key in self.keyed(doc):
            state = updates[key] if key in updates else state_lookup(key)
            new_state, found = step(rule, state, doc)
            if new_state is not state:
                updates[key] = new_state
            findings.extend(found)
        return findings, updates

    @staticmethod
    def expire(state: bytes | None, now: datetime) -> bytes | None:
        """:func:`stateful.expire`: what a key's state still needs at ``now``."""
        return expire(state, now)

"""Detection rules, the model: what a rule matches, how it is tuned per source.

A :class:`RuleSet` holds the rules in file order and the per-source overrides; a rule is
read from TOML by ``streamapp.core.detect.load`` (the file format is described there).
``params`` makes a rule stateful: :class:`BurstParams` or :class:`FirstSeenParams`
(``streamapp.core.detect.stateful``); a rule without them judges one record at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any, Final, Literal

from streamapp.core.detect.attack import Attack
from streamapp.core.detect.finding import Severity
from streamapp.core.detect.matchers import Clause, Evidence
from streamapp.core.output import OutputDocument

__all__ = ["KINDS", "BurstParams", "FirstSeenParams", "Kind", "Override", "Rule", "RuleSet"]

Kind = Literal["record", "burst", "first_seen"]
KINDS: Final[tuple[Kind, ...]] = ("record", "burst", "first_seen")


@dataclass(frozen=True, slots=True)
class BurstParams:
    """``threshold`` matching records within ``window`` in one group → one finding."""

    threshold: int
    window: timedelta
    group_by: tuple[str, ...] = ("actor_id",)


@dataclass(frozen=True, slots=True)
class FirstSeenParams:
    """A value of ``track`` not seen in ``retention`` for the group → a finding."""

    track: str
    group_by: tuple[str, ...] = ()
    retention: timedelta = timedelta(days=30)
    #: learn the first value of a group with nothing known yet without firing
    learn_first: bool = False
    #: most values remembered per group (the least recently seen go first)
    max_values: int = 256


@dataclass(frozen=True, slots=True)
class Rule:
    """One detection rule, as written or as in effect for a source (overrides applied)."""

    id: str
    title: str
    severity: Severity
    #: what the rule detects, one line
    description: str
    #: clauses, any of which may match; empty matches every record (stateful kinds only)
    match: tuple[Clause, ...] = ()
    attack: Attack | None = None
    #: what PagerDuty's records cannot tell this rule
    limits: str = ""
    summary: str | None = None
    enabled: bool = True
    params: BurstParams | FirstSeenParams | None = None

    @property
    def kind(self) -> Kind:
        if isinstance(self.params, BurstParams):
            return "burst"
        if isinstance(self.params, FirstSeenParams):
            return "first_seen"
        return "record"

    def evidence(self, doc: OutputDocument) -> Evidence | None:
        """What the first matching clause saw in ``doc``, or None."""
        if not self.match:
            return Evidence()
        for clause in self.match:
            found = clause.evaluate(doc)
            if found is not None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class Override:
    """Per-source changes to one rule; None leaves the rule's own value."""

    enabled: bool | None = None
    severity: Severity | None = None
    threshold: int | None = None
    window: timedelta | None = None
    retention: timedelta | None = None
    learn_first: bool | None = None
    max_values: int | None = None

    def apply(self, rule: Rule) -> Rule:
        changes: dict[str, Any] = {}
        if self.enabled is not None:
            changes["enabled"] = self.enabled
        if self.severity is not None:
            changes["severity"] = self.severity
        params = rule.params
        if isinstance(params, BurstParams):
            params = replace(
                params,
                threshold=self.threshold if self.threshold is not None else params.threshold,
                window=self.window if self.window is not None else params.window,
            )
        elif isinstance(params, FirstSeenParams):
            params = replace(
                params,
                retention=self.retention if self.retention is not None else params.retention,
                learn_first=(
                    self.learn_first if self.learn_first is not None else params.learn_first
                ),
                max_values=self.max_values if self.max_values is not None else params.max_values,
            )
        return replace(rule, params=params, **changes)

    def merged(self, other: Override) -> Override:
        """This override with ``other``'s values on top."""
        return Override(
            **{
                name: getattr(other, name)
                if getattr(other, name) is not None
                else getattr(self, name)
                for name in (f.name for f in fields(Override))
            }
        )


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules in file order, and overrides by source name (``"*"``: every source)."""

    rules: tuple[Rule, ...] = ()
    overrides: dict[str, dict[str, Override]] = field(default_factory=dict)

    def get(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)

    def for_source(self, source_name: str) -> tuple[Rule, ...]:
        """The enabled rules of ``source_name``, with its overrides (and ``"*"``'s) applied."""
        every = self.overrides.get("*", {})
        own = self.overrides.get(source_name, {})
        effective = []
        for rule in self.rules:
            override = every.get(rule.id, Override()).merged(own.get(rule.id, Override()))
            rule = override.apply(rule)
            if rule.enabled:
                effective.append(rule)
        return tuple(effective)

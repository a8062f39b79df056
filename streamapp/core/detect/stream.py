"""Detections on the stream: what the pipeline writes for each record, and the keyed step.

Two stages, both pure (the worker's loops do the writing, the waiting and the committing):

1. :meth:`DetectionFanout.for_document` runs with the pipeline, for each record emitted for
   the first time: the findings of one-record rules go straight to the findings topic, in
   the same acknowledged batch as the record itself; for each stateful rule that keeps
   state for the record, one message goes to the internal keyed topic, keyed by the rule's
   state key, so every record of one (source, rule, actor) lands on one partition in order.
2. :meth:`DetectionFanout.step_batch` runs on that keyed topic with the state of its
   partitions: each message steps its rule's state machine; findings are written, then
   the new states, then offsets are committed. A crash repeats a step at worst, and the
   state machines ignore a record they already counted, so a finding fires once per
   trigger; its id is stable, so a repeat after a crash is dropped downstream by id.

Findings of at least a source's ``notify_findings`` severity also become notifications
(kind ``finding``) for the source's channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from streamapp.core.deadletter import dead_letter, one_line
from streamapp.core.detect.engine import Detector
from streamapp.core.detect.finding import SEVERITIES, Finding, encode_finding, finding_key
from streamapp.core.enrich import decode_document, encode_document, timestamp
from streamapp.core.health import Notification, Severity, encode_notification
from streamapp.core.models import Outgoing
from streamapp.core.output import OutputDocument
from streamapp.core.pipeline import Incoming

_encode = msgspec.json.Encoder().encode

#: finding severity → notification severity
_NOTIFICATION_SEVERITY: dict[str, Severity] = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "info": "info",
}


class KeyedInput(msgspec.Struct, kw_only=True, frozen=True):
    """A message on the internal keyed topic: a stateful rule to step with a record."""

    rule_id: str
    document: msgspec.Raw


_decode_input = msgspec.json.Decoder(KeyedInput).decode


@dataclass
class StepPlan:
    """What one batch of the keyed topic decided (the loop's ``Planned``)."""

    messages: list[Outgoing] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    #: (state key, partition) → new state (None: forget it)
    writes: dict[tuple[bytes, int], bytes | None] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add(self, message: Outgoing, origin: int) -> None:
        self.messages.append(message)
        self.origin.append(origin)


@dataclass
class DetectionFanout:
    detector: Detector
    findings_topic: str
    keyed_topic: str
    notifications_topic: str
    dlq_topic: str
    #: source name → least finding severity sent to its channels ("none": nothing)
    notify: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    # --- stage 1: with the pipeline -------------------------------------------------------

    def for_document(self, doc: OutputDocument) -> list[Outgoing]:
        messages = self._findings(self.detector.stateless(doc))
        keyed = self.detector.keyed(doc)
        if keyed:
            document = msgspec.Raw(encode_document(doc))
            for rule, key in keyed:
                value = _encode(KeyedInput(rule_id=rule.id, document=document))
                messages.append(Outgoing(self.keyed_topic, key, value, None))
        return messages

    # --- stage 2: on the keyed topic ------------------------------------------------------

    def step_batch(
        self, batch: Sequence[Incoming], state: Callable[[bytes, int], bytes | None]
    ) -> StepPlan:
        plan = StepPlan()
        for index, message in enumerate(batch):
            key = message.key or b""
            try:
                item = _decode_input(message.value or b"")
                doc = decode_document(bytes(item.document))
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                plan.add(self.dead_letter_for(message, f"not a detection input: {exc}"), index)
                continue
            slot = (key, message.partition)
            current = plan.writes[slot] if slot in plan.writes else state(key, message.partition)
            new, findings = self.detector.step(item.rule_id, current, doc)
            if new is not current:
                plan.writes[slot] = new
            for finding_message in self._findings(findings):
                plan.add(finding_message, index)
            plan.findings.extend(findings)
        return plan

    def dead_letter_for(self, message: Incoming, reason: str) -> Outgoing:
        letter = dead_letter(
            message.value or b"",
            reason=reason,
            stage="detect",
            source_name=None,
            at=self.clock(),
            topic=self.keyed_topic,
            partition=message.partition,
            offset=message.offset,
        )
        headers = [("reason", one_line(letter.reason, 200).encode())]
        return Outgoing(self.dlq_topic, message.key, _encode(letter), headers)

    # --- findings -------------------------------------------------------------------------

    def _findings(self, findings: Sequence[Finding]) -> list[Outgoing]:
        if not findings:
            return []
        now = timestamp(self.clock())
        messages = []
        for found in findings:
            stamped = msgspec.structs.replace(found, detected_at=now)
            headers = [
                ("source_name", found.source_name.encode()),
                ("rule_id", found.rule_id.encode()),
                ("severity", found.severity.encode()),
            ]
            messages.append(
                Outgoing(self.findings_topic, finding_key(found), encode_finding(stamped), headers)
            )
            if self._notifies(found):
                note = self.notification(found)
                messages.append(
                    Outgoing(
                        self.notifications_topic,
                        found.source_name.encode(),
                        encode_notification(note),
                        [("kind", b"finding"), ("source_name", found.source_name.encode())],
                    )
                )
        return messages

    def _notifies(self, found: Finding) -> bool:
        least = self.notify.get(found.source_name, "none")
        if least not in SEVERITIES:
            return False
        return SEVERITIES.index(found.severity) >= SEVERITIES.index(least)  # type: ignore[arg-type]

    def notification(self, found: Finding) -> Notification:
        attack = "" if isinstance(found.attack, msgspec.UnsetType) else f" [{found.attack.id}]"
        return Notification(
            kind="finding",
            source_name=found.source_name,
            message=f"{found.title}{attack}: {found.summary}",
            at=self.clock(),
            severity=_NOTIFICATION_SEVERITY.get(found.severity, "info"),
            error_kind=found.rule_id,
            details={"finding_id": found.id, "records": len(found.record_ids)},
        )

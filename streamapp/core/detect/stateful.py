"""Stateful rules as pure state machines: ``(state bytes, document) → (state bytes, findings)``.

Two kinds, each keyed by :func:`state_key` (``source|rule_id|group values…``), so the worker
keeps their state in a changelog-backed table partitioned by that key:

``burst``
    ``threshold`` matching records of one group whose ``execution_time`` lie within
    ``window`` of each other → one finding, naming exactly those records. The burst then
    covers the window on either side of it, ``(its last record - window, its first record
    + window)``: matching records inside are absorbed without a finding; ``threshold`` new
    ones after it make the next burst. Time is the records' ``execution_time``, not their
    arrival: a poll publishes newest first, so the earlier records of a burst often arrive
    after it has fired, and they are absorbed like the later ones.
``first_seen``
    A value of ``track`` (a method, an address, an actor...) that the group has not shown
    within ``retention`` → a finding. With ``learn_first`` the first value of a group that
    knows nothing yet is learned silently (an actor's first address is not a change).

Guarantees. A finding's id is derived from the rule, the state key and its record ids
(:func:`~streamapp.core.detect.finding.finding_id`): processing the same records again
from the same state gives the same ids, so a crash between publishing a finding and
storing the state repeats the finding under the same id, which consumers drop. A record
already counted (pending in a burst, part of a fired burst, or the record that introduced
a value) is ignored, so a record replayed after its state was stored fires nothing.
State stays bounded: entries older than ``window``/``retention`` before the newest record
are dropped at every step, the pending records of a burst are fewer than ``threshold``,
and a group remembers at most ``max_values`` values; :func:`expire` drops what a quiet key
no longer needs, judged against a clock. A first_seen state is rewritten for a known value
only when its last sighting moved by a hundredth of the retention (at least a minute), so
a busy actor does not cost a changelog write per record.

A state that cannot be decoded (another version, corruption) is treated as empty: the
rule starts learning again instead of stopping the stream.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from streamapp.core.detect.describe import (
    make_finding,
    one_line,
    record_evidence,
    record_values,
    render_summary,
    resources_of,
)
from streamapp.core.detect.finding import Finding
from streamapp.core.detect.matchers import Evidence, attribute
from streamapp.core.detect.rules import BurstParams, FirstSeenParams, Rule
from streamapp.core.durations import format_duration
from streamapp.core.enrich import timestamp
from streamapp.core.models import as_utc
from streamapp.core.output import OutputDocument, ResourceRef

__all__ = [
    "BurstState",
    "FirstSeenState",
    "decode_state",
    "expire",
    "state_key",
    "step",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)
#: ids of value-introducing records a first_seen state remembers
_MAX_IDS: Final = 64
_MAX_NAME: Final = 120
_MAX_VALUE: Final = 256
#: a first_seen value's last sighting is refreshed when it moved by 1/100 of the retention
_REFRESH_PARTS: Final = 100
_MIN_REFRESH: Final = 60_000_000  # µs


class _Event(msgspec.Struct, array_like=True, frozen=True):
    """A counted record: its time (µs since the epoch), id, and what it acted on."""

    t: int
    id: str
    type: str | None = None
    rid: str | None = None
    name: str | None = None


class _Burst(msgspec.Struct, array_like=True, frozen=True):
    """A fired burst: it covers ``[start, end)`` (µs) and was made of ``ids``."""

    start: int
    end: int
    ids: list[str]


class BurstState(msgspec.Struct, kw_only=True, frozen=True, tag="burst", tag_field="kind"):
    #: µs after the newest record that entries are kept (the window)
    keep: int
    newest: int = 0
    pending: list[_Event] = []
    bursts: list[_Burst] = []


class FirstSeenState(msgspec.Struct, kw_only=True, frozen=True, tag="first_seen", tag_field="kind"):
    #: µs after its last sighting that a value is kept (the retention)
    keep: int
    newest: int = 0
    #: value → its last sighting, µs since the epoch
    values: dict[str, int] = {}
    #: the records that introduced a value, newest last (bounded)
    ids: list[str] = []


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(BurstState | FirstSeenState)


def decode_state(state: bytes | None) -> BurstState | FirstSeenState | None:
    """The state in ``state``; None when absent or unreadable."""
    if not state:
        return None
    try:
        return _DECODER.decode(state)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        return None


def _micros(moment: datetime) -> int:
    return (as_utc(moment) - _EPOCH) // _MICRO


def _at(micros: int) -> str:
    return timestamp(_EPOCH + timedelta(microseconds=micros))


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace("|", "%7C")


def state_key(rule: Rule, doc: OutputDocument) -> bytes | None:
    """``source|rule_id|group values…`` (``|`` and ``%`` in values escaped as ``%7C``,
    ``%25``), or None when the rule keeps no state for ``doc``: a one-record rule, a record
    the rule does not match, or one without a group value (no actor, say) or tracked value."""
    params = rule.params
    if params is None or rule.evidence(doc) is None:
        return None
    if isinstance(params, FirstSeenParams) and attribute(doc, params.track) is None:
        return None
    parts = [doc.source_name, rule.id]
    for name in params.group_by:
        value = attribute(doc, name)
        if value is None:
            return None
        parts.append(value)
    return "|".join(_escape(part) for part in parts).encode("utf-8")


def step(
    rule: Rule, state: bytes | None, doc: OutputDocument
) -> tuple[bytes | None, list[Finding]]:
    """Feed ``doc`` to ``rule`` (as in effect for its source) given the state stored under
    ``state_key(rule, doc)``. Returns the state to store (``state`` itself, the same object,
    when nothing changed) and the findings. Never raises for any document or state."""
    key = state_key(rule, doc)
    if key is None:
        return state, []
    try:
        time = _micros(datetime.fromisoformat(doc.event_time))
    except (ValueError, OverflowError):
        return state, []
    if isinstance(rule.params, BurstParams):
        return _step_burst(rule, rule.params, state, doc, key, time)
    if isinstance(rule.params, FirstSeenParams):
        return _step_first_seen(rule, rule.params, state, doc, key, time)
    return state, []


def expire(state: bytes | None, now: datetime) -> bytes | None:
    """``state`` without what is older than its window or retention at ``now`` (compared
    with records' ``execution_time``); None when nothing is left, so the key can be deleted;
    ``state`` itself when nothing changed. Absent or unreadable state expires at once."""
    decoded = decode_state(state)
    if decoded is None:
        return None
    horizon = _micros(now) - decoded.keep
    if isinstance(decoded, BurstState):
        pending = [event for event in decoded.pending if event.t >= horizon]
        bursts = [burst for burst in decoded.bursts if burst.end > horizon]
        if not pending and not bursts:
            return None
        if len(pending) == len(decoded.pending) and len(bursts) == len(decoded.bursts):
            return state
        return _ENCODER.encode(msgspec.structs.replace(decoded, pending=pending, bursts=bursts))
    values = {value: last for value, last in decoded.values.items() if last >= horizon}
    if not values:
        return None
    if len(values) == len(decoded.values):
        return state
    return _ENCODER.encode(msgspec.structs.replace(decoded, values=values))


# --- burst -----------------------------------------------------------------------------


def _step_burst(
    rule: Rule,
    params: BurstParams,
    state: bytes | None,
    doc: OutputDocument,
    key: bytes,
    time: int,
) -> tuple[bytes | None, list[Finding]]:
    window = params.window // _MICRO
    old = decode_state(state)
    current = old if isinstance(old, BurstState) else BurstState(keep=window)
    if any(event.id == doc.id for event in current.pending) or any(
        doc.id in burst.ids for burst in current.bursts
    ):
        return state, []  # counted already: a replay
    newest = max(current.newest, time)
    horizon = newest - window
    pending = [event for event in current.pending if event.t >= horizon]
    bursts = [burst for burst in current.bursts if burst.end > horizon]
    findings: list[Finding] = []
    # a record older than the window behind the newest cannot join a burst any more, and
    # one inside a fired burst's span belongs to that burst
    if time >= horizon and not any(burst.start <= time < burst.end for burst in bursts):
        ref = doc.resource or doc.root_resource
        name = ref.name[:_MAX_NAME] if ref.name else None
        pending.append(_Event(t=time, id=doc.id, type=ref.type, rid=ref.id, name=name))
        pending.sort(key=lambda event: (event.t, event.id))
        group = _first_group(pending, params.threshold, window)
        if group is not None:
            burst = _Burst(
                start=group[-1].t - window + 1,
                end=group[0].t + window,
                ids=[event.id for event in group],
            )
            bursts.append(burst)
            pending = [event for event in pending if not burst.start <= event.t < burst.end]
            findings.append(_burst_finding(rule, params, doc, key, group))
    new = BurstState(keep=window, newest=newest, pending=pending, bursts=bursts)
    if new == old:
        return state, findings
    return _ENCODER.encode(new), findings


def _first_group(pending: list[_Event], threshold: int, window: int) -> list[_Event] | None:
    """The earliest ``threshold`` consecutive records (sorted by time) within ``window``."""
    for first in range(len(pending) - threshold + 1):
        group = pending[first : first + threshold]
        if group[-1].t - group[0].t < window:
            return group
    return None


def _burst_finding(
    rule: Rule, params: BurstParams, doc: OutputDocument, key: bytes, group: list[_Event]
) -> Finding:
    resources: list[ResourceRef] = []
    seen: set[tuple[str | None, str | None]] = set()
    for event in group:
        if (event.type, event.rid) not in seen and len(resources) < 50:
            seen.add((event.type, event.rid))
            resources.append(ResourceRef(id=event.rid, type=event.type, name=event.name))
    names = [_ref_label(ref) for ref in resources[:3]]
    if len(resources) > 3:
        names.append(f"and {len(resources) - 3} more")
    window = format_duration(params.window)
    values = record_values(rule, doc, Evidence())
    values.update(
        count=str(len(group)),
        threshold=str(params.threshold),
        window=window,
        resources=one_line(", ".join(names), 300),
    )
    evidence = {"count": str(len(group)), "threshold": str(params.threshold), "window": window}
    for name in params.group_by:
        evidence[name] = one_line(attribute(doc, name) or "")
    return make_finding(
        rule,
        source_name=doc.source_name,
        key=key,
        record_ids=[event.id for event in group],
        at=_at(max(event.t for event in group)),
        first_seen=_at(min(event.t for event in group)),
        actor=doc.actor,
        resources=resources,
        summary=render_summary(rule, values),
        evidence=evidence,
    )


def _ref_label(ref: ResourceRef) -> str:
    kind = ref.type or "object"
    return f"{ref.name} ({kind} {ref.id})" if ref.name else f"{kind} {ref.id}"


# --- first seen ------------------------------------------------------------------------


def _step_first_seen(
    rule: Rule,
    params: FirstSeenParams,
    state: bytes | None,
    doc: OutputDocument,
    key: bytes,
    time: int,
) -> tuple[bytes | None, list[Finding]]:
    value = (attribute(doc, params.track) or "")[:_MAX_VALUE]
    keep = params.retention // _MICRO
    old = decode_state(state)
    current = old if isinstance(old, FirstSeenState) else FirstSeenState(keep=keep)
    if doc.id in current.ids:
        return state, []  # the record that introduced a value, replayed
    # sightings of known values move their time (and ``newest``) only in steps of
    # ``refresh``, so the common case, a known value again, writes no new state
    refresh = max(keep // _REFRESH_PARTS, _MIN_REFRESH)
    newest = max(current.newest, time)
    if newest - current.newest < refresh:
        newest = current.newest
    horizon = newest - keep
    values = {known: last for known, last in current.values.items() if last >= horizon}
    ids = current.ids
    findings: list[Finding] = []
    last = values.get(value)
    if last is not None:
        if time - last >= refresh:
            values[value] = time
    elif time >= horizon:
        if values or not params.learn_first:
            findings.append(_first_seen_finding(rule, params, doc, key, value, values))
        values[value] = time
        ids = [*ids, doc.id][-_MAX_IDS:]
    if len(values) > params.max_values:
        # keep the most recently seen; ties broken by value so the result is deterministic
        kept = sorted(values.items(), key=lambda item: (-item[1], item[0]))[: params.max_values]
        values = dict(kept)
    new = FirstSeenState(keep=keep, newest=newest, values=values, ids=ids)
    if new == old:
        return state, findings
    return _ENCODER.encode(new), findings


def _first_seen_finding(
    rule: Rule,
    params: FirstSeenParams,
    doc: OutputDocument,
    key: bytes,
    value: str,
    known: dict[str, int],
) -> Finding:
    recent = [v for v, _ in sorted(known.items(), key=lambda item: (-item[1], item[0]))]
    known_text = ", ".join(one_line(v, 60) for v in recent[:5]) or "nothing yet"
    if len(recent) > 5:
        known_text += f" and {len(recent) - 5} more"
    retention = format_duration(params.retention)
    values = record_values(rule, doc, Evidence())
    values.update(track=params.track, value=one_line(value), known=known_text, retention=retention)
    evidence = record_evidence(doc, Evidence())
    evidence.update(
        {f"new_{params.track}": one_line(value), "known": known_text, "retention": retention}
    )
    if params.group_by:
        evidence["group"] = one_line(
            ", ".join(f"{name}={attribute(doc, name)}" for name in params.group_by)
        )
    return make_finding(
        rule,
        source_name=doc.source_name,
        key=key,
        record_ids=[doc.id],
        at=doc.event_time,
        first_seen=doc.event_time,
        actor=doc.actor,
        resources=resources_of(doc),
        summary=render_summary(rule, values),
        evidence=evidence,
    )

"""What the worker's endpoints say, built from the runtime (no faust: the views are thin).

- :func:`health_document` / :func:`source_summary`: ``/health``, with the worker's own
  state beside each source's (a stalled pipeline, polls without progress, rate-limit pauses
  longer than the poll interval): the truth, not just the last alert;
- :func:`ready_document`: ``/ready``;
- :func:`page_model`: the status page's model;
- :func:`run_action`: the page's buttons (verify settings, test notification).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from streamapp.config import SourceConfig
from streamapp.core.health import SEVERITY, Notification
from streamapp.core.models import rfc3339
from streamapp.pagerduty.verify import verify_source
from streamapp.worker.statuspage import (
    ActionAnswer,
    ChannelResult,
    LastError,
    NotificationLine,
    PageModel,
    Pipeline,
    SourceView,
    WorkerView,
    decode_action_request,
    status_since,
)

if TYPE_CHECKING:
    from streamapp.worker.runtime import Runtime

#: how bad each status is, for the overall one
_ORDER = ("ok", "stale", "degraded", "stalled", "error")


def _worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: _ORDER.index(s) if s in _ORDER else 0, default="ok")


def pipeline_view(runtime: Runtime) -> dict[str, Any]:
    state = runtime.pipeline.state
    waiting = runtime.loops.stalled_for()
    stalled = waiting >= runtime.settings.stall_after.total_seconds()
    return {
        "status": "stalled" if stalled else "ok",
        "unacknowledged_seconds": round(waiting, 3),
        "error": runtime.loops.last_error,
        "assigned_partitions": sorted(state.assigned),
        "batches": state.batches,
    }


def _poll_view(runtime: Runtime, source: SourceConfig) -> dict[str, Any]:
    poll = runtime.poller.polls.get(source.name)
    view: dict[str, Any] = {"running": False, "stalled": False, "rate_limit_pause_seconds": 0.0}
    if poll is None:
        return view
    pause = poll.client.gate.blocked_for()
    view["rate_limit_pause_seconds"] = round(pause, 1)
    if poll.running and poll.report is not None:
        now = time.monotonic()
        idle = now - poll.report.last_progress
        view.update(
            running=True,
            running_seconds=round(now - poll.report.started, 3),
            idle_seconds=round(idle, 3),
            stalled=idle >= runtime.watchdog.poll_stall_after(source),
        )
    return view


def source_summary(runtime: Runtime, name: str) -> dict[str, Any] | None:
    source = runtime.watchdog.sources.get(name)
    if source is None:
        return None
    summary = runtime.watchdog.summary(source)
    poll = _poll_view(runtime, source)
    summary["poll"] = poll
    interval = source.poll_interval.total_seconds()
    if poll["stalled"] or poll["rate_limit_pause_seconds"] > interval:
        summary["status"] = _worst([summary["status"], "degraded"])
    return summary


def health_document(runtime: Runtime) -> dict[str, Any]:
    sources = [source_summary(runtime, s.name) for s in runtime.settings.sources]
    pipeline = pipeline_view(runtime)
    statuses = [s["status"] for s in sources if s is not None] + [pipeline["status"]]
    return {
        "status": _worst(statuses),
        "worker": {"started": runtime.started, "pipeline": pipeline},
        "sources": sources,
    }


def ready_document(
    runtime: Runtime, leader: bool, rebalancing: bool, in_recovery: bool
) -> dict[str, Any]:
    pipeline_ok = runtime.pipeline_ok
    return {
        "ready": runtime.started and not rebalancing and not in_recovery and pipeline_ok,
        "leader": leader,
        "rebalancing": rebalancing,
        "in_recovery": in_recovery,
        "pipeline": "ok" if pipeline_ok else "stalled",
    }


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def page_model(runtime: Runtime, *, leader: bool, now: float) -> PageModel:
    moment = datetime.fromtimestamp(now, UTC)
    pipeline = pipeline_view(runtime)
    checkpoints = dict(runtime.progress.checkpoints())
    views = []
    for source in runtime.settings.sources:
        summary = source_summary(runtime, source.name) or {}
        state = runtime.watchdog.state_of(source.name)
        checkpoint = checkpoints.get(source.name)
        error = summary.get("last_error")
        notes = [n for n in runtime.watchdog.recent if n.source_name == source.name]
        views.append(
            SourceView(
                name=source.name,
                status=summary.get("status", "ok"),
                since=status_since(state),
                last_record_at=_when(summary.get("last_record_at")),
                checkpoint=checkpoint.until if checkpoint else None,
                checkpoint_lag_seconds=(moment - checkpoint.until).total_seconds()
                if checkpoint
                else None,
                records_per_minute=runtime.rates.series(source.name, now),
                last_error=LastError(
                    kind=error["kind"],
                    message=error["message"] or error["kind"],
                    at=state.last_poll_at if state.consecutive_failures else None,
                )
                if error
                else None,
                notifications=[
                    NotificationLine(kind=n.kind, message=n.message, at=n.at) for n in notes
                ],
                channels=[channel.name for channel in source.channels],
                consecutive_failures=state.consecutive_failures,
                health_check_seconds=source.health_check.total_seconds(),
            )
        )
    return PageModel(
        generated_at=moment,
        worker=WorkerView(
            leader=leader,
            ready=runtime.started and runtime.pipeline_ok,
            pipeline=Pipeline(status=pipeline["status"], message=pipeline["error"]),
        ),
        sources=views,
    )


async def run_action(runtime: Runtime, action: str, body: bytes) -> tuple[ActionAnswer, int]:
    try:
        name = decode_action_request(body).source
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ActionAnswer(ok=False, message='expected a JSON body {"source": NAME}'), 400
    source = runtime.watchdog.sources.get(name)
    if source is None:
        return ActionAnswer(ok=False, message=f"no source named {name!r}", source=name), 404
    if action == "verify":
        verdict = await verify_source(source, runtime.factory, timeout=10.0)
        return ActionAnswer(ok=verdict.ok, message=verdict.line, source=name), 200
    note = Notification(
        kind="test_notification",
        source_name=name,
        message=f"test notification for source '{name}' from the streamapp status page",
        at=datetime.now(UTC),
        severity=SEVERITY["test_notification"],
    )
    results = await runtime.watchdog.deliver_note(note)
    lines = [
        ChannelResult(
            channel=channel.name,
            ok=result.ok,
            message=f"HTTP {result.status}" if result.ok else (result.error or ""),
        )
        for channel, result in zip(source.channels, results, strict=True)
    ]
    if not lines:
        return ActionAnswer(ok=False, message=f"source '{name}' has no channels", source=name), 200
    ok = all(line.ok for line in lines)
    sent = sum(line.ok for line in lines)
    summary = (
        f"test notification delivered to {sent} of {len(lines)} channel(s) at {rfc3339(note.at)}"
    )
    return ActionAnswer(ok=ok, message=summary, source=name, results=lines), 200

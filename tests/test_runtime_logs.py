"""What the worker logs of the findings a batch made: a few lines, never a wall of them."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from streamapp.core.detect.stream import StepPlan
from streamapp.worker.runtime import FINDINGS_SHOWN, Runtime


def _found(findings: list[Any], caplog: pytest.LogCaptureFixture) -> list[str]:
    runtime = SimpleNamespace(settings=SimpleNamespace(topics=SimpleNamespace(findings="f")))
    with caplog.at_level(logging.INFO, logger="streamapp.worker"):
        Runtime._found(runtime, StepPlan(findings=findings))  # type: ignore[arg-type]
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


def finding(rule: str, n: int) -> Any:
    return SimpleNamespace(rule_id=rule, source_name="prod", summary=f"summary {n}")


def test_a_few_findings_are_a_line_each(caplog: pytest.LogCaptureFixture) -> None:
    lines = _found([finding("user_deleted", n) for n in range(FINDINGS_SHOWN + 1)], caplog)
    assert lines == [
        f"finding user_deleted source=prod: summary {n}" for n in range(FINDINGS_SHOWN + 1)
    ]


def test_many_findings_are_counted_per_rule_on_one_line(caplog: pytest.LogCaptureFixture):
    many = [finding("new_source_ip_for_actor", n) for n in range(40)]
    many += [finding("user_deleted", n) for n in range(40, 45)]
    lines = _found(many, caplog)
    assert len(lines) == FINDINGS_SHOWN + 1
    assert lines[-1] == (
        f"… and {45 - FINDINGS_SHOWN} more finding(s) on f: "
        f"new_source_ip_for_actor {40 - FINDINGS_SHOWN}, user_deleted 5 (each at -l debug)"
    )

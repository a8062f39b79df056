"""The one module with faust specifics: each use checked against the pinned faust."""

from __future__ import annotations

import importlib
import subprocess
import sys

import faust
import pytest

from streamapp.config.security import KafkaSecurity
from streamapp.core.redact import Secret
from streamapp.worker import faust_compat


def test_the_module_refuses_a_faust_it_was_not_written_for(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(faust, "__version__", "0.99.0")
    with pytest.raises(ImportError, match=r"written for faust-streaming 0\.15\.3, but 0\.99\.0"):
        importlib.reload(faust_compat)
    monkeypatch.undo()
    importlib.reload(faust_compat)


def test_the_builtin_page_switches_are_settings_of_this_faust():
    app = faust.App("compat-test", **faust_compat.builtin_pages(False))
    for name in faust_compat.BUILTIN_PAGES:
        assert getattr(app.conf, name) is False
    served = [bp for _, bp in app.web._enabled_blueprints()]  # what faust will mount
    assert "faust.web.apps.router:blueprint" not in served
    assert "faust.web.apps.tables.blueprint" not in served


def test_credentials_map_our_security_settings():
    assert faust_compat.credentials(KafkaSecurity()) is None
    sasl = faust_compat.credentials(
        KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="svc",
            sasl_password=Secret("pw-0123456789"),
        )
    )
    assert sasl.username == "svc" and sasl.mechanism.value == "SCRAM-SHA-256"


def test_the_worker_runs_on_uvloop_since_faust_ignores_its_loop_option():
    code = "import asyncio, streamapp.app\nprint(type(asyncio.get_event_loop_policy()).__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().startswith("uvloop")


def test_a_failed_start_is_one_line_and_a_non_zero_exit():
    code = (
        "from streamapp.worker import faust_compat\n"
        "faust_compat.fail_start('cannot reach the Kafka broker at 127.0.0.1:1 (KAFKA_BROKER)')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "streamapp: cannot start: cannot reach the Kafka broker at 127.0.0.1:1 (KAFKA_BROKER)"
    ]

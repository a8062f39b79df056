"""``make run``: everything a first-time user needs, started and stopped together.

- no ``KAFKA_BROKER``: starts the embedded Kafka-protocol broker (Tansu) on loopback;
- no PagerDuty token and no sources file: starts the built-in PagerDuty simulator and says,
  on the first line, that this is a demo against it;
- then runs the worker (``faust -A streamapp.app worker -l info``) in the foreground.

Ctrl-C (SIGINT) or SIGTERM stops every process it started, newest first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamapp.devtools.broker import EmbeddedBroker, free_port, wait_for_port

DEMO_TOKEN = "demo-token-not-a-secret"


def _say(text: str) -> None:
    print(f"streamapp: {text}", flush=True)


def main() -> int:
    env = dict(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    broker: EmbeddedBroker | None = None
    demo = (
        not env.get("PAGERDUTY_API_TOKEN")
        and not env.get("PAGERDUTY_API_TOKEN_FILE")
        and not env.get("STREAMAPP_SOURCES_FILE")
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if demo:
            port = free_port()
            _say(
                "DEMO MODE: no PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE set, so this runs "
                f"against the built-in PagerDuty simulator at http://127.0.0.1:{port}"
            )
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "streamapp.devtools.simulator",
                        "--port",
                        str(port),
                        "--records",
                        "2000",
                        "--days",
                        "3",
                        "--token",
                        DEMO_TOKEN,
                        "--trickle",
                        "5",
                    ],
                    start_new_session=True,
                )
            )
            wait_for_port("127.0.0.1", port, timeout=30)
            env.update(
                PAGERDUTY_API_TOKEN=DEMO_TOKEN,
                PAGERDUTY_API_URL=f"http://127.0.0.1:{port}",
                PAGERDUTY_SOURCE_NAME=env.get("PAGERDUTY_SOURCE_NAME", "demo"),
                PAGERDUTY_LOOKBACK=env.get("PAGERDUTY_LOOKBACK", "3d"),
                PAGERDUTY_POLL_INTERVAL=env.get("PAGERDUTY_POLL_INTERVAL", "10"),
            )
        else:
            _say(
                "running against PagerDuty at "
                + env.get("PAGERDUTY_API_URL", "https://api.pagerduty.com")
            )
        if not env.get("KAFKA_BROKER"):
            data = Path(env.get("STREAMAPP_DATA_DIR", "var"))
            data.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedBroker(log_path=data / "tansu.log").start()
            env["KAFKA_BROKER"] = broker.url
            env.setdefault("STREAMAPP_SESSION_TIMEOUT", "6")
            # Tansu reports stale end offsets; faust's recovery check would stop the worker
            env.setdefault("STREAMAPP_RECOVERY_CONSISTENCY_CHECK", "false")
            _say(f"started the embedded Kafka-protocol broker at {broker.url} (memory only)")
        worker = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "streamapp.app", "worker", "-l", "info"],
            env=env,
            start_new_session=True,
        )
        children.append(worker)
        while not stopping and worker.poll() is None:
            time.sleep(0.2)
        return worker.returncode or 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if broker is not None:
            broker.stop()
        _say("stopped everything it started")


if __name__ == "__main__":
    sys.exit(main())

"""``make run``: everything a first-time user needs, started and stopped together.

- no ``KAFKA_BROKER``: starts the embedded Kafka-protocol broker (Tansu) on 127.0.0.1:9092,
  or on a free port when 9092 is taken (``STREAMAPP_EMBEDDED_BROKER_PORT`` chooses: a port,
  or ``0`` for any free one);
- no PagerDuty token and no sources file: starts the built-in PagerDuty simulator and says,
  on the first line, that this is a demo against it;
- says, in one line, where everything is: the broker, the status page, how to tail;
- runs the worker (``faust -A streamapp.app --quiet worker -l info``: no start-up banner)
  and, in the same terminal, the newest few documents of the output topic every second,
  through the app's own ``tail --follow --format text`` (:class:`Follower`).

Ctrl-C (SIGINT) or SIGTERM stops every process it started, newest first.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from streamapp.config import Settings, load_settings
from streamapp.core.errors import ConfigError
from streamapp.devtools.broker import (
    BrokerPortInUse,
    EmbeddedBroker,
    free_port,
    wait_for_port,
)

DEMO_TOKEN = "demo-token-not-a-secret"
#: Kafka's usual port: where ``kcat``, ``make tail`` and other tools look by default
PREFERRED_BROKER_PORT = 9092
#: the embedded broker's port: unset prefers 9092, ``0`` takes any free port, N takes N
BROKER_PORT_VARIABLE = "STREAMAPP_EMBEDDED_BROKER_PORT"
#: the worker; ``--quiet``: no start-up banner (the launcher says where everything is)
WORKER_COMMAND = ("faust", "-A", "streamapp.app", "--quiet", "worker", "-l", "info")
#: the output topic in text, as ``make tail`` shows it (the app's own command)
TAIL_COMMAND = ("faust", "-A", "streamapp.app", "tail", "--follow", "--format", "text")
#: documents shown per second at most; the rest are counted
SHOWN_PER_SECOND = 5


def _say(text: str) -> None:
    print(f"streamapp: {text}", flush=True)


# =========================================================================== the broker


def broker_port_request(value: str | None) -> tuple[int | None, bool]:
    """``STREAMAPP_EMBEDDED_BROKER_PORT`` as (port or None for any free one, whether that
    port is required): unset prefers 9092 and falls back to a free port."""
    text = (value or "").strip()
    if not text:
        return PREFERRED_BROKER_PORT, False
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"{BROKER_PORT_VARIABLE}: expected a TCP port, or 0 for any free port, got {text!r}"
        )
    return (port or None), True


def start_embedded_broker(log_path: Path | None, request: str | None) -> tuple[EmbeddedBroker, str]:
    """The embedded broker on the port asked for (see :func:`broker_port_request`), and a
    few words on why it is elsewhere when the preferred port was taken ("" otherwise).

    Clients reach it through :class:`ApiVersionsProxy`, so that kcat reads it too."""
    port, required = broker_port_request(request)
    if port is not None:
        try:
            return EmbeddedBroker(port=port, log_path=log_path, kcat_proxy=True).start(), ""
        except BrokerPortInUse:
            if required:
                raise BrokerPortInUse(
                    f"{BROKER_PORT_VARIABLE}={port}: 127.0.0.1:{port} is in use by another process"
                ) from None
    broker = EmbeddedBroker(log_path=log_path, kcat_proxy=True).start()
    if port is None:
        return broker, ""
    return broker, f"127.0.0.1:{port} is in use by another process"


def status_url(settings: Settings) -> str:
    host = settings.web_bind
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}/"


def where_line(bootstrap: str, settings: Settings, broker_url: str) -> str:
    """The one line that says where everything is: broker, status page, how to tail."""
    topic = settings.topics.output
    # `make tail` reads KAFKA_BROKER, and 127.0.0.1:9092 without it
    tail = "make tail ARGS=-f"
    if bootstrap != f"127.0.0.1:{PREFERRED_BROKER_PORT}":
        tail = f"KAFKA_BROKER={broker_url} {tail}"
    return (
        f"broker {bootstrap} · status page {status_url(settings)} · "
        f"tail it: kcat -b {bootstrap} -t {topic} -C  or  {tail}"
    )


# =========================================================================== the follower


def _event_time(line: str) -> datetime:
    """The time a ``tail`` text line starts with (the earliest time for any other line)."""
    try:
        return datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def render_batch(lines: Sequence[str], limit: int = SHOWN_PER_SECOND) -> list[str]:
    """Of the documents one second brought (``tail``'s text lines), the newest ``limit`` by
    event time, oldest of them first, indented; then a line counting the others."""
    newest = sorted(lines, key=_event_time)[-limit:] if limit > 0 else []
    shown = [f"  {line}" for line in newest]
    if len(lines) > len(newest):
        shown.append(f"  … and {len(lines) - len(newest)} more")
    return shown


class Follower:
    """The output topic in the launcher's terminal, a few documents a second.

    Once the worker is ready (its ``/ready`` answers 200: the output topic exists), runs the
    app's own ``tail --follow --format text`` and reads it through a pipe: every second, the
    newest few of the documents that came (:func:`render_batch`).
    """

    def __init__(self, env: dict[str, str], ready_url: str, *, from_beginning: bool) -> None:
        self.env = {**env, "PYTHONIOENCODING": "utf-8"}
        self.ready_url = ready_url
        self.command = [sys.executable, "-m", *TAIL_COMMAND]
        self.command += ["--from-beginning"] if from_beginning else ["--last", "0"]
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="follower", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(5)

    def _wait_until_ready(self, timeout: float = 60.0) -> None:
        """Until the worker's ``/ready`` answers 200, or ``timeout`` (then tail waits)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with opener.open(self.ready_url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (OSError, ValueError):
                pass  # not listening yet, or 503: not ready yet
            self._stop.wait(0.5)

    def _run(self) -> None:
        self._wait_until_ready()
        with self._lock:
            if self._stop.is_set():
                return
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=subprocess.PIPE, start_new_session=True
            )
        assert self.process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()

        def read(stdout: IO[bytes]) -> None:
            for raw in iter(stdout.readline, b""):
                lines.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, args=(self.process.stdout,), daemon=True).start()
        ended = False
        while not ended:
            second = time.monotonic() + 1.0
            batch: list[str] = []
            while (left := second - time.monotonic()) > 0:
                try:
                    line = lines.get(timeout=left)
                except queue.Empty:
                    break
                if line is None:
                    ended = True
                    break
                batch.append(line)
            if batch and not self._stop.is_set():
                print("\n".join(render_batch(batch)), flush=True)


# =========================================================================== make run


def simulator_command(port: int) -> list[str]:
    """The demo's PagerDuty: three days of records, five new ones a minute."""
    return [
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
    ]


def is_demo(env: dict[str, str]) -> bool:
    """No token and no sources file: the run is a demo against the built-in simulator."""
    return not any(
        env.get(name)
        for name in ("PAGERDUTY_API_TOKEN", "PAGERDUTY_API_TOKEN_FILE", "STREAMAPP_SOURCES_FILE")
    )


class Stopped(Exception):
    """Ctrl-C or a broker that could not start: end the run with this status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Launch:
    """One ``make run``: what it started (stopped newest first) and whether to stop."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.env = dict(environ)
        self.broker_request = self.env.pop(BROKER_PORT_VARIABLE, None)
        self.demo = is_demo(self.env)
        self.sim_port = free_port()
        self.children: list[subprocess.Popen[bytes]] = []
        self.broker: EmbeddedBroker | None = None
        self.follower: Follower | None = None
        self.stopping = False
        if self.demo:
            self.env.update(
                PAGERDUTY_API_TOKEN=DEMO_TOKEN,
                PAGERDUTY_API_URL=f"http://127.0.0.1:{self.sim_port}",
                PAGERDUTY_SOURCE_NAME=self.env.get("PAGERDUTY_SOURCE_NAME", "demo"),
                PAGERDUTY_LOOKBACK=self.env.get("PAGERDUTY_LOOKBACK", "3d"),
                PAGERDUTY_POLL_INTERVAL=self.env.get("PAGERDUTY_POLL_INTERVAL", "10"),
            )

    def on_signal(self, signum: int, frame: object) -> None:
        if not self.stopping:
            _say("stopping…")
        self.stopping = True

    def settings(self) -> Settings:
        """The settings the worker will read; a bad one raises :class:`ConfigError` before
        anything starts (the worker would say the same)."""
        settings = load_settings(self.env, require_sources=False)
        broker_port_request(self.broker_request)
        return settings

    def start_pagerduty(self, data: Path) -> None:
        if not self.demo:
            url = self.env.get("PAGERDUTY_API_URL", "https://api.pagerduty.com")
            _say(f"running against PagerDuty at {url}")
            return
        _say(
            "DEMO MODE: no PAGERDUTY_API_TOKEN or STREAMAPP_SOURCES_FILE set, so this runs "
            f"against the built-in PagerDuty simulator at http://127.0.0.1:{self.sim_port}"
        )
        with open(data / "simulator.log", "ab") as sim_log:
            self.children.append(
                subprocess.Popen(
                    simulator_command(self.sim_port), stdout=sim_log, start_new_session=True
                )
            )
        wait_for_port("127.0.0.1", self.sim_port, timeout=30)

    def start_broker(self, settings: Settings, data: Path) -> tuple[str, str]:
        """(bootstrap host:port, broker URL): ``KAFKA_BROKER``'s, or the embedded one's."""
        if settings.broker:
            bootstrap = ",".join(p.split("://", 1)[-1] for p in settings.broker.split(","))
            _say(f"using the Kafka broker at {bootstrap} (KAFKA_BROKER)")
            return bootstrap, settings.broker
        try:
            broker, elsewhere = start_embedded_broker(data / "tansu.log", self.broker_request)
        except BrokerPortInUse as exc:
            print(f"streamapp: {exc}", file=sys.stderr, flush=True)
            raise Stopped(1) from None
        self.broker = broker
        self.env["KAFKA_BROKER"] = broker.url
        self.env.setdefault("STREAMAPP_SESSION_TIMEOUT", "6")
        # Tansu reports stale end offsets; faust's recovery check would stop the worker
        self.env.setdefault("STREAMAPP_RECOVERY_CONSISTENCY_CHECK", "false")
        what = "the embedded Kafka-protocol broker (Tansu, memory only)"
        if elsewhere:
            _say(f"{elsewhere}, so {what} is at {broker.url}")
        else:
            _say(f"started {what} at {broker.url}")
        return broker.bootstrap, broker.url

    def run_worker(self, settings: Settings) -> int:
        """The worker (and the follower beside it) until it ends or Ctrl-C: its status."""
        worker = subprocess.Popen(
            [sys.executable, "-m", *WORKER_COMMAND], env=self.env, start_new_session=True
        )
        self.children.append(worker)
        if not settings.log_json:  # JSON logs are for machines: no rendered documents among them
            self.follower = Follower(
                self.env,
                status_url(settings) + "ready",
                # a new embedded broker holds only what this run wrote
                from_beginning=self.broker is not None,
            ).start()
        while not self.stopping and worker.poll() is None:
            time.sleep(0.2)
        if worker.returncode and not self.stopping:
            _say(f"the worker stopped (status {worker.returncode})")
        return worker.returncode or 0

    def run(self) -> int:
        try:
            settings = self.settings()
        except ConfigError as exc:
            print(f"streamapp: configuration error: {exc}", file=sys.stderr, flush=True)
            return 2
        data = Path(settings.data_dir)
        try:
            data.mkdir(parents=True, exist_ok=True)
            self.start_pagerduty(data)
            bootstrap, broker_url = self.start_broker(settings, data)
            if self.stopping:  # Ctrl-C while starting
                return 130
            _say(where_line(bootstrap, settings, broker_url))
            return self.run_worker(settings)
        except Stopped as stopped:
            return stopped.status
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        """Every process it started, newest first: SIGTERM, then SIGKILL after 20 s."""
        if self.follower is not None:
            self.follower.stop()
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.broker is not None:
            self.broker.stop()
        _say("stopped everything it started")


def main() -> int:
    launch = Launch(dict(os.environ))
    signal.signal(signal.SIGINT, launch.on_signal)
    signal.signal(signal.SIGTERM, launch.on_signal)
    return launch.run()


if __name__ == "__main__":
    sys.exit(main())

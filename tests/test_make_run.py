"""``make run`` as a user types it: demo mode, what the terminal shows, Ctrl-C cleans up.

The repository is copied to a fresh directory (only tracked files) and ``make run`` runs
there. To keep the suite fast the copy reuses this checkout's virtualenv (``VENV=``) with its
install stamp newer than the copy's pyproject, so make does not reinstall; CI's own
``make test`` on a fresh clone covers creating the venv from nothing.

The embedded broker prefers 127.0.0.1:9092. Two runs at once (two checkouts testing, or a
``make run`` in another terminal) must not share a broker: the launcher binds the port
itself, and the one that finds it taken says so and takes a free port. So a run is on 9092,
or it said that 9092 was taken by someone else, and something does listen there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamapp.devtools import launcher
from streamapp.devtools.broker import BrokerPortInUse, free_port
from tests.kafka_harness import REPO, read_topic

pytestmark = pytest.mark.broker

GOLDEN = REPO / "tests" / "golden"
#: a document line as the launcher prints it: indented, then ``tail``'s rendering
DOCUMENT_LINE = re.compile(
    r"^  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z  demo  [a-z_]+\.[a-z_]+ +\S.*  \[[a-z_]+\]  \S+$"
)


def tracked_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    os.utime(dest / "pyproject.toml", (0, 0))
    return dest


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Terminal:
    """What ``make run`` prints, line by line, read by a thread (readline cannot time out)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.stdout = process.stdout
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in iter(self.stdout.readline, b""):
            with self.lock:
                self.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.lines)

    def text(self) -> str:
        return "\n".join(self.snapshot())


def where_line(lines: list[str], web_port: int) -> re.Match[str] | None:
    pattern = re.compile(
        r"^streamapp: broker (127\.0\.0\.1:(\d+)) · "
        + re.escape(f"status page http://127.0.0.1:{web_port}/")
        + r" · tail it: kcat -b \1 -t pagerduty_audit_logs -C  or  .*make tail"
    )
    for line in lines:
        if match := pattern.match(line):
            return match
    return None


async def run_once(copy: Path, venv: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAGERDUTY_", "STREAMAPP_", "KAFKA_"))
    }
    web_port = free_port()
    env["STREAMAPP_WEB_PORT"] = str(web_port)
    started_at = time.monotonic()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"VENV={venv}"],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    terminal = Terminal(process)
    started: set[int] = set()
    try:
        # within a minute: where everything is, and audit documents as a person reads them
        where = None
        documents: list[str] = []
        while time.monotonic() - started_at < 60 and not (where and documents):
            await asyncio.sleep(0.25)
            lines = terminal.snapshot()
            where = where_line(lines, web_port)
            documents = [line for line in lines if DOCUMENT_LINE.match(line)]
            assert process.poll() is None, terminal.text()
        lines = terminal.snapshot()
        assert lines and "DEMO" in lines[0] and "simulator" in lines[0], terminal.text()
        assert where, f"no line says where everything is:\n{terminal.text()}"
        assert documents, f"no audit document within 60 s:\n{terminal.text()}"
        broker, port = where.group(1), int(where.group(2))
        if port != launcher.PREFERRED_BROKER_PORT:
            # another broker (a run at the same time) holds 9092: said, and true
            assert any("127.0.0.1:9092 is in use" in line for line in lines), terminal.text()
            assert answers(launcher.PREFERRED_BROKER_PORT), "9092 was said to be taken, is free"
        # a second terminal reads what the line says, with our client and with kcat
        records = await read_topic(broker, "pagerduty_audit_logs", until_count=1, idle=0)
        assert records, "no record on pagerduty_audit_logs at the address shown"
        if kcat := shutil.which("kcat"):
            read = subprocess.run(
                [kcat, "-b", broker, "-t", "pagerduty_audit_logs", "-C", "-c", "1", "-e", "-q"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert read.returncode == 0, read.stderr.decode(errors="replace")
            assert json.loads(read.stdout.splitlines()[0])["source_name"] == "demo"
        started = descendants(process.pid)
        assert len(started) >= 5  # launcher, simulator, broker, worker, tail
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        await asyncio.to_thread(process.wait, 60)
        terminal.thread.join(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = terminal.text()
    assert "Updating subscribed topics" not in text, text
    assert "Traceback" not in text, text
    assert "ƒaµS†" not in text, "faust's start-up banner is shown"
    assert text.rstrip().endswith("streamapp: stopped everything it started"), text[-2000:]
    leftover = {pid for pid in started if alive(pid)}
    assert not leftover, f"processes left behind: {leftover}"


async def test_make_run_demo_shows_documents_and_where_everything_is_and_ctrl_c_cleans_up(
    tmp_path: Path,
):
    copy = tracked_copy(tmp_path / "repo")
    venv = Path(sys.executable).parent.parent
    # this venv already holds the project: tell make so it does not reinstall from the copy
    (venv / ".installed-run").touch()
    await run_once(copy, venv)
    await run_once(copy, venv)  # a second make run right after works too (and gets 9092 back)


# --- the embedded broker's port -----------------------------------------------------------


@pytest.fixture
def taken_port():
    """A loopback port another process (here: a socket of this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_preferred_port_falls_back_to_a_free_one_and_says_so(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setattr(launcher, "PREFERRED_BROKER_PORT", taken_port)
    broker, elsewhere = launcher.start_embedded_broker(tmp_path / "tansu.log", None)
    try:
        assert broker.port != taken_port and answers(broker.port)
        assert elsewhere == f"127.0.0.1:{taken_port} is in use by another process"
    finally:
        broker.stop()


def test_a_port_asked_for_is_required(taken_port: int, tmp_path: Path):
    with pytest.raises(BrokerPortInUse, match=f"STREAMAPP_EMBEDDED_BROKER_PORT={taken_port}"):
        launcher.start_embedded_broker(tmp_path / "tansu.log", str(taken_port))
    broker, elsewhere = launcher.start_embedded_broker(tmp_path / "tansu.log", "0")
    try:
        assert elsewhere == "" and answers(broker.port)
    finally:
        broker.stop()


def test_broker_port_variable():
    assert launcher.broker_port_request(None) == (9092, False)
    assert launcher.broker_port_request("") == (9092, False)
    assert launcher.broker_port_request("0") == (None, True)
    assert launcher.broker_port_request("19092") == (19092, True)
    for bad in ("x", "-1", "70000"):
        with pytest.raises(Exception, match="STREAMAPP_EMBEDDED_BROKER_PORT"):
            launcher.broker_port_request(bad)


# --- the documents shown ------------------------------------------------------------------


def test_each_second_shows_the_newest_few_documents_and_counts_the_rest():
    from streamapp.cli.tail import pretty_line

    values = [path.read_bytes() for path in sorted(GOLDEN.glob("*.json"))]
    lines = [pretty_line(value) for value in values]  # what `tail --format text` prints
    times = sorted(json.loads(v)["event_time"] for v in values)
    shown = launcher.render_batch(lines, limit=3)
    assert len(shown) == 4
    assert [line.split()[0] for line in shown[:3]] == times[-3:]  # the newest, oldest first
    assert shown[3] == f"  … and {len(values) - 3} more"
    assert launcher.render_batch(lines[:2], limit=3) == [
        f"  {line}" for line in sorted(lines[:2], key=lambda line: line.split()[0])
    ]

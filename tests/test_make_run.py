"""``make run`` as a user types it: demo mode, records on the output topic, Ctrl-C cleans up.

The repository is copied to a fresh directory (only tracked files) and ``make run`` runs
there. To keep the suite fast the copy reuses this checkout's virtualenv (``VENV=``) with its
install stamp newer than the copy's pyproject, so make does not reinstall; CI's own
``make test`` on a fresh clone covers creating the venv from nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kafka_harness import REPO, read_topic

pytestmark = pytest.mark.broker


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


async def run_once(copy: Path, venv: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAGERDUTY_", "STREAMAPP_", "KAFKA_"))
    }
    env["STREAMAPP_WEB_PORT"] = str(_free_port())
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"VENV={venv}"],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        first = await asyncio.to_thread(process.stdout.readline)
        lines.append(first.decode())
        assert "DEMO" in first.decode() and "simulator" in first.decode(), first
        broker = None
        deadline = time.monotonic() + 60
        while broker is None and time.monotonic() < deadline:
            line = (await asyncio.to_thread(process.stdout.readline)).decode()
            lines.append(line)
            match = re.search(r"broker at kafka://(127\.0\.0\.1:\d+)", line)
            if match:
                broker = match.group(1)
        assert broker, "".join(lines)
        drain = asyncio.create_task(asyncio.to_thread(process.stdout.read))
        records = await read_topic(
            broker, "pagerduty_audit_logs", until_count=1, timeout=120, idle=0
        )
        assert records, "no record reached pagerduty_audit_logs"
        started = descendants(process.pid)
        assert len(started) >= 4  # launcher, simulator, broker, worker (and make's shell)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        await asyncio.to_thread(process.wait, 60)
        await asyncio.wait_for(drain, 30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    leftover = {pid for pid in started if alive(pid)}
    assert not leftover, f"processes left behind: {leftover}"


def _free_port() -> int:
    from streamapp.devtools.broker import free_port

    return free_port()


async def test_make_run_demo_shows_records_and_ctrl_c_leaves_nothing_behind(tmp_path: Path):
    copy = tracked_copy(tmp_path / "repo")
    venv = Path(sys.executable).parent.parent
    # this venv already holds the project: tell make so it does not reinstall from the copy
    (venv / ".installed-run").touch()
    await run_once(copy, venv)
    await run_once(copy, venv)  # a second make run right after works too

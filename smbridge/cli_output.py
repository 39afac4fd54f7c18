"""What ``smbridge client`` prints, and noticing when nobody reads it any more.

``Printer`` writes one line per event, as text or JSON lines. When its reader
closes the pipe (``smbridge client … | head -1``), ``Printer`` stops writing and
calls ``on_closed`` once, so the command logs off and exits 0 instead of dying on
BrokenPipeError. ``watch_output`` notices that even while nothing is printed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smbridge.client.keeper import KeeperEvent
from smbridge.codec import Frame
from smbridge.codec.catalog import CREATE_SESSION, GET_DIRECTORY, GET_RESOURCE_URI, WATCH_QUEUE


class Printer:
    """Writes what the client sees, one line each, as text or JSON lines.

    When the output is gone (its reader closed the pipe) ``on_closed`` is called once
    and later lines are dropped: the command is ending, not failing.
    """

    def __init__(
        self, as_json: bool, out: Any = None, on_closed: Callable[[], None] | None = None
    ) -> None:
        self.as_json = as_json
        self.out = out if out is not None else sys.stdout
        self.on_closed = on_closed
        self.closed = False

    def output_closed(self) -> None:
        """The reader went away: stop writing, and let interpreter exit flush nowhere."""
        if self.closed:
            return
        self.closed = True
        try:  # buffered text would fail again at exit (a second BrokenPipeError)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (tests): nothing is flushed at exit
        if self.on_closed is not None:
            self.on_closed()

    def _emit(self, text: str, event: str, message: tuple[int, int], payload: Any) -> None:
        if self.closed:
            return
        try:
            self._write(text, event, message, payload)
        except BrokenPipeError:
            self.output_closed()
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise
            self.output_closed()

    def _write(self, text: str, event: str, message: tuple[int, int], payload: Any) -> None:
        if self.as_json:
            record = {
                "event": event,
                "objectType": message[0],
                "eventId": message[1],
                "payload": payload,
            }
            text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        print(text, file=self.out, flush=True)

    def logon(self, reply: dict[str, Any]) -> None:
        shown = {k: v for k, v in reply.items() if k != "resumeToken"}  # a secret
        server = reply.get("server") or {}
        text = (
            f"logged on: session {reply.get('sessionId')} on {server.get('name', '?')}"
            f" (timeout {reply.get('sessionTimeout')}s,"
            f" heartbeat {reply.get('heartbeatInterval')}s)"
        )
        self._emit(text, "CreateSession", CREATE_SESSION, shown)

    def snapshot(self, snapshot: dict[str, Any]) -> None:
        count = len(snapshot.get("interactions") or [])
        self._emit(
            f"queue {snapshot.get('queue')}: {count} interactions",
            "WatchQueue",
            WATCH_QUEUE,
            snapshot,
        )

    def directory(self, reply: dict[str, Any]) -> None:
        count = len(reply.get("entries") or [])
        self._emit(
            f"directory {reply.get('name')}: {count} entries", "GetDirectory", GET_DIRECTORY, reply
        )

    def download(self, kind: str, path: str, uri: str, size: int, saved: Path) -> None:
        self._emit(
            f"downloaded {kind}:{path}: {size} bytes from {uri} to {saved}",
            "GetResourceUri",
            GET_RESOURCE_URI,
            {"kind": kind, "path": path, "uri": uri, "bytes": size, "file": str(saved)},
        )

    def keeper_event(self, event: KeeperEvent) -> None:
        """What ``--keep`` did about the connection (resumed, logged on again, moved)."""
        server = (event.server or {}).get("name", "?")
        text = {
            "disconnected": "connection lost: resuming",
            "resumed": f"resumed session {event.session_id} on {server}"
            + (" (gap: views refreshed)" if event.gap else ""),
            "relogged": f"logged on again: session {event.session_id} on {server}",
            "migrated": f"moved to {server}: session {event.session_id}",
            "resynchronised": f"views refreshed ({event.reason})",
            "ended": f"session ended: {event.reason}",
        }.get(event.kind, event.kind)
        payload = {"kind": event.kind, "reason": event.reason, "sessionId": event.session_id,
                   "server": event.server, "gap": event.gap}  # fmt: skip
        self._emit(text, f"keeper.{event.kind}", (0, 0), payload)

    def notification(self, name: str, frame: Frame) -> None:
        body = frame.parsed()
        text = f"{name} {json.dumps(body, separators=(',', ':'), ensure_ascii=False)}"
        self._emit(text, name, (frame.object_type, frame.event_id), body)


class PipeWatch:
    """Tells when the reader of the pipe on a write-only descriptor has gone away.

    The write end of a pipe polls as an error (epoll) or as readable (select, poll)
    once no reader is left, so ``smbridge client … | head -1`` ends when ``head``
    does, not at the next notification it would have printed.
    """

    def __init__(self, reactor: Any, fd: int, on_closed: Callable[[], None]) -> None:
        self.reactor = reactor
        self.fd = fd
        self.on_closed = on_closed
        self.active = True
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "stdout"

    def doRead(self) -> None:
        self.stop()
        self.on_closed()

    def connectionLost(self, reason: object) -> None:
        self.active = False  # the reactor has removed us
        self.on_closed()

    def stop(self) -> None:
        if self.active:
            self.active = False
            self.reactor.removeReader(self)


def watch_output(reactor: Any, printer: Printer) -> Callable[[], None]:
    """Watch the printer's output if it is a pipe; returns what stops the watch."""
    try:
        fd = printer.out.fileno()
        piped = stat.S_ISFIFO(os.fstat(fd).st_mode)
        write_only = os.O_ACCMODE & fcntl.fcntl(fd, fcntl.F_GETFL) == os.O_WRONLY
    except (OSError, ValueError, AttributeError):
        return lambda: None  # not a real file (tests), or no fcntl
    if not (piped and write_only):
        return lambda: None  # a terminal or a file: nothing goes away
    watch = PipeWatch(reactor, fd, printer.output_closed)
    return watch.stop

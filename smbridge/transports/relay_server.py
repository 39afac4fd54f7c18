"""Cross-worker ResumeSession, the owner's side (docs/lifecycle.md, "Several workers").

Each worker of ``--workers N`` listens on a private Unix socket,
``<run_dir>/worker-<I>.sock``: the directory is made 0700 (only this user's
processes, the workers, reach it), the socket 0600, and a peer of another user is
refused by its credentials (``SO_PEERCRED``) all the same. A stale socket left by an
earlier worker is removed at start.

A relayed connection starts with the preamble (relay_wire.py), read within
``PREAMBLE_TIMEOUT`` seconds; a bad one is refused with a warning naming why, and the
socket closed. Then it is an ordinary client connection of the kind the preamble
names (:class:`ClientConnection`: framing, the frame bound and deadline before logon,
the logon throttle by the client's address, held bytes, backpressure), whose
transport is the Unix socket: the relaying worker frames its bytes for the client
(TLS or WebSocket). Its first frame is the client's ResumeSession, which resumes
the session here as on any connection.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.counters import Counters
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory
from smbridge.transports.prelogon import LOGON
from smbridge.transports.relay import OWNER_FRAME_BOUND, WorkerRelays, worker_socket
from smbridge.transports.relay_wire import PreambleParser, Refused

PREAMBLE_TIMEOUT = 10.0  # seconds for the relaying worker's preamble
_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid (Linux's struct ucred)


def peer_uid(transport: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket (None: unknown)."""
    option = getattr(socket, "SO_PEERCRED", None)
    handle = getattr(transport, "getHandle", lambda: None)()
    if option is None or not isinstance(handle, socket.socket):
        return None
    try:
        data = handle.getsockopt(socket.SOL_SOCKET, option, _CREDENTIALS.size)
    except OSError:
        return None
    return int(_CREDENTIALS.unpack(data)[1])


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter (made 0700 if missing or looser)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o700)
    return path


class RelayServerProtocol(Protocol):
    """One relayed connection: the preamble, then an ordinary client connection."""

    log = Logger()

    def __init__(self, factory: RelayServerFactory) -> None:
        self.server = factory
        self.parser = PreambleParser()
        self.conn: ClientConnection | None = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        uid = peer_uid(transport)
        if uid is not None and uid != os.getuid():
            self._refuse(f"a process of uid {uid}, not this bridge's")
            return
        self._timer = self.server.clock.callLater(
            PREAMBLE_TIMEOUT, self._refuse, f"no preamble within {PREAMBLE_TIMEOUT:g} s"
        )

    def dataReceived(self, data: bytes) -> None:
        conn = self.conn
        if conn is not None:
            conn.dataReceived(data)
            return
        result = self.parser.feed(data)
        if result is None:
            return
        self._cancel()
        if isinstance(result, Refused):
            self._refuse(result.reason)
            return
        server, transport = self.server, self.transport
        assert transport is not None
        app = server.app
        conn = app.connection(result.kind)
        conn.makeConnection(transport)  # type: ignore[no-untyped-call]
        conn.remote = result.remote  # the client's, as the relaying worker saw it
        conn.origin = result.origin
        limits = app.prelogon
        deadline = app.deadline(transport.abortConnection, LOGON, result.remote)  # type: ignore[attr-defined]
        if deadline is not None and limits is not None:
            conn.before_logon(deadline, limits)
        self.conn = conn
        server.counters.inc("relays", outcome="accepted")
        self.log.debug(
            "Relayed {transport} client {remote} from worker {sender}",
            transport=result.kind,
            remote=result.remote,
            sender=result.sender,
            event="relay.accepted",
        )
        if self.parser.rest:
            conn.dataReceived(self.parser.rest)

    def _refuse(self, reason: str) -> None:
        self._timer = None
        self.server.counters.inc("relays", outcome="refused")
        self.log.warn(
            "Relay socket: connection refused ({reason})",
            reason=reason,
            event="relay.refused",
        )
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def _cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._cancel()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.connectionLost(reason)


class RelayServerFactory(Factory):
    def __init__(self, app: ClientConnectionFactory, counters: Counters, clock: Any) -> None:
        self.app = app
        self.counters = counters
        self.clock = clock
        self.noisy = False  # relay.listening says it once

    def buildProtocol(self, addr: object) -> RelayServerProtocol:
        return RelayServerProtocol(self)


class RelayListener(Service):
    """Worker ``index``'s private socket for relayed connections, in ``run_dir``."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        run_dir: Path,
        index: int,
        app: ClientConnectionFactory,
        counters: Counters,
    ) -> None:
        self.reactor = reactor
        self.run_dir = run_dir
        self.index = index
        self.factory = RelayServerFactory(app, counters, reactor)
        self.port: IListeningPort | None = None
        self.setName("relay-listener")  # type: ignore[no-untyped-call]

    @property
    def path(self) -> Path:
        return worker_socket(self.run_dir, self.index)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        private_dir(self.run_dir)
        path = self.path
        path.unlink(missing_ok=True)  # a stale socket of an earlier worker
        self.port = self.reactor.listenUNIX(str(path), self.factory, mode=0o600, wantPID=False)
        self.log.info(
            "Worker {index} takes relayed resumes on {path}",
            index=self.index,
            path=str(path),
            event="relay.listening",
        )

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return None
        d = port.stopListening()
        self.path.unlink(missing_ok=True)
        return d


def worker_relays(
    reactor: Any, node: str, index: int, count: int, run_dir: Path, app: ClientConnectionFactory
) -> tuple[WorkerRelays, RelayListener]:
    """Worker ``index`` of ``count``: the Resumer's relay hook and the socket it listens on."""
    counters = app.router.counters
    bound = max(app.max_frame, OWNER_FRAME_BOUND)
    relays = WorkerRelays(reactor, node, index, count, run_dir, counters, bound)
    return relays, RelayListener(reactor, run_dir, index, app, counters)

"""TLS resumption across workers: a returning client goes to the worker that can resume it.

OpenSSL seals each session ticket with its context's key, and pyOpenSSL cannot set
ticket keys, so the workers cannot share one key. Instead each worker publishes the
key names of its ticket generations (``<run dir>/tickets-<I>.names``), and a worker
that accepts a connection whose ClientHello offers a ticket sealed by *another*
worker hands the connection itself to that worker: the socket's descriptor and the
bytes read so far go over a Unix datagram socket (``<run dir>/handoff-<I>.sock``,
``SCM_RIGHTS``), and that worker adopts the connection and feeds it the bytes, as
if it had accepted it. The client notices nothing and resumes without a full
handshake.

Only the first TLS record is held (at most 16 KB, under the handshake deadline);
anything else (clear text, a hello without a ticket, one of this worker's own
tickets, a ticket no worker knows, or a handoff the peer cannot take now) goes on
here at once, as in a single process. :class:`HandoffEndpoint` wraps the client
port's and the wss port's endpoints in a worker; nothing here runs with one process.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReadDescriptor,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.counters import Counters
from smbridge.transports.tickets import KEY_NAME_LENGTH, first_record, hello_key_name

REFRESH = 1.0  # seconds between re-reads of the other workers' key names
MAX_MESSAGE = 1 + 5 + 16384  # tag, then the first TLS record at most
READS_PER_TURN = 64
TAGS = {"tls": b"t", "wss": b"w"}


def names_file(run_dir: Path, index: int) -> Path:
    return run_dir / f"tickets-{index}.names"


def handoff_socket(run_dir: Path, index: int) -> Path:
    return run_dir / f"handoff-{index}.sock"


class TicketOwners:
    """Which worker issued a ticket key name: this one's own, or another's from its file."""

    def __init__(
        self,
        run_dir: Path,
        index: int,
        count: int,
        own: Callable[[], set[bytes]],
        clock: Any,
    ) -> None:
        self.run_dir = run_dir
        self.index = index
        self.count = count
        self.own = own
        self.clock = clock
        self._published: set[bytes] | None = None
        self._others: dict[bytes, int] = {}
        self._read_at: float | None = None

    def publish(self) -> None:
        """Write this worker's key names (when they changed), atomically, 0600."""
        names = self.own()
        if names == self._published:
            return
        path = names_file(self.run_dir, self.index)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(name.hex() + "\n" for name in sorted(names)))
        temporary.replace(path)
        self._published = set(names)

    def owner(self, name: bytes) -> int | None:
        """The other worker whose ticket this is; None: this worker's, or no one's known."""
        if name in self.own():
            return None
        now = self.clock.seconds()
        if self._read_at is None or now - self._read_at >= REFRESH or name not in self._others:
            if self._read_at is None or now - self._read_at >= REFRESH:
                self._read_at = now
                self._others = self._read_others()
        return self._others.get(name)

    def _read_others(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for index in range(self.count):
            if index == self.index:
                continue
            try:
                lines = names_file(self.run_dir, index).read_text().split()
            except OSError:
                continue
            for line in lines:
                try:
                    name = bytes.fromhex(line)
                except ValueError:
                    continue
                if len(name) == KEY_NAME_LENGTH:
                    out[name] = index
        return out


class Handoff:
    """One worker's side of handing connections over: send, receive, and the counts."""

    log = Logger()

    def __init__(self, reactor: Any, owners: TicketOwners, counters: Counters) -> None:
        self.reactor = reactor
        self.owners = owners
        self.counters = counters
        self.factories: dict[bytes, IProtocolFactory] = {}  # tag -> the listener's factory
        self.receiver: _Receiver | None = None

    def start(self) -> None:
        path = handoff_socket(self.owners.run_dir, self.owners.index)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.setblocking(False)
        self.receiver = _Receiver(self, sock)
        self.reactor.addReader(self.receiver)

    def stop(self) -> None:
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            self.reactor.removeReader(receiver)
            receiver.sock.close()

    def send(self, index: int, tag: bytes, fd: int, data: bytes) -> bool:
        """Give the connection ``fd`` (with ``data`` read from it) to worker ``index``."""
        path = handoff_socket(self.owners.run_dir, index)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
                sock.sendmsg([tag + data], rights, 0, str(path))  # (send_fds drops the address)
        except OSError as e:  # the peer is gone or busy: this worker does the full handshake
            self.counters.inc("tls_handoffs", outcome="failed")
            self.log.info(
                "Could not hand a TLS connection to worker {index}: {error}",
                index=index,
                error=e.strerror or str(e),
                event="workers.handoff_failed",
            )
            return False
        self.counters.inc("tls_handoffs", outcome="sent")
        return True

    def received(self, tag: bytes, fd: int, data: bytes) -> None:
        """Adopt a connection another worker handed over, and feed it what was read."""
        factory = self.factories.get(tag)
        sock = socket.socket(fileno=fd)
        try:
            if factory is None:
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
            sock.setblocking(False)
            adopt = _Adopt(factory)
            self.reactor.adoptStreamConnection(sock.fileno(), sock.family, adopt)
        except OSError:
            return
        finally:
            sock.close()  # the reactor holds its own duplicate
        if adopt.built is not None:
            self.counters.inc("tls_handoffs", outcome="received")
            adopt.built.dataReceived(data)


@implementer(IReadDescriptor)
class _Receiver:
    def __init__(self, handoff: Handoff, sock: socket.socket) -> None:
        self.handoff = handoff
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802
        return "handoff"

    def doRead(self) -> None:  # noqa: N802
        for _ in range(READS_PER_TURN):
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
            except BlockingIOError:
                return
            except OSError:
                return
            if len(fds) != 1 or not data:
                for fd in fds:
                    os.close(fd)
                continue
            self.handoff.received(data[:1], fds[0], data[1:])

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        pass


class _Adopt(Factory):
    def __init__(self, wrapped: IProtocolFactory) -> None:
        self.wrapped = wrapped
        self.built: Any = None

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        self.built = self.wrapped.buildProtocol(addr)
        return self.built


class HandoffProtocol(Protocol):
    """Holds a connection's first TLS record, then hands it over or starts the real protocol."""

    def __init__(self, factory: HandoffFactory, inner: Any) -> None:
        self.factory = factory
        self.inner = inner
        self.held = b""
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:  # noqa: N802
        factory = self.factory
        assert self.transport is not None
        self._timer = factory.reactor.callLater(factory.timeout, self.transport.abortConnection)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.held += data
        need = first_record(self.held)
        if need and len(self.held) < need:
            return  # the rest of the ClientHello is coming
        owner = None
        if need:
            name = hello_key_name(self.held[:need])
            if name is not None:
                owner = self.factory.handoff.owners.owner(name)
        if owner is not None and self._hand_to(owner):
            return
        self._go_on()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _hand_to(self, owner: int) -> bool:
        transport: Any = self.transport
        if not self.factory.handoff.send(owner, self.factory.tag, transport.fileno(), self.held):
            return False
        self._stop_timer()
        transport.stopReading()
        transport._shouldShutdown = False  # the other worker holds the connection now
        transport.loseConnection()
        return True

    def _go_on(self) -> None:
        self._stop_timer()
        transport: Any = self.transport
        inner, held, self.held = self.inner, self.held, b""
        inner.makeConnection(transport)
        transport.protocol = inner  # from now on the transport feeds it directly
        if held:
            inner.dataReceived(held)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self._stop_timer()


class HandoffFactory(Factory):
    """Wraps a listener's factory: each connection starts as a :class:`HandoffProtocol`."""

    def __init__(
        self, wrapped: IProtocolFactory, tag: bytes, handoff: Handoff, timeout: float
    ) -> None:
        self.wrapped = wrapped
        self.tag = tag
        self.handoff = handoff
        self.timeout = timeout
        self.reactor = handoff.reactor

    def doStart(self) -> None:  # noqa: N802
        self.wrapped.doStart()

    def doStop(self) -> None:  # noqa: N802
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        inner = self.wrapped.buildProtocol(addr)  # the guard decides at once, as before
        if inner is None:
            return None
        return HandoffProtocol(self, inner)


@implementer(IStreamServerEndpoint)
class HandoffEndpoint:
    """A worker's client-port or wss endpoint: its connections may go to another worker."""

    def __init__(
        self, inner: IStreamServerEndpoint, tag: str, handoff: Handoff, timeout: float
    ) -> None:
        self.inner = inner
        self.tag = TAGS[tag]
        self.handoff = handoff
        self.timeout = timeout

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:  # noqa: N803
        self.handoff.factories[self.tag] = protocolFactory  # handed connections go here
        return self.inner.listen(
            HandoffFactory(protocolFactory, self.tag, self.handoff, self.timeout)
        )

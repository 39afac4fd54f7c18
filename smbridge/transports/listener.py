"""The client listener: TLS and clear text on one port (PROTOCOL §1).

The first byte decides. ``0x16`` is a TLS handshake record: the connection is
wrapped in a TLS protocol fed with that first chunk. Anything else is clear text,
served only when the configuration allows it; otherwise the client gets an
``error`` frame ``tls-required`` and the connection is closed.

Before any of that, the connection guard (:mod:`smbridge.transports.guard`) may
refuse a new connection: ``buildProtocol`` returns ``None`` and Twisted closes the
socket at once, before a byte is read or written (so no TLS work is done). So may
the descriptor reserve (:mod:`smbridge.transports.descriptors`), which also pauses
the client listeners before the process runs out of file descriptors.

Each connection gets its deadline before logon (:mod:`smbridge.transports.prelogon`)
when it is accepted: the TLS handshake (or, for clear text, the first byte) within
the handshake time, then the first logon within the logon time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec import encode_error
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory
from smbridge.transports.descriptors import DescriptorReserve
from smbridge.transports.guard import ConnectionGuard
from smbridge.transports.prelogon import HANDSHAKE, LOGON, Deadline
from smbridge.transports.resumption import TicketTLSFactory, TicketTLSProtocol

TLS_HANDSHAKE = 0x16


class SniffingProtocol(Protocol):
    log = Logger()

    def __init__(self, factory: SniffingFactory) -> None:
        self._sniff = factory
        self._inner: Protocol | None = None
        self._deadline: Deadline | None = None

    def connectionMade(self) -> None:
        # Writes are already batched once per reactor turn; Nagle would only add delay
        # to a request/response protocol (and the tunnel's WebSocket layer turns it off).
        transport = self.transport
        assert transport is not None
        transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
        app = getattr(self._sniff, "app", None)
        if app is not None:
            peer = transport.getPeer()
            remote = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
            self._deadline = app.deadline(transport.abortConnection, HANDSHAKE, remote)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            inner = self._choose(data)
            if inner is None:
                return
        inner.dataReceived(data)

    def _choose(self, data: bytes) -> Protocol | None:
        factory = self._sniff
        transport = self.transport
        assert transport is not None
        conn: ClientConnection
        if data[0] == TLS_HANDSHAKE:
            conn = factory.app.connection("tls")
            inner: Protocol = TicketTLSProtocol(factory.tls, conn)  # resumes by ticket
        elif factory.allow_cleartext:
            conn = factory.app.connection("clear")
            inner = conn
        else:
            self.log.info(
                "Clear-text connection from {peer} refused",
                peer=transport.getPeer(),
                event="listener.cleartext_refused",
            )
            transport.write(
                encode_error(
                    168, 1, 0, "tls-required", "this port requires TLS; clear text is not allowed"
                )
            )
            transport.loseConnection()
            return None
        self._inner = inner
        inner.makeConnection(transport)
        deadline, limits = self._deadline, factory.app.prelogon
        if deadline is not None and limits is not None:
            conn.before_logon(deadline, limits)  # the connection holds it from now on
            self._deadline = None
            if inner is conn:  # clear text: no handshake, the time to log on starts now
                deadline.enter(LOGON)
        return inner

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._deadline is not None:
            self._deadline.done()
        if self._inner is not None:
            self._inner.connectionLost(reason)


class SniffingFactory(Factory):
    """Builds the protocol that sniffs the first byte of each connection."""

    def __init__(
        self,
        app: ClientConnectionFactory,
        tls_options: IOpenSSLServerConnectionCreator,
        allow_cleartext: bool = False,
        guard: ConnectionGuard | None = None,
        reserve: DescriptorReserve | None = None,
    ) -> None:
        self.app = app
        self.tls = TicketTLSFactory(tls_options, app)
        self.allow_cleartext = allow_cleartext
        self.guard = guard
        self.reserve = reserve

    def buildProtocol(self, addr: object) -> SniffingProtocol | None:
        if not admitted(self.guard, addr, getattr(self, "reserve", None)):
            return None
        return SniffingProtocol(self)


def admitted(
    guard: ConnectionGuard | None, addr: object, reserve: DescriptorReserve | None = None
) -> bool:
    """Whether the guard and the descriptor reserve (if any) let a connection proceed."""
    if guard is not None and not guard.admit(str(getattr(addr, "host", ""))):
        return False
    return reserve is None or reserve.admit()


class GuardedFactory(Factory):
    """Any listener's factory behind the guard (e.g. a directly exposed WebSocket port)."""

    def __init__(
        self,
        wrapped: Factory,
        guard: ConnectionGuard | None,
        reserve: DescriptorReserve | None = None,
    ) -> None:
        self.wrapped = wrapped
        self.guard = guard
        self.reserve = reserve

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        if not admitted(self.guard, addr, self.reserve):
            return None
        return self.wrapped.buildProtocol(addr)

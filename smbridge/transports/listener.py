"""The client listener: TLS and clear text on one port (PROTOCOL §1).

The first byte decides. ``0x16`` is a TLS handshake record: the connection is
wrapped in a TLS protocol fed with that first chunk. Anything else is clear text,
served only when the configuration allows it; otherwise the client gets an
``error`` frame ``tls-required`` and the connection is closed.

Before any of that, the connection guard (:mod:`smbridge.transports.guard`) may
refuse a new connection: ``buildProtocol`` returns ``None`` and Twisted closes the
socket at once, before a byte is read or written (so no TLS work is done).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from smbridge.codec import encode_error
from smbridge.transports.connection import ClientConnectionFactory
from smbridge.transports.guard import ConnectionGuard

TLS_HANDSHAKE = 0x16


class SniffingProtocol(Protocol):
    log = Logger()

    def __init__(self, factory: SniffingFactory) -> None:
        self._sniff = factory
        self._inner: Protocol | None = None

    def connectionMade(self) -> None:
        # Writes are already batched once per reactor turn; Nagle would only add delay
        # to a request/response protocol (and the tunnel's WebSocket layer turns it off).
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

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
        if data[0] == TLS_HANDSHAKE:
            app = factory.app.connection("tls")
            inner: Protocol = TLSMemoryBIOProtocol(factory.tls, app)
        elif factory.allow_cleartext:
            inner = factory.app.connection("clear")
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
        return inner

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
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
    ) -> None:
        self.app = app
        self.tls = TLSMemoryBIOFactory(tls_options, False, app)
        self.allow_cleartext = allow_cleartext
        self.guard = guard

    def buildProtocol(self, addr: object) -> SniffingProtocol | None:
        if not admitted(self.guard, addr):
            return None
        return SniffingProtocol(self)


def admitted(guard: ConnectionGuard | None, addr: object) -> bool:
    """Whether the guard (if any) lets a connection from ``addr`` proceed."""
    if guard is None:
        return True
    return guard.admit(str(getattr(addr, "host", "")))


class GuardedFactory(Factory):
    """Any listener's factory behind the guard (e.g. a directly exposed WebSocket port)."""

    def __init__(self, wrapped: Factory, guard: ConnectionGuard) -> None:
        self.wrapped = wrapped
        self.guard = guard

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        if not admitted(self.guard, addr):
            return None
        return self.wrapped.buildProtocol(addr)

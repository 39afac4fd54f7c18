"""TLS session resumption with rotated ticket keys, shared by the client port and wss.

A returning client offers a session ticket and skips the certificate signature and
the key exchange's expensive half, so a thousand clients coming back after a
switchover do not each pay a full handshake (docs/tunnel.md, "Session resumption").

pyOpenSSL cannot set ticket keys, and OpenSSL gives each ``SSL_CTX`` random ones; so a
key generation here is a whole context. :class:`TicketKeys` issues tickets from the
newest generation and, every ``rotation`` seconds (read from the injected clock when a
connection arrives), builds a new one; the previous generation stays to accept the
tickets it sealed for one more period, then goes, with its key. A ticket lives
``rotation`` seconds (its lifetime hint), so every ticket stays acceptable for its
whole life and none for longer than twice the period.

OpenSSL decrypts a ticket with the context its connection was created with, so the
connection must start on the right generation: the TLS protocols here hold the first
record (the ClientHello) and, when its ticket's key name
(:func:`~smbridge.transports.tickets.hello_key_name`) belongs to an older generation,
restart the not-yet-begun connection on that generation's context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import directlyProvides, implementer, providedBy
from zope.interface.declarations import Implements

from smbridge.transports.tickets import first_record, hello_key_name, issued_key_name

DEFAULT_ROTATION = 3600.0  # seconds a ticket key issues tickets (then accepts them as long)
GENERATIONS = 2  # the issuing key and the one before it


@dataclass(frozen=True)
class Generation:
    context: SSL.Context
    key_name: bytes | None  # None: not learnt (its tickets then resume nowhere else)
    born: float


@implementer(IOpenSSLServerConnectionCreator)
class TicketKeys:
    """Server TLS connections from rotating contexts; ``build`` makes one fresh context.

    ``rotation`` 0 turns resumption off: one context, built with tickets disabled.
    """

    log = Logger()

    def __init__(
        self, build: Callable[[bool], SSL.Context], clock: IReactorTime, rotation: float
    ) -> None:
        self._build = build
        self._clock = clock
        self.rotation = rotation
        self.generations: list[Generation] = []
        self.rotations = 0
        self.rotate()

    @property
    def enabled(self) -> bool:
        return self.rotation > 0

    def rotate(self) -> None:
        """Start a new key generation now; the oldest beyond the previous one is dropped."""
        context = self._build(self.enabled)
        if self.enabled:
            context.set_timeout(max(1, int(self.rotation)))  # the ticket lifetime
        key_name = learn_key_name(context) if self.enabled else None
        if self.enabled and key_name is None:
            self.log.warn(
                "TLS ticket key name not learnt: tickets resume until the next rotation only",
                event="tls.ticket_key_unknown",
            )
        kept = self.generations[: GENERATIONS - 1]
        self.generations = [Generation(context, key_name, self._clock.seconds()), *kept]
        self.rotations += 1
        if self.rotations > 1:
            self.log.info(
                "TLS session ticket key rotated",
                event="tls.ticket_rotated",
                generation=self.rotations,
            )

    def current(self) -> SSL.Context:
        """The issuing context (rotated first when its period is over)."""
        if self.enabled and self._clock.seconds() - self.generations[0].born >= self.rotation:
            self.rotate()
        return self.generations[0].context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.current(), None)

    def context_for(self, hello: bytes) -> SSL.Context | None:
        """The older generation whose key sealed the ticket in ``hello``; None: the current."""
        if len(self.generations) < 2:
            return None
        name = hello_key_name(hello)
        if name is None:
            return None
        for generation in self.generations[1:]:
            if generation.key_name == name:
                return generation.context
        return None


def learn_key_name(context: SSL.Context) -> bytes | None:
    """The key name of ``context``'s tickets, from one in-memory TLS 1.2 handshake with it."""
    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.set_max_proto_version(SSL.TLS1_2_VERSION)
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    server = SSL.Connection(context, None)
    server.set_accept_state()
    said = b""
    for _ in range(8):  # two round trips suffice; bounded whatever happens
        _step(client)
        data = _drain(client)
        if data:
            server.bio_write(data)
        _step(server)
        reply = _drain(server)
        said += reply
        if reply:
            client.bio_write(reply)
        name = issued_key_name(said)
        if name is not None:
            return name
    return None


def _step(connection: SSL.Connection) -> None:
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass


def _drain(connection: SSL.Connection) -> bytes:
    out = b""
    while True:
        try:
            out += connection.bio_read(65536)
        except SSL.WantReadError:
            return out


class _TicketRouting:
    """Holds the first TLS record, then restarts the connection on the ticket's generation.

    Mixed into Twisted's TLS protocols: nothing has been read or written by OpenSSL
    before the first record, so swapping the Connection then is invisible.
    """

    _hello: bytes | None = b""

    def dataReceived(self, data: bytes) -> None:
        hello = self._hello
        if hello is None:
            super().dataReceived(data)  # type: ignore[misc]
            return
        hello += data
        needed = first_record(hello)
        if len(hello) < needed:
            self._hello = hello
            return
        self._hello = None
        keys = self.factory._ticket_keys  # type: ignore[attr-defined]
        context = keys.context_for(hello[:needed]) if needed else None
        if context is not None:
            connection = SSL.Connection(context, None)
            connection.set_accept_state()
            self._tlsConnection = connection
        super().dataReceived(hello)  # type: ignore[misc]


# The interfaces a TLS protocol provides on top of its class's, by the class-level
# declaration of the transport it wraps (one or two transport classes in a process).
_PROVIDES: dict[tuple[type, Implements], Any] = {}


def provide_like(protocol: object, transport: object) -> None:
    """Make ``protocol`` provide what ``transport`` provides, as ``ProtocolWrapper`` does.

    The same declaration as ``directlyProvides(protocol, providedBy(transport))``;
    kept per (protocol class, transport class) so a connection does not build it
    again (zope keeps such declarations only while an object holds them).
    """
    spec = providedBy(transport)
    if type(spec) is not Implements:  # the transport declares its own: nothing to share
        directlyProvides(protocol, spec)
        return
    key = (type(protocol), spec)
    declaration = _PROVIDES.get(key)
    if declaration is None:
        directlyProvides(protocol, spec)
        _PROVIDES[key] = protocol.__provides__  # type: ignore[attr-defined]
        return
    protocol.__provides__ = declaration  # type: ignore[attr-defined]


class TicketTLSProtocol(_TicketRouting, TLSMemoryBIOProtocol):
    """The TLS layer of the client port and of wss.

    Not Twisted's default ``BufferingTLSTransport``: the bridge already writes once per
    reactor turn (WriteBatcher), and that class's aggregation costs a timer per turn
    and some memory per connection for nothing (docs/benchmarks.md, "Reconnects").
    """

    def __init__(self, factory: TLSMemoryBIOFactory, wrapped: Any) -> None:
        super().__init__(factory, wrapped)  # type: ignore[no-untyped-call]

    def makeConnection(self, transport: Any) -> None:
        """``TLSMemoryBIOProtocol.makeConnection`` without its per-interface declarations.

        Twisted declares each of the transport's interfaces in turn (each replacing
        the one before, nine zope declarations built per connection), then
        ``ProtocolWrapper.makeConnection`` declares them all at once: only that last
        one remains, and :func:`provide_like` makes it from a cache. The rest is
        Twisted's sequence (a server's: the wrapped protocol is connected).
        """
        if not self._connectWrapped:  # startTLS's case: Twisted's own way
            super().makeConnection(transport)  # type: ignore[no-untyped-call]
            return
        self._tlsConnection = self.factory._creatorCallable(self)
        self._appSendBuffer = []
        provide_like(self, transport)
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self.wrappedProtocol.makeConnection(self)
        self._checkHandshakeStatus()  # type: ignore[no-untyped-call]


class TicketTLSFactory(TLSMemoryBIOFactory):
    """A server TLS factory whose connections resume on the generation that sealed the ticket.

    ``creator`` that is not a :class:`TicketKeys` just gets Twisted's plain behaviour.
    """

    protocol = TicketTLSProtocol

    def __init__(self, creator: Any, wrapped: Any, clock: Any = None) -> None:
        super().__init__(creator, False, wrapped, clock)
        self._ticket_keys = creator if isinstance(creator, TicketKeys) else _NoTickets()


class _NoTickets:
    def context_for(self, hello: bytes) -> None:
        return None

"""The Notifier link's TLS: Twisted's TLS protocol without its small-write aggregation.

``wrapClientTLS`` gives each connection Twisted's default ``BufferingTLSTransport``,
which holds every write for a ``callLater(0)`` and encrypts what gathered at the next
reactor turn. The link already writes once per turn (``WriteBatcher``), so that costs
a timer and a turn of delay per batch for nothing: two per logon (``Authenticate``,
then ``SessionOpened``/``SessionClosed``). :func:`wrap_client_tls` is
``wrapClientTLS`` with the plain ``TLSMemoryBIOProtocol``, as the client listener
uses (``transports/resumption.py``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer


class UnbufferedTLSFactory(TLSMemoryBIOFactory):
    """Client TLS whose writes go to OpenSSL and the socket at once."""

    protocol = TLSMemoryBIOProtocol


@implementer(IStreamClientEndpoint)
class UnbufferedTLSEndpoint:
    """``wrapped`` with TLS over it (``creator``: ``optionsForClientTLS``'s kind)."""

    def __init__(self, creator: Any, wrapped: IStreamClientEndpoint) -> None:
        self.creator = creator
        self.wrapped = wrapped

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """Connect ``factory``'s protocol over TLS; fires with that protocol (not the TLS one)."""
        d = self.wrapped.connect(UnbufferedTLSFactory(self.creator, True, factory))
        return d.addCallback(_unwrap)


def _unwrap(protocol: Any) -> IProtocol:
    inner: IProtocol = protocol.wrappedProtocol
    return inner


def wrap_client_tls(creator: Any, wrapped: IStreamClientEndpoint) -> IStreamClientEndpoint:
    """``twisted.internet.endpoints.wrapClientTLS`` without write aggregation."""
    return UnbufferedTLSEndpoint(creator, wrapped)

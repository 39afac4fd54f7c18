"""Listening sockets shared by the workers of one host (Linux ``SO_REUSEPORT``).

Each worker opens its own socket on the same address with ``SO_REUSEPORT`` set, then
binds and listens; the kernel spreads new connections over the group's listening
sockets by a hash of the connection's addresses, each worker with its own accept
queue. When a worker dies its socket closes with it and leaves the group at once, so
new connections go to the living workers only (the few waiting in the dead one's
queue at that instant are reset, and their clients reconnect).

The supervisor reserves each port number first (:func:`reserve`): a socket bound with
``SO_REUSEPORT`` but never listening, held for the supervisor's life. It takes no
connections (the kernel only hands them to listening sockets), keeps the number
while workers restart (so a configured port 0 means one number for all), and makes
a port that is taken fail once, at the supervisor's start, naming its option.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer


def _family(interface: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in interface else socket.AF_INET


def _shared_socket(interface: str, port: int) -> socket.socket:
    """A TCP socket with SO_REUSEADDR and SO_REUSEPORT, bound to ``interface:port``."""
    sock = socket.socket(_family(interface), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
    except OSError as e:
        sock.close()
        raise CannotListenError(interface, port, e) from None
    return sock


def reserve(interface: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket: the port number, held for the workers.

    Raises ``CannotListenError`` when the address is taken (by a socket without
    SO_REUSEPORT, or another user's).
    """
    return _shared_socket(interface, port)


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP server endpoint whose socket joins the SO_REUSEPORT group of its address."""

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = 50) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface or "0.0.0.0"
        self.backlog = backlog

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:  # noqa: N803
        try:
            sock = _shared_socket(self.interface, self.port)
        except CannotListenError as e:
            return defer.fail(e)
        try:
            sock.listen(self.backlog)
            sock.setblocking(False)
            port = self.reactor.adoptStreamPort(sock.fileno(), sock.family, protocolFactory)
        except OSError as e:
            return defer.fail(CannotListenError(self.interface, self.port, e))
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor
        return defer.succeed(port)

"""Autobahn's per-connection overhead, trimmed for thousands of idle tunnel sessions.

Two costs of ``WebSocketServerProtocol`` that the tunnel does not need
(docs/benchmarks.md, "Reconnects"):

* On every connection Autobahn copies each of its ~30 protocol options from the factory
  onto the instance, then pretty-prints the list for a debug line whether or not debug
  is on (``pformat``: about a third of a millisecond of CPU per connection).
  :func:`options_as_class` puts the factory's options on a protocol subclass instead:
  an instance finds them on its class and copies nothing, and the list printed is
  empty.
* After the opening handshake the request and response (bytes, header dict, status
  line, key) and the transport details (peer, TLS channel id) stay referenced by the
  connection for its whole life; each connection also holds an empty send queue (a
  ``deque``: 760 bytes) that only chopped or synchronous sends use, which the tunnel
  never makes, and traffic counters nobody reads. :func:`drop_handshake` lets them go
  once the connection is open: the queue becomes a placeholder that turns into a
  real ``deque`` on its first ``append``, the counters a shared sink. Autobahn's event
  tables (nothing listens to its ``message`` event) and its UTF-8 validator (only a
  text message uses it, and one closes a tunnel connection) go too: the class makes
  them again on first use (:class:`PerConnection`); the empty subprotocol and extension
  lists fall back to the class's empty tuples. What is left fits the 464-byte dict.

And per connection work a reconnect storm pays for (:class:`LeanServerProtocol`):
Autobahn builds "transport details" for WAMP on accept and again on open (peer
certificate, TLS channel id), and formats the arguments of its debug lines
(colour-highlighted names and values) on accept, on the 101 response and on close,
whether or not debug is on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from autobahn.twisted.util import peer2str
from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

# Attributes of WebSocketServerProtocol only read while the opening handshake runs.
HANDSHAKE_ONLY = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "_wskey",
    "_transport_details",
    "websocket_protocols",  # what the client offered: read when accepting it
    "websocket_extensions",
)

# Attributes dropped from an open connection while they hold an empty list: the class
# holds an empty tuple instead (the tunnel negotiates no extension).
EMPTY_WHEN_OPEN = ("websocket_extensions_in_use",)


# Attributes Autobahn sets on every connection that hold these values while it is open:
# the protocol class holds them (options_as_class), so an open connection's own
# __dict__ can go without them (half the entries, half the dict).
DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(HANDSHAKE_ONLY, None),
    "websocket_protocols": (),
    "websocket_extensions": (),
    **dict.fromkeys(EMPTY_WHEN_OPEN, ()),
    "websocket_origin": "",  # none sent (browsers send one: then it stays the connection's)
    **dict.fromkeys(
        (
            "wasNotCleanReason",
            "remoteCloseCode",
            "remoteCloseReason",
            "localCloseCode",
            "localCloseReason",
            "trackedTimings",
            "openHandshakeTimeoutCall",
            "closeHandshakeTimeoutCall",
            "serverConnectionDropTimeoutCall",
            "autoPingTimeoutCall",
            "autoPingPending",
            "websocket_protocol_in_use",
            "_perMessageCompress",
            "current_frame",
        ),
        None,
    ),
    **dict.fromkeys(
        (
            "wasClean",
            "wasServerConnectionDropTimeout",
            "wasOpenHandshakeTimeout",
            "wasCloseHandshakeTimeout",
            "wasMaxFramePayloadSizeExceeded",
            "wasMaxMessagePayloadSizeExceeded",
            "wasServingFlashSocketPolicyFile",
            "closedByMe",
            "failedByMe",
            "droppedByMe",
            "inside_message",
            "triggered",
        ),
        False,
    ),
}
_MISSING = object()
EVENTS = ("message",)  # Autobahn's valid events of a WebSocket protocol


def options_as_class(protocol: type[Any], factory: Any) -> type[Any]:
    """A subclass of ``protocol`` holding ``factory``'s current options as class attributes,
    and the :data:`DEFAULTS` that the class does not define already.

    Build it again whenever the factory's options change (``setProtocolOptions``).
    """
    names = protocol.CONFIG_ATTRS
    attrs: dict[str, Any] = {n: v for n, v in DEFAULTS.items() if not hasattr(protocol, n)}
    for name in names:  # a function option (perMessageCompressionAccept) must not bind
        value = getattr(factory, name)
        attrs[name] = staticmethod(value) if callable(value) else value
    attrs["CONFIG_ATTRS"] = ()
    attrs["__module__"] = protocol.__module__
    attrs["__doc__"] = protocol.__doc__
    return type(protocol.__name__, (protocol,), attrs)


def drop_handshake(protocol: Any) -> None:
    """Release what only the opening handshake needed (call from ``onOpen``), and rebuild
    the connection's ``__dict__`` without the entries its class holds the same value for.
    """
    if not protocol.send_queue:
        protocol.send_queue = LazyQueue(protocol)
    protocol.trafficStats = NO_TRAFFIC_STATS
    own = protocol.__dict__
    held = type(protocol).__dict__
    # Autobahn's event tables (nothing listens; made again on first use: PerConnection)
    # and its UTF-8 validator (no text message came yet; one closes the connection).
    drop = {name for name in EMPTY_WHEN_OPEN if own.get(name) == []}
    results = own.get("_results")
    if (
        protocol._listeners is None
        and own.get("_valid_events") == list(EVENTS)
        and isinstance(results, dict)
        and not any(results.values())
    ):
        drop |= {"_valid_events", "_results"}
    if not protocol.inside_message:
        drop.add("utf8validator")
    kept = {}
    for name, value in own.items():
        default = held.get(name, _MISSING) if name in DEFAULTS else _MISSING
        if name in drop:
            continue
        if default is _MISSING or (value is not default and name not in HANDSHAKE_ONLY):
            kept[name] = value
    protocol.__dict__ = kept  # a new dict, sized for what is left


class PerConnection:
    """A class attribute that makes a connection its own value on first read (and keeps
    it in the connection's ``__dict__``): for state most connections never use."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    def __get__(self, protocol: Any, owner: type[Any] | None = None) -> Any:
        if protocol is None:
            return self
        value = self._make(protocol)
        protocol.__dict__[self._name] = value
        return value


class LazyQueue:
    """An empty send queue standing in for Autobahn's ``deque`` until something is queued."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def append(self, item: Any) -> None:
        self._owner.send_queue = deque([item])

    def popleft(self) -> Any:
        raise IndexError("pop from an empty deque")


class _NoTrafficStats:
    """Autobahn's traffic counters, not kept: every counter reads 0, writes are dropped."""

    __slots__ = ()

    def __getattr__(self, name: str) -> int:
        return 0

    def __setattr__(self, name: str, value: Any) -> None:
        pass


NO_TRAFFIC_STATS = _NoTrafficStats()


class LeanServerProtocol(WebSocketServerProtocol):
    """Autobahn's server protocol without its transport details and eager debug lines.

    Each override does what Autobahn's does, less building ``TransportDetails`` (unused
    outside WAMP) and formatting arguments for debug lines nobody sees.
    ``connectionLost`` calls ``_connectionLost`` directly: Autobahn's adds only debug
    lines and an error line for TLS errors, which a subclass handles itself.
    """

    tcpNoDelay: bool  # Autobahn options (on the class: options_as_class)
    logOctets: bool
    # What drop_handshake takes off an open connection, made again when first used.
    _valid_events = EVENTS  # type: ignore[assignment]  # read only: a tuple, shared
    _results = PerConnection(lambda protocol: dict.fromkeys(protocol._valid_events))
    utf8validator = PerConnection(lambda protocol: Utf8Validator())

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.peer = peer2str(transport)
        try:
            transport.setTcpNoDelay(self.tcpNoDelay)
        except (AttributeError, OSError):  # not a TCP socket, as in Autobahn
            pass
        self._connectionMade()

    def _connectionMade(self) -> None:
        WebSocketProtocol._connectionMade(self)
        self.factory.countConnections += 1

    def _connectionLost(self, reason: Any) -> None:
        WebSocketProtocol._connectionLost(self, reason)
        self.factory.countConnections -= 1

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._connectionLost(reason)

    def _onOpen(self) -> None:
        self.onOpen()

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Autobahn's, without formatting its debug line for each direct write (the 101)."""
        transport = self.transport
        if sync or chopsize or self.send_queue or transport is None:
            super().sendData(data, sync, chopsize)
            return
        transport.write(data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        else:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)

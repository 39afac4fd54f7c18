"""Dialing a bridge over the WebSocket tunnel: ``ws://`` and ``wss://`` URIs.

The client's :class:`BridgeProtocol` stays the same; it is given a transport whose
``write`` sends one binary WebSocket message, and it is fed the payload of every
binary message the bridge sends. Every handshake carries ``ININ-Client-Type``
(the reverse proxy and the bridge refuse handshakes without it). A refused handshake
fails with :class:`ClientError` ``handshake-refused``, whose body holds the HTTP
``status`` and the bridge's or proxy's one-line reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge import pki
from smbridge.client.protocol import BridgeProtocol, ClientError
from smbridge.client.uri import BridgeAddress
from smbridge.codec import DEFAULT_MAX_FRAME

DEFAULT_CLIENT_TYPE = "smbridge-client"
CLOSE_UNSUPPORTED_DATA = 1003


@implementer(ITransport)
class MessageTransport:
    """What the BridgeProtocol writes to: each write is one binary message."""

    def __init__(self, ws: BridgeWebSocketProtocol) -> None:
        self.ws = ws

    def write(self, data: bytes) -> None:
        self.ws.sendMessage(data, isBinary=True)  # type: ignore[no-untyped-call]

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.ws.sendClose(1000)

    def abortConnection(self) -> None:
        self.ws.dropConnection(abort=True)

    def getPeer(self) -> IAddress:
        assert self.ws.transport is not None
        return self.ws.transport.getPeer()

    def getHost(self) -> IAddress:
        assert self.ws.transport is not None
        return self.ws.transport.getHost()


class BridgeWebSocketProtocol(WebSocketClientProtocol):
    events = Logger()  # autobahn's own ``log`` (txaio, debug off) stays as it is
    factory: BridgeWebSocketFactory

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        self.refusal: ClientError | None = None

    @property
    def bridge(self) -> BridgeProtocol:
        return self.factory.bridge

    def failHandshake(self, reason: str) -> None:
        status_line = getattr(self, "http_status_line", "") or ""
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        if status is not None and status != 101:
            why = parts[2] if len(parts) > 2 else ""
            self.refusal = ClientError(
                "handshake-refused",
                f"the server refused the WebSocket handshake: {status} {why}".rstrip(),
                {"code": "handshake-refused", "status": status, "reason": why},
            )
        else:
            self.refusal = ClientError("handshake-failed", f"WebSocket handshake failed: {reason}")
        super().failHandshake(reason)  # type: ignore[no-untyped-call]

    def onOpen(self) -> None:
        self.opened = True
        self.bridge.makeConnection(MessageTransport(self))  # type: ignore[no-untyped-call]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.events.warn("Bridge sent a text message; closing", event="client.ws.text")
            self.sendClose(CLOSE_UNSUPPORTED_DATA, "binary messages only")
            return
        self.bridge.dataReceived(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        bridge = self.bridge
        if not bridge.ready.called:
            refusal = self.refusal or ClientError(
                "connection-lost",
                f"WebSocket connection ended before it opened: {reason or self.wasNotCleanReason}",
            )
            bridge.ready.errback(refusal)
        if self.opened:
            error: Exception = ConnectionDone() if wasClean else ConnectionLost(reason or "")
            bridge.connectionLost(Failure(error))
        else:
            bridge.connectionLost(Failure(ConnectionLost(reason or "")))


class BridgeWebSocketFactory(WebSocketClientFactory):
    protocol = BridgeWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, bridge: BridgeProtocol, url: str, client_type: str, reactor: Any) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            url, headers={"ININ-Client-Type": client_type}, reactor=reactor
        )
        self.bridge = bridge


def websocket_url(address: BridgeAddress) -> str:
    path = address.path or "/"
    return f"{address.scheme}://{address.netloc}{path}"


def dial(
    reactor: Any,
    address: BridgeAddress,
    *,
    ca: Path | None,
    hostname: str | None,
    timeout: float,
    client_type: str = DEFAULT_CLIENT_TYPE,
    max_frame: int = DEFAULT_MAX_FRAME,
    cert: Path | None = None,
    key: Path | None = None,
) -> tuple[BridgeProtocol, Deferred[Any]]:
    """Connect; returns the BridgeProtocol and the Deferred of the TCP (and TLS) connection.

    The protocol's ``ready`` fires once the WebSocket is open.
    """
    endpoint: Any = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    if address.tls:
        name = hostname or address.host
        options = (
            pki.client_options(name, ca, cert, key)  # cert: a client certificate to present
            if ca is not None or cert is not None
            else ssl.optionsForClientTLS(name)
        )
        endpoint = wrapClientTLS(options, endpoint)
    bridge = BridgeProtocol(tls=False, max_frame=max_frame)
    factory = BridgeWebSocketFactory(bridge, websocket_url(address), client_type, reactor)
    limit = 4 * (max_frame + 4)
    factory.setProtocolOptions(  # type: ignore[no-untyped-call]
        openHandshakeTimeout=timeout,
        closeHandshakeTimeout=5,
        maxFramePayloadSize=limit,
        maxMessagePayloadSize=limit,
    )
    factory.noisy = False
    return bridge, endpoint.connect(factory)

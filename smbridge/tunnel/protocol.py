"""The per-connection half of the WebSocket tunnel: one Autobahn protocol per socket.

:class:`TunnelProtocol` is the thin Autobahn adapter (handshake decision, deadlines
before logon, fast inward frames, the closing handshake); :class:`WebSocketConnection`
is the :class:`ClientConnection` whose byte stream rides its binary messages. The
listeners that make them (``TunnelFactory``, ``TunnelService``) are in tunnel.py, which
re-exports these names; this module sees its factory only through :class:`ListenerSide`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Protocol

from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import BadFrame
from smbridge.config import TunnelSettings
from smbridge.transports.client_certs import ForwardedCertificate, ProxyHeaders
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory
from smbridge.transports.prelogon import HANDSHAKE, LOGON, UPGRADE, Deadline
from smbridge.tunnel.route import Refusal, Route
from smbridge.tunnel.slim import LeanServerProtocol, drop_handshake
from smbridge.tunnel.wsframes import take_binary_frames

MAX_HANDSHAKE_BYTES = 16384  # request line and headers
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008


def frame_header(length: int) -> bytes:
    """The header of an unmasked, final, binary WebSocket frame of ``length`` bytes."""
    if length < 126:
        return bytes((0x82, length))
    if length < 0x10000:
        return struct.pack(">BBH", 0x82, 126, length)
    return struct.pack(">BBQ", 0x82, 127, length)


class ListenerSide(Protocol):
    """What a connection reads from its listener's factory (tunnel.TunnelFactory)."""

    app: ClientConnectionFactory
    scheme: str  # ws or wss
    settings: TunnelSettings
    max_message: int
    reactor: Any

    def decide(self, target: str, headers: Mapping[str, str]) -> tuple[Route | Refusal, bool]: ...

    @property
    def proxy_headers(self) -> ProxyHeaders: ...  # certificate headers (client_certs.py)


class WebSocketConnection(ClientConnection):
    """A client connection whose byte stream rides WebSocket messages."""

    # From a trusted proxy: its client-certificate headers (transports/client_certs.py).
    forwarded_certificate: ForwardedCertificate | None = None

    def __init__(self, factory: ClientConnectionFactory, kind: str, ws: TunnelProtocol) -> None:
        super().__init__(factory.router, factory.batcher, factory.max_frame, kind)
        self.factory = factory
        self.ws = ws
        self._close_code = CLOSE_NORMAL

    def open(self, route: Route, remote: str) -> None:
        """The handshake succeeded: the origin is known before any frame is read."""
        self.origin = route.origin(self.kind)
        self.transport = self.ws.transport  # for abortConnection at shutdown
        self.remote = remote
        self.connected = True
        self.factory.connections.add(self)
        self._attach()

    def transport_held(self) -> int:
        """The transport's backlog plus what Autobahn queued in front of it (docs/sender.md)."""
        queued = sum(len(item[0]) for item in self.ws.send_queue)
        return super().transport_held() + queued

    def _write(self, out: list[bytes]) -> None:
        if self.ws.state == self.ws.STATE_OPEN:
            parts: list[bytes] = []
            for frame in out:
                parts.append(frame_header(len(frame)))
                parts.append(frame)
            data = b"".join(parts)
            transport = self.ws.transport
            if self.ws.send_queue or transport is None:
                self.ws.sendData(data)
            else:  # what sendData does, without formatting its debug line each time
                transport.write(data)

    def _refuse(self, bad: BadFrame) -> None:
        self._close_code = CLOSE_POLICY_VIOLATION
        super()._refuse(bad)

    def flush_for_close(self) -> None:
        """Write everything queued (held frames too) while the WebSocket is still open."""
        if self.connected and self.ws.state == self.ws.STATE_OPEN:
            self._resume_for_close()
            self.flush()

    def close(self) -> None:
        """Write what is queued, then start the closing handshake."""
        if self.connected and self.ws.state == self.ws.STATE_OPEN:
            self.flush_for_close()
            if self.transport is not None:
                self.transport.unregisterProducer()  # type: ignore[attr-defined]  # wss: TLS
            if self._close_code == CLOSE_NORMAL:
                self.ws.sendClose(CLOSE_NORMAL)
            else:  # sendClose() accepts only 1000 and 3000..4999
                self.ws._fail_connection(self._close_code, "bad frame")


@implementer(IHandshakeListener)
class TunnelProtocol(LeanServerProtocol):
    # Autobahn's own ``log`` (txaio, debug off) is left alone: replacing it with a
    # twisted Logger would emit its per-message debug events.
    events = Logger()
    factory: ListenerSide
    _drop_call: Any = None  # the bounded wait for an orderly close (class defaults: memory)
    _lost = False
    _deadline: Deadline | None = None  # before logon (transports/prelogon.py)
    _forwarded: ForwardedCertificate | None = None  # a trusted proxy's certificate headers

    def __init__(self) -> None:
        super().__init__()
        self.route: Route | None = None
        self.conn: WebSocketConnection | None = None
        self._remote = ""

    def connectionMade(self) -> None:
        super().connectionMade()  # LeanServerProtocol's (slim.py)
        transport: Any = self.transport
        if transport is not None:
            stage = HANDSHAKE if self.factory.scheme == "wss" else UPGRADE
            self._deadline = self.factory.app.deadline(
                transport.abortConnection,
                stage,
                str(self.peer),
            )

    def handshakeCompleted(self) -> None:
        """TLS is up (wss, IHandshakeListener): the upgrade's time starts now."""
        if self._deadline is not None:
            self._deadline.enter(UPGRADE)

    def processHandshake(self) -> None:
        data: bytes = self.data
        if len(data) > MAX_HANDSHAKE_BYTES and data.find(b"\r\n\r\n", 0, MAX_HANDSHAKE_BYTES) < 0:
            self.failHandshake("request header too large", 431)
            return
        super().processHandshake()

    def onConnect(self, request: ConnectionRequest) -> None:
        factory = self.factory
        headers: dict[str, str] = request.headers
        transport = self.transport
        assert transport is not None
        self._remote = client_address(headers, transport.getPeer())
        peer_host = str(getattr(transport.getPeer(), "host", ""))
        self._forwarded = self.factory.proxy_headers.take(headers, peer_host)
        decision, fresh = factory.decide(self.http_request_uri, headers)
        if isinstance(decision, Refusal):
            self.events.info(
                "Tunnel refused {remote}: {status} {reason}",
                remote=self._remote,
                status=decision.status,
                reason=decision.reason,
                event="tunnel.refused",
            )
            raise ConnectionDeny(decision.status, decision.reason)
        self.route = decision
        if fresh:  # once per route, not per connection: the logon logs each one
            self.events.info(
                "Tunnel route {server} (base {base}, client type {client_type}) "
                "first requested from {remote}",
                remote=self._remote,
                server=decision.server,
                base=decision.base_uri,
                client_type=decision.client_type,
                event="tunnel.route",
            )
        return None

    def onOpen(self) -> None:
        assert self.route is not None
        drop_handshake(self)  # the request and response are not needed any more (slim.py)
        conn = WebSocketConnection(self.factory.app, self.factory.scheme, self)
        conn.forwarded_certificate = self._forwarded
        conn.open(self.route, self._remote)
        self.conn = conn
        deadline, limits = self._deadline, self.factory.app.prelogon
        if deadline is not None and limits is not None:
            conn.before_logon(deadline, limits)  # the connection holds it from now on
            deadline.enter(LOGON)
            self._deadline = None

    def dataReceived(self, data: bytes) -> None:
        self._dataReceived(data)  # Autobahn's, minus formatting a debug line per read

    def processData(self) -> bool:
        """Take the common frames off the buffer fast (wsframes.py); Autobahn does the rest."""
        conn = self.conn
        if (
            conn is not None
            and self.current_frame is None
            and not self.inside_message
            and self.state == self.STATE_OPEN
        ):
            payloads, used = take_binary_frames(self.data, self.factory.max_message)
            if used:
                self.data = self.data[used:]
                self.trafficStats.incomingWebSocketFrames += len(payloads)
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()  # traffic counts as a pong, as in Autobahn
                if conn.connected:
                    conn.dataReceived(payloads[0] if len(payloads) == 1 else b"".join(payloads))
                return len(self.data) > 0
        more: bool = super().processData()
        return more

    # Messages are not collected whole: the stream needs no message boundaries, so each
    # frame's bytes go straight to the connection's decoder. This skips Autobahn's
    # per-message join and its "message" event (a Deferred per message), which cost
    # more than the rest of the tunnel together. The size limit still applies: Autobahn
    # checks it as each frame begins.
    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        if isBinary:
            return
        self.events.info(
            "Text message from {remote}: closing with 1003",
            remote=self._remote,
            event="tunnel.text_message",
        )
        if self.conn is not None:
            self.conn.flush()
        self._fail_connection(CLOSE_UNSUPPORTED_DATA, "binary messages only")

    def onMessageFrameData(self, payload: bytes) -> None:
        conn = self.conn
        if (
            conn is not None
            and conn.connected
            and self.message_is_binary
            and not self.failedByMe
            and self.state == self.STATE_OPEN
        ):
            conn.dataReceived(payload)

    def onMessageFrameEnd(self) -> None:
        pass  # nothing was collected

    def onMessageEnd(self) -> None:
        pass

    # --- the closing handshake (RFC 6455 §5.5.1, §7.1.1, §7.1.7; docs/tunnel.md) ---------
    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        """Write what the connection has queued for this turn, then the close frame.

        A reply to a request that came in the same read as the client's close (a
        browser's ``send(DestroySession); close()``) goes out before the close answer.
        """
        if self.conn is not None:
            self.conn.flush_for_close()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def _closeConnection(self, abort: bool = False) -> None:
        """End the TCP connection once the close frame is written, within a bound.

        Autobahn aborts (a reset, discarding the unsent close frame) when a server
        gets the reply to its close, or a close while answering an invalid one. After
        a clean handshake the bridge closes in order instead (the frame, then FIN);
        only a peer that does not let the write finish within the close timeout is
        aborted. Timeouts (a dead peer) still abort at once.
        """
        transport = self.transport
        if transport is None:
            return
        if abort and not self.wasClean:
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        transport.loseConnection()
        if self._drop_call is None and self.factory.settings.close_timeout > 0:
            self._drop_call = self.factory.reactor.callLater(
                self.factory.settings.close_timeout, self._drop_timed_out
            )

    def _drop_timed_out(self) -> None:
        self._drop_call = None
        transport = self.transport
        if transport is not None and not self._lost:
            transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._deadline is not None:
            self._deadline.done()
        call, self._drop_call = self._drop_call, None
        if call is not None and call.active():
            call.cancel()
        if isinstance(reason.value, SSL.Error):
            # A failed TLS handshake (a scanner, a client with no common protocol) is the
            # peer's problem: one debug line, as on the client port, instead of Autobahn's
            # error-level line per failure.
            self.events.debug(
                "TLS failed with {peer}: {error}",
                peer=self.peer,
                error=reason.value,
                event="tunnel.tls_failed",
            )
        self._connectionLost(reason)  # LeanServerProtocol's (slim.py): handled here

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.connectionLost(Failure(ConnectionDone()))


def client_address(headers: Mapping[str, str], peer: Any) -> str:
    """The client's address: the proxy's ``X-Real-IP``, else the last ``X-Forwarded-For``
    hop (the one the proxy added), else the TCP peer."""
    real = (headers.get("x-real-ip") or "").strip()
    if not real:
        hops = [h.strip() for h in (headers.get("x-forwarded-for") or "").split(",")]
        real = hops[-1] if hops and hops[-1] else ""
    direct = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
    return f"{real[:64]} via {direct}" if real else direct

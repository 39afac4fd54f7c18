"""The WebSocket tunnel on 8951 (ws) and 8952 (wss): a thin Autobahn adapter.

Each accepted WebSocket carries the same byte stream as the TLS listener and feeds
the same :class:`ClientConnection` (decoder, router, sessions), so a session over
the tunnel behaves like one over TLS. What the tunnel adds:

* the handshake decision (route.py): refusals are HTTP answers with a status and a
  one-line reason (``ConnectionDeny``); an accepted URI sets the connection's
  :class:`Origin` (base URI and alias) before any frame is read;
* one whole frame per binary WebSocket message outward, batched per reactor turn
  into a single write; inward, binary messages are stream bytes however split;
  a text message closes with 1003;
* keep-alive pings (well under nginx's 60 s ``proxy_read_timeout``), open and close
  handshake timeouts, and a message size limit tied to the maximum frame;
* deadlines before logon (transports/prelogon.py): on wss the TLS handshake, then
  the upgrade (the opening handshake), then the first logon, each within its time;
  with them the bridge's own, Autobahn's open handshake timer is off.

Autobahn's native extension (NVX) speeds up its WebSocket layer; the service
records whether it is in use (``TunnelService.uses_nvx``) and logs it at start.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

import autobahn.websocket as autobahn_ws
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from OpenSSL import SSL
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLServerConnectionCreator,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import BadFrame
from smbridge.config import TunnelSettings
from smbridge.listening import ListenerService
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory
from smbridge.transports.descriptors import DescriptorReserve
from smbridge.transports.guard import ConnectionGuard
from smbridge.transports.listener import GuardedFactory
from smbridge.transports.prelogon import HANDSHAKE, LOGON, UPGRADE, Deadline
from smbridge.transports.resumption import TicketTLSFactory
from smbridge.tunnel.route import (
    ALIAS_MAP_PARAMETER,
    AliasMap,
    Decisions,
    KnownServers,
    Refusal,
    Route,
    parse_alias_map,
)
from smbridge.tunnel.slim import LeanServerProtocol, drop_handshake, options_as_class
from smbridge.tunnel.uris import ServerNames
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


class BridgeNames:
    """The names the tunnel serves and builds URIs with, read at each use.

    ``cic()`` gives the CIC server's name from the Notifier's Register answer (None
    before the link first came up); ``parameters()`` the server parameters in force.
    The alias map is parsed again only when its text changes, and what it skips is
    logged once per text.
    """

    log = Logger()

    def __init__(
        self,
        cic: Callable[[], str | None],
        parameters: Callable[[], Mapping[str, Any]],
        own: tuple[str, ...],
    ) -> None:
        self._cic = cic
        self._parameters = parameters
        self._own = own
        self._map_text: str | None = None
        self._map = AliasMap()
        self._known: KnownServers | None = None
        self._known_key: tuple[str | None, AliasMap | None] = (None, None)

    def alias_map(self) -> AliasMap:
        text = ""
        for name, value in self._parameters().items():
            if name.lower() == ALIAS_MAP_PARAMETER.lower():
                text = str(value)
                break
        if text != self._map_text:
            self._map, problems = parse_alias_map(text)
            self._map_text = text
            for problem in problems:
                self.log.warn(
                    "{parameter}: skipped {problem}",
                    parameter=ALIAS_MAP_PARAMETER,
                    problem=problem,
                    event="tunnel.alias_map.skipped",
                )
        return self._map

    def server_names(self) -> ServerNames:
        return ServerNames(self._cic(), self.alias_map())

    def known(self) -> KnownServers:
        """The names served; the same object while the CIC name and the alias map stay."""
        names = self.server_names()
        key = (names.cic, names.aliases)
        if self._known is None or self._known_key[0] != key[0] or self._known_key[1] is not key[1]:
            known = KnownServers.of((*self._own, names.cic), names.aliases, names.cic is not None)
            self._known, self._known_key = known, key
        return self._known


def registered_cic(registered: Mapping[str, Any]) -> str | None:
    """The CIC server's name in a Register answer, if any."""
    cic = registered.get("cic")
    name = cic.get("name") if isinstance(cic, Mapping) else None
    return str(name) if name else None


class WebSocketConnection(ClientConnection):
    """A client connection whose byte stream rides WebSocket messages."""

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
    factory: TunnelFactory
    _drop_call: Any = None  # the bounded wait for an orderly close (class defaults: memory)
    _lost = False
    _deadline: Deadline | None = None  # before logon (transports/prelogon.py)

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


class TunnelFactory(WebSocketServerFactory):
    """One listener's factory: ``scheme`` is ``ws`` or ``wss``."""

    protocol = TunnelProtocol  # type: ignore[assignment]

    def __init__(
        self,
        app: ClientConnectionFactory,
        names: BridgeNames,
        scheme: str,
        settings: TunnelSettings,
        reactor: Any,
    ) -> None:
        super().__init__(server="smbridge", reactor=reactor)  # type: ignore[no-untyped-call]
        self.app = app
        self.names = names
        self.scheme = scheme
        self.settings = settings
        self.decisions = Decisions()  # route.decode's accepted answers, reused
        max_message = app.max_frame + 4  # one whole frame of the largest size
        self.max_message = max_message
        self.setProtocolOptions(
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout if settings.ping_interval else 0,
            # The bridge's own upgrade deadline replaces Autobahn's timer when it is on.
            openHandshakeTimeout=0 if app.prelogon is not None else settings.open_timeout,
            closeHandshakeTimeout=settings.close_timeout,
            maxFramePayloadSize=max_message,
            maxMessagePayloadSize=max_message,
            webStatus=False,
            failByDrop=False,
        )
        self.noisy = False

    def setProtocolOptions(self, *args: Any, **options: Any) -> None:
        """Autobahn's; then ``protocol`` holds the options, so that each connection does not
        copy them (slim.py). Connections made later see the change, as with Autobahn's."""
        super().setProtocolOptions(*args, **options)  # type: ignore[no-untyped-call]
        self.protocol = options_as_class(TunnelProtocol, self)

    def decide(self, target: str, headers: Mapping[str, str]) -> tuple[Route | Refusal, bool]:
        return self.decisions.decide(
            target, headers, self.scheme, self.names.known(), self.settings.require_client_type
        )


class TunnelService(MultiService):
    """The ws and wss listeners; either may be absent (``None`` port)."""

    log = Logger()

    def __init__(
        self,
        app: ClientConnectionFactory,
        names: BridgeNames,
        settings: TunnelSettings,
        reactor: Any,
        ws: IStreamServerEndpoint | None,
        wss: Callable[[], tuple[IStreamServerEndpoint, IOpenSSLServerConnectionCreator]] | None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.setName("tunnel")  # type: ignore[no-untyped-call]
        self.app = app
        self.names = names
        self.settings = settings
        self.reactor = reactor
        self._ws_endpoint = ws
        self._wss_endpoint = wss  # built at start: it reads the certificate
        self.ws: ListenerService | None = None
        self.wss: ListenerService | None = None
        # The connection guard the TLS listener has too (set by the bridge; None: none),
        # and the descriptor reserve (likewise).
        self.guard: ConnectionGuard | None = None
        self.reserve: DescriptorReserve | None = None
        self.factories: dict[str, TunnelFactory] = {}
        self.has_nvx: bool = bool(autobahn_ws.HAS_NVX)
        self.uses_nvx: bool = bool(autobahn_ws.USES_NVX)

    def factory(self, scheme: str) -> TunnelFactory:
        """The WebSocket factory of one listener (kept in ``factories`` by scheme)."""
        factory = TunnelFactory(self.app, self.names, scheme, self.settings, self.reactor)
        self.factories[scheme] = factory
        return factory

    def _guarded(self, factory: Any) -> Any:
        """``factory`` behind the guard and the reserve (refused before any TLS or HTTP work)."""
        if self.guard is None and self.reserve is None:
            return factory
        return GuardedFactory(factory, self.guard, self.reserve)

    def startService(self) -> None:
        self._log_nvx()
        if self._ws_endpoint is not None:
            ws = self._guarded(self.factory("ws"))
            self.ws = ListenerService("ws-listener", self._ws_endpoint, ws, False)
            self.ws.setServiceParent(self)  # type: ignore[no-untyped-call]
        if self._wss_endpoint is not None:
            endpoint, options = self._wss_endpoint()
            tls = self._guarded(TicketTLSFactory(options, self.factory("wss")))  # resumption
            self.wss = ListenerService("wss-listener", endpoint, tls, False)
            self.wss.setServiceParent(self)  # type: ignore[no-untyped-call]
        super().startService()  # type: ignore[no-untyped-call]

    def _log_nvx(self) -> None:
        if self.uses_nvx:
            self.log.info(
                "WebSocket tunnel uses Autobahn's native extension (NVX)",
                uses_nvx=True,
                event="tunnel.nvx",
            )
        else:
            why = "disabled by AUTOBAHN_USE_NVX=0" if self.has_nvx else "not built"
            self.log.warn(
                "WebSocket tunnel runs WITHOUT Autobahn's native extension (NVX: {why}); "
                "its WebSocket layer is much slower. Install autobahn with NVX and leave "
                "AUTOBAHN_USE_NVX unset.",
                why=why,
                uses_nvx=False,
                event="tunnel.nvx",
            )

    def when_listening(self) -> defer.Deferred[None]:
        waits = [s.when_listening() for s in (self.ws, self.wss) if s is not None]
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    @property
    def ws_port(self) -> int | None:
        return _bound(self.ws)

    @property
    def wss_port(self) -> int | None:
        return _bound(self.wss)


def _bound(listener: ListenerService | None) -> int | None:
    if listener is None or listener.port is None:
        return None
    return int(listener.port.getHost().port)  # type: ignore[attr-defined]

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

This module holds the listeners (``TunnelFactory``, ``TunnelService``) and the names
they serve (``BridgeNames``); the per-connection protocol is in protocol.py, whose
names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import autobahn.websocket as autobahn_ws
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IStreamServerEndpoint
from twisted.logger import Logger

from smbridge.config import TunnelSettings
from smbridge.listening import ListenerService
from smbridge.transports.client_certs import ProxyHeaders
from smbridge.transports.connection import ClientConnectionFactory
from smbridge.transports.descriptors import DescriptorReserve
from smbridge.transports.guard import ConnectionGuard
from smbridge.transports.listener import GuardedFactory
from smbridge.transports.resumption import TicketTLSFactory
from smbridge.tunnel.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNSUPPORTED_DATA,
    MAX_HANDSHAKE_BYTES,
    ListenerSide,
    TunnelProtocol,
    WebSocketConnection,
    client_address,
    frame_header,
)
from smbridge.tunnel.route import (
    ALIAS_MAP_PARAMETER,
    AliasMap,
    Decisions,
    KnownServers,
    Refusal,
    Route,
    parse_alias_map,
)
from smbridge.tunnel.slim import options_as_class
from smbridge.tunnel.uris import ServerNames

__all__ = [
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_UNSUPPORTED_DATA",
    "MAX_HANDSHAKE_BYTES",
    "BridgeNames",
    "ListenerSide",
    "TunnelFactory",
    "TunnelProtocol",
    "TunnelService",
    "WebSocketConnection",
    "client_address",
    "frame_header",
    "registered_cic",
]


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
        self.proxy_headers = ProxyHeaders(settings.trusted_proxies)  # certificate headers
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

"""The bridge as one MultiService: upstream connector, client listener, WebSocket tunnel.

Construction does no I/O. Certificates are read and sockets opened in
``startService``; ``when_ready()`` fires once the listener is bound and the
Notifier link is registered, which is what tests and the demo wait on.

Every listener (client port, ws, wss, admin) binds before the Notifier is dialled:
one that cannot bind raises :class:`~smbridge.listening.ListenFailed` naming its
option, the listeners already bound are closed, and the bridge never registers
(``twistd smbridge`` then exits 1: :class:`~smbridge.listening.ExitOnListenFailure`).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from smbridge import pki
from smbridge.admin.api import admin_site
from smbridge.admin.reload import SighupReloader
from smbridge.admin.view import Parse
from smbridge.codec.catalog import LINK_PING
from smbridge.config import BridgeConfig, NotifierAddress
from smbridge.listening import ListenerService, ListenFailed, announce_backlog, somaxconn
from smbridge.memory import MemoryTrimmer
from smbridge.options import parse as parse_options
from smbridge.roster.drain import Drainer
from smbridge.router.router import Router
from smbridge.session.hook import HookRunner, load_hook
from smbridge.session.registry import SessionRegistry
from smbridge.transports.batch import WriteBatcher
from smbridge.transports.client_certs import ClientCertificates
from smbridge.transports.connection import ClientConnectionFactory
from smbridge.transports.descriptors import DescriptorReserve
from smbridge.transports.guard import ConnectionGuard, host_subnets, own_subnets_for
from smbridge.transports.listener import SniffingFactory
from smbridge.transports.prelogon import PrelogonLimits
from smbridge.transports.relay_server import worker_relays
from smbridge.transports.resumption import TicketKeys
from smbridge.tunnel.tunnel import BridgeNames, TunnelService, registered_cic
from smbridge.tunnel.uris import TableEight
from smbridge.upstream.addresses import PINNED, NotifierEndpoints
from smbridge.upstream.connector import UpstreamConnector
from smbridge.upstream.load import LoadMeter
from smbridge.upstream.tls import wrap_client_tls
from smbridge.workers.worker import WorkerService

# The option that sets each listener's port, named when it cannot bind.
LISTENER_OPTIONS = {
    "client-listener": "--port",
    "ws-listener": "--ws-port",
    "wss-listener": "--wss-port",
    "admin-api": "--admin-port",
}


def server_endpoint(
    reactor: Any, port: int, interface: str, backlog: int = 50
) -> IStreamServerEndpoint:
    """A TCP endpoint on ``interface``; ``backlog``: the client listeners' ``--backlog``."""
    if ":" in interface:
        return TCP6ServerEndpoint(reactor, port, backlog=backlog, interface=interface)
    return TCP4ServerEndpoint(reactor, port, backlog=backlog, interface=interface)


class BridgeService(MultiService):
    """The bridge: sessions, router, upstream link and client listener.

    It satisfies :class:`smbridge.admin.view.BridgeView` and builds the admin site with
    itself passed in; ``parse`` is the option parser a reload re-runs (the admin layer
    gets it injected and imports neither this module nor the options).
    """

    log = Logger()

    def __init__(self, config: BridgeConfig, reactor: Any, parse: Parse = parse_options) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.reactor = reactor
        self.parse = parse
        self.batcher = WriteBatcher(reactor)
        self.registry = SessionRegistry(
            reactor,
            config.identity.name,
            config.policy,
            config.linger,
            config.replay_bytes,
            worker=config.worker_index if config.worker_count > 1 else None,  # ids name it
        )
        endpoints = NotifierEndpoints(
            [(str(a), _LazyTLSEndpoint(reactor, config, a)) for a in config.notifiers],
            config.switchover_mode,
            pinned=str(config.notifier) if config.switchover_mode == PINNED else None,
        )
        registration = config.identity.registration()
        if self.is_worker:  # one of --workers N: one bridge in the roster (docs/operations.md)
            registration.update(worker=config.worker_index, workers=config.worker_count)
        if config.switchover_mode == PINNED:
            registration["pinned"] = True  # a backup takes it too (docs/switchover.md)
        self.upstream = UpstreamConnector(
            reactor,
            endpoints,
            registration,
            self.batcher,
            ", ".join(str(a) for a in config.notifiers),
            config.link_max_frame,  # the Notifier's frames have their own limit (not --max-frame)
            request_timeout=config.upstream_timeout,
            dead_after=config.link_dead_after,
        )
        self.load = LoadMeter(
            reactor,
            lambda: self.upstream.request(LINK_PING, {}),
            interval=config.ping_interval,
            high_ms=config.high_watermark_ms,
            low_ms=config.low_watermark_ms,
        )
        self.trimmer = MemoryTrimmer(reactor, config.trim_interval)
        self.trimmer.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.upstream.before_register = self._bound_ports
        self.upstream.setName("upstream")  # type: ignore[no-untyped-call]
        self.upstream.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.router = Router(self.registry, self.upstream, config.identity, config.max_watches)
        self.router.set_piece_bytes(config.piece_bytes)  # docs/protocol.md, "Large answers"
        self.router.fanout.grace = config.user_topic_grace  # router/fanout.py, "Grace"
        self.router.loaded = lambda: self.load.loaded  # the overloaded redirect (docs/roster.md)
        if config.session_hook:  # docs/lifecycle.md
            hook = load_hook(config.session_hook)
            self.router.hook = HookRunner(hook, reactor, config.hook_timeout)
        # Migrate to every session, spread out, after switching to maintenance (docs/roster.md).
        self.drainer = Drainer(reactor, self.router)
        self.connections = ClientConnectionFactory(
            self.router,
            self.batcher,
            config.max_frame,
            max_unread_seconds=config.max_unread_seconds,
            max_held_bytes=config.max_held_bytes,
        )
        self.router.parameter_listeners.append(self.connections.sender.configure)
        if config.worker_count > 1:  # cross-worker ResumeSession (docs/lifecycle.md)
            assert config.run_dir is not None
            self.router.resumer.relay, relays = worker_relays(
                reactor,
                config.identity.name,
                config.worker_index,
                config.worker_count,
                config.run_dir,
                self.connections,
            )
            relays.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.connections.sender.queue_snapshot = self._queue_snapshot
        self.listener: ListenerService | None = None
        self.admin: ListenerService | None = None
        self.sighup: SighupReloader | None = None
        self.worker: WorkerService | None = None  # handoff, key names, parent watch
        if self.is_worker:
            self.worker = WorkerService(
                reactor, config, lambda: self.tickets, self.router.counters, self._orphaned
            )
            self.worker.setServiceParent(self)  # type: ignore[no-untyped-call]
        # The connection guard (docs/roster.md); trusted sites follow the server parameter.
        # Built even when off (limit 0), so that a configuration reload can switch it on.
        self.guard = ConnectionGuard(
            reactor,
            config.own_subnets or (),
            config.guard_limit,
            config.guard_window,
            self.router.counters,
            global_limit=config.guard_global_limit,
        )
        self.router.parameter_listeners.append(self.guard.configure)
        # Logon throttling (docs/protocol.md §4.1); a tunnel's X-Real-IP counts as the
        # source only when its TCP peer (the proxy) is one the guard trusts.
        self.router.throttle.settings = config.logon_throttle
        self.router.throttle.trusted_proxy = self.guard.is_trusted
        if config.client_ca is not None:  # certificate logon (docs/client.md)
            self.router.client_certs = ClientCertificates(config.client_ca, config.client_crl)
        # Before logon: deadlines and a small frame bound; the descriptor reserve pauses
        # the client listeners near RLIMIT_NOFILE (docs/operations.md).
        self.connections.prelogon = PrelogonLimits(
            config.handshake_timeout,
            config.tunnel.open_timeout,
            config.logon_timeout,
            config.prelogon_max_frame,
        )
        self.reserve = DescriptorReserve(
            reactor, config.fd_reserve, self.router.counters, self._client_ports
        )
        self.names = BridgeNames(
            lambda: registered_cic(self.upstream.registered),
            self.router.parameters,
            (config.identity.name, config.identity.fqdn),
        )
        self.router.resources = TableEight(
            self.names.server_names, config.notifier.host, config.resource_ports
        )
        self.tickets: TicketKeys | None = None  # TLS session resumption, built at start
        self.tunnel: TunnelService | None = None
        if config.ws_port is not None or config.wss_port is not None:
            self.tunnel = self._tunnel_service()
            self.tunnel.guard = self.guard
            self.tunnel.reserve = self.reserve
            self.tunnel.setServiceParent(self)  # type: ignore[no-untyped-call]

    def _tunnel_service(self) -> TunnelService:
        config, reactor = self.config, self.reactor
        ws = None
        if config.ws_port is not None:
            ws = self._client_endpoint(config.ws_port)
        wss_port = config.wss_port

        def wss() -> tuple[IStreamServerEndpoint, IOpenSSLServerConnectionCreator]:
            # Called at start: the certificate is read then, not at construction.
            assert wss_port is not None
            # The client port's tickets resume here too.
            return self._client_endpoint(wss_port, "wss"), self._tls()

        return TunnelService(
            self.connections,
            self.names,
            config.tunnel,
            reactor,
            ws,
            wss if wss_port is not None else None,
        )

    @property
    def is_worker(self) -> bool:
        """One of the supervisor's ``--workers N`` processes (``--worker I/N``)."""
        return self.config.worker_count > 1

    def _client_endpoint(self, port: int, tls: str | None = None) -> IStreamServerEndpoint:
        """The client port's, ws's or wss's endpoint (SO_REUSEPORT in a worker).

        ``tls`` (``"tls"``, ``"wss"``): in a worker, a resuming TLS client may be handed to
        the worker that issued its ticket (smbridge/workers/handoff.py).
        """
        if self.worker is not None:
            return self.worker.client_endpoint(port, tls)
        return server_endpoint(self.reactor, port, self.config.interface, self.config.backlog)

    def _admin_endpoint(self) -> IStreamServerEndpoint | None:
        """The admin API's: ``--admin-port``, or a worker's private Unix socket."""
        config = self.config
        if self.worker is not None:
            return self.worker.admin_endpoint()
        if config.admin_port is None:
            return None
        return server_endpoint(self.reactor, config.admin_port, config.admin_interface)

    def _tls(self) -> TicketKeys:
        """The TLS of the client port and wss: one certificate, shared ticket keys."""
        if self.tickets is None:
            config = self.config
            certs = self.router.client_certs  # certificate logon (transports/client_certs.py)
            self.tickets = pki.server_tickets(
                config.tls.cert,
                self.reactor,
                config.tls_ticket_rotation,
                certs.configure if certs is not None else None,
            )
        return self.tickets

    def startService(self) -> None:
        options = self._tls()
        if self.config.own_subnets is None:
            self.guard.own_subnets = own_subnets_for(self.config.interface, host_subnets())
        sniff = SniffingFactory(
            self.connections, options, self.config.allow_cleartext, self.guard, self.reserve
        )
        config = self.config
        endpoint = self._client_endpoint(config.port, "tls")
        announce_backlog(config.backlog, somaxconn())
        self.listener = ListenerService("client-listener", endpoint, sniff, track=False)
        self.listener.setServiceParent(self)  # type: ignore[no-untyped-call]
        admin = self._admin_endpoint()
        if admin is not None:
            site = admin_site(self, self.config.admin_token, self.parse)
            self.admin = ListenerService("admin-api", admin, site)
            self.admin.setServiceParent(self)  # type: ignore[no-untyped-call]
        self._start_listening_first()
        if self.config.config_file is not None:  # SIGHUP re-reads it (docs/operations.md)
            self.sighup = SighupReloader(self, self.reactor, self.parse)
            self.sighup.install()
        self.load.start()

    def _start_listening_first(self) -> None:
        """Start every child but the upstream link, then dial once all ports are bound."""
        Service.startService(self)  # running, without MultiService starting the children
        started: list[Any] = []
        try:
            for child in list(self):
                if child is not self.upstream:
                    child.startService()
                    started.append(child)
        except ListenFailed as e:
            e.option = e.option or LISTENER_OPTIONS.get(e.name)
            self.running = False
            for child in reversed(started):  # give back the ports already bound
                child.stopService()
            raise
        self._bound().addCallbacks(lambda _: self.upstream.startService(), self._bind_failed)

    def _orphaned(self) -> None:
        if self.reactor.running:
            self.reactor.stop()  # twistd then stops the services: the usual shutdown

    def _client_ports(self) -> list[Any]:
        """The listening ports the descriptor reserve pauses: client port, ws, wss."""
        listeners = [self.listener]
        if self.tunnel is not None:
            listeners += [self.tunnel.ws, self.tunnel.wss]
        return [s.port for s in listeners if s is not None and s.port is not None]

    def _bound(self) -> defer.Deferred[None]:
        listeners = [s for s in (self.listener, self.admin) if s is not None]
        waits: list[defer.Deferred[Any]] = [s.when_listening() for s in listeners]
        if self.tunnel is not None:
            waits.append(self.tunnel.when_listening())
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def _bind_failed(self, failure: Any) -> None:
        """A listener that failed after start-up (not TCP's way): stop instead of running deaf."""
        self.log.critical(
            "A listener cannot bind ({error}); stopping without registering at the Notifier",
            error=failure.getErrorMessage(),
            event="listener.bind_failed",
        )
        self.reactor.stop()

    def when_ready(self) -> defer.Deferred[None]:
        """Fire once the listener is bound and the Notifier link is up."""
        assert self.listener is not None, "start the service first"
        waits: list[defer.Deferred[Any]] = [self.listener.when_listening(), self.upstream.when_up()]
        if self.admin is not None:
            waits.append(self.admin.when_listening())
        if self.tunnel is not None:
            waits.append(self.tunnel.when_listening())
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def _bound_ports(self, registration: dict[str, Any]) -> None:
        """Put the ports really bound into the Register payload (a configured 0 is not one)."""
        ports = dict(registration.get("ports") or {})
        if self.listener is not None and self.listener.port is not None:
            ports["tls"] = self.port
        if self.tunnel is not None:
            ports["ws"] = self.tunnel.ws_port
            ports["wss"] = self.tunnel.wss_port
        registration["ports"] = ports

    @property
    def admin_port(self) -> int | None:
        """The admin API's bound port, when it listens."""
        if self.admin is None or self.admin.port is None or self.is_worker:
            return None
        return int(self.admin.port.getHost().port)  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        assert self.listener is not None and self.listener.port is not None
        return int(self.listener.port.getHost().port)  # type: ignore[attr-defined]

    def _queue_snapshot(self, queue: str) -> dict[str, Any] | None:
        """The router's current view of one queue (the safeguard's QueueUnsuspended follow-up)."""
        state = self.router.fanout.state("queue:" + queue)
        return state.snapshot() if state is not None else None

    def stopService(self) -> defer.Deferred[None]:
        """Move or tell every client, flush, then stop listening and the link.

        Each session gets Migrate {reason: shutdown} when another bridge of the
        roster is available to its user, else SessionTerminated {shutdown}
        (Router.shutdown). The notices bypass the bandwidth limiter; connections
        that have not taken them within ``--shutdown-grace`` seconds are aborted.
        """
        if self.sighup is not None:
            self.sighup.uninstall()
        self.load.stop()
        self.drainer.cancel()
        self.guard.stop()
        self.reserve.stop()
        self.connections.sender.stop()
        for conn in list(self.connections.connections):
            conn.limiting_changed(False)  # the last notice goes out now, not when its turn comes
            conn.guard_changed(False)
        count = len(self.registry)
        migrated, terminated = self.router.shutdown()
        if count:
            self.log.info(
                "Shutting down: {migrated} session(s) sent elsewhere (Migrate), "
                "{terminated} ended (SessionTerminated)",
                migrated=migrated,
                terminated=terminated,
                event="bridge.shutdown",
            )
        closed = self.connections.close_all(self.reactor, self.config.shutdown_grace)
        stopped = defer.maybeDeferred(super().stopService)
        return defer.gatherResults([closed, stopped]).addCallback(lambda _: None)


@implementer(IStreamClientEndpoint)
class _LazyTLSEndpoint:
    """The TLS client endpoint toward the Notifier, built on first use (reads the PEM files)."""

    def __init__(self, reactor: Any, config: BridgeConfig, address: NotifierAddress) -> None:
        self._reactor = reactor
        self._config = config
        self._address = address
        self._endpoint: IStreamClientEndpoint | None = None

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        if self._endpoint is None:
            address = self._address
            try:
                options = pki.client_options(
                    self._config.notifier_name or address.host,
                    self._config.tls.ca,
                    self._config.tls.client_cert,
                )
            except Exception as e:
                return defer.fail(e)
            self._endpoint = wrap_client_tls(
                options, HostnameEndpoint(self._reactor, address.host, address.port, timeout=10)
            )
        return self._endpoint.connect(factory)

"""A whole site in-process: the reference Notifier and a bridge over real loopback TLS."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer


@dataclass
class RunningSite:
    """A started Notifier and bridge; ``stop()`` shuts both down."""

    pki: Any
    notifier: Any
    bridge: Any
    services: list[Any] = field(default_factory=list)

    @property
    def client_port(self) -> int:
        return int(self.bridge.port)

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.notifier.control_port.getHost().port}"

    @property
    def link_port(self) -> int:
        return int(self.notifier.link_port.getHost().port)

    @property
    def ws_port(self) -> int:
        """The bridge's ws tunnel port (start_site(..., ws_port=0))."""
        port = self.bridge.tunnel.ws_port if self.bridge.tunnel is not None else None
        assert port is not None, "the ws tunnel is off"
        return int(port)

    @property
    def wss_port(self) -> int:
        """The bridge's wss tunnel port (start_site(..., wss_port=0))."""
        port = self.bridge.tunnel.wss_port if self.bridge.tunnel is not None else None
        assert port is not None, "the wss tunnel is off"
        return int(port)

    @property
    def http_port(self) -> int:
        """The Notifier's HTTP resource port (start_site(..., resources=True))."""
        return int(self.notifier.http_port.getHost().port)

    @property
    def https_port(self) -> int:
        """The Notifier's HTTPS resource port (start_site(..., resources=True))."""
        return int(self.notifier.https_port.getHost().port)

    def publish_queue(
        self, reactor: Any, queue: str, added: list[dict[str, Any]]
    ) -> defer.Deferred[tuple[int, Any]]:
        """Publish a QueueChanged adding ``added`` to ``queue`` (the Notifier's control API)."""
        change = {"queue": queue, "added": added, "changed": [], "removed": []}
        return http_json(
            reactor,
            "POST",
            f"{self.control_url}/api/publish",
            {"objectType": 173, "eventId": 3, "topic": f"queue:{queue}", "payload": change},
        )

    def keeper(self, reactor: Any, client_id: str, user: str = "agent1", **options: Any) -> Any:
        """A SessionKeeper for ``user`` (password ``demo``) aimed at this site's bridge.

        The host's own addresses are left out of its reconnect order (``resolve``).
        """
        from smbridge.client.keeper import SessionKeeper

        options.setdefault("resolve", lambda host, port: defer.succeed([]))
        return SessionKeeper(
            reactor,
            f"tls://localhost:{self.client_port}",
            user,
            "demo",
            ca=self.pki.ca,
            client_id=client_id,
            **options,
        )

    def stop(self) -> defer.Deferred[Any]:
        return defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in reversed(self.services)]
        )


@defer.inlineCallbacks
def start_site(
    reactor: Any,
    work: Path,
    site: Any = None,
    allow_cleartext: bool = False,
    session_timeout: int = 1800,
    notifier_name: str = "localhost",
    wait_for_link: bool = True,
    parameters: dict[str, str] | None = None,
    resources: bool = False,
    trust_any: bool = False,
    trust_bridge: bool = True,
    **bridge_options: Any,
) -> Any:
    """Start a reference Notifier (demo site unless given) and a bridge on 127.0.0.1:0.

    The Notifier trusts the bridge's client certificate (``trust_any``: every one
    the site CA signed; ``trust_bridge=False``: none yet). ``parameters`` are added
    to the demo site's server parameters. With ``resources`` the Notifier also serves
    its resource host on HTTP and HTTPS (ephemeral ports), and the bridge's direct
    resource URIs point there. ``ws_port=0`` / ``wss_port=0`` (bridge
    options) open the WebSocket tunnel on ephemeral ports.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

    from smbridge import pki
    from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
    from smbridge.notifier.demo import demo_site
    from smbridge.notifier.service import NotifierService
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService
    from smbridge.session.negotiate import TimeoutPolicy

    files = pki.ensure_site_pki(work / "pki")
    if site is None:
        site = demo_site()
        if parameters:
            from smbridge.notifier.demo import demo_site_dict
            from smbridge.notifier.site import Site

            data = demo_site_dict()
            data["parameters"] = {**data["parameters"], **parameters}
            site = Site.from_dict(data)
    from smbridge.notifier.trust import CertificateTrust

    trusted = [files.bridge_client] if trust_bridge else []
    trust = None if trust_any else CertificateTrust(trusted_files=trusted)
    notifier = NotifierService(
        site,
        reactor=reactor,
        trust=trust,
        link_endpoint=SSL4ServerEndpoint(
            reactor, 0, pki.server_options(files.notifier, files.ca), interface="127.0.0.1"
        ),
        control_endpoint=TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
        http_endpoint=TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1") if resources else None,
        https_endpoint=(
            SSL4ServerEndpoint(
                reactor, 0, pki.server_options(files.notifier), interface="127.0.0.1"
            )
            if resources
            else None
        ),
    )
    notifier.startService()
    running = RunningSite(files, notifier, None, [notifier])
    yield notifier.when_listening()
    if resources and "resource_ports" not in bridge_options:
        https = running.https_port
        bridge_options["resource_ports"] = {
            "http": running.http_port,
            "httpsecure": https,
            "reporting": https,
        }
    config = BridgeConfig(
        identity=BridgeIdentity(
            "sm1",
            "localhost",
            location="Indianapolis",
            ports={
                "tls": 0,
                "ws": bridge_options.get("ws_port"),
                "wss": bridge_options.get("wss_port"),
            },
        ),
        tls=TLSFiles(files.bridge, files.bridge_client, files.ca),
        notifiers=(NotifierAddress("127.0.0.1", running.link_port),),
        notifier_name=notifier_name,
        port=0,
        interface="127.0.0.1",
        allow_cleartext=allow_cleartext,
        policy=TimeoutPolicy(session_timeout, min(60, session_timeout)),
        **bridge_options,
    )
    bridge = BridgeService(config, reactor)
    bridge.startService()
    running.bridge = bridge
    running.services.append(bridge)
    if wait_for_link:
        yield bridge.when_ready()
    else:
        assert bridge.listener is not None
        yield bridge.listener.when_listening()
    return running


@defer.inlineCallbacks
def http_json(
    reactor: Any,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[bytes | str, bytes | str] | None = None,
) -> Any:
    """One HTTP request with JSON in and out, on a non-persistent pool (no timers left behind)."""
    import treq
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    response = yield treq.request(method, url, json=body, pool=pool, headers=headers)
    data = yield response.json()
    return response.code, data


@defer.inlineCallbacks
def start_quiet_site(test: Any, reactor: Any, prefix: str, **options: Any) -> Any:
    """:func:`start_site` in a fresh temporary directory, stopped at ``test``'s cleanup,
    with the Notifier's generated calls off (the test publishes its own events)."""
    import tempfile

    site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix=prefix)), **options)
    test.addCleanup(site.stop)
    yield http_json(reactor, "POST", f"{site.control_url}/api/traffic", {"callsPerSecond": 0})
    return site

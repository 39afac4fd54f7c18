"""``twistd -n smbridge --demo``: the bridge with an embedded reference Notifier.

On start it makes (once) a private CA and the certificates under
``<work path>/pki``, starts the Notifier with the demo site on 127.0.0.1, then
the bridge pointed at it. The ports actually bound are written to
``<work path>/ports.json`` so scripts and tests can find a demo started on port 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge import pki
from smbridge.config import BridgeConfig, NotifierAddress
from smbridge.options import demo_tls
from smbridge.service import BridgeService

__all__ = ["DemoConfig", "DemoService", "demo_tls", "demo_urls"]


@dataclass(frozen=True)
class DemoConfig:
    bridge: BridgeConfig  # its TLS files and Notifier address are filled in at start
    work_path: Path
    notifier_port: int = 5597
    control_port: int = 8090
    http_port: int | None = 8018  # the Notifier's resource host (Table 8's http); None: off
    https_port: int | None = 8019  # and its HTTPS side (httpsecure, reporting)


# twistd smbridge --demo's option for each listener of the embedded Notifier.
DEMO_LISTEN_OPTIONS = {
    "link": "--notifier-port",
    "control": "--control-port",
    "resources-http": "--notifier-http-port",
    "resources-https": "--notifier-https-port",
}


class DemoService(MultiService):
    log = Logger()

    def __init__(self, config: DemoConfig, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.reactor = reactor
        self.notifier: Any = None
        self.bridge: BridgeService | None = None
        self.site_name = "cic1"  # the demo site's CIC server (set at start)

    def startService(self) -> None:
        from smbridge.notifier.demo import demo_site
        from smbridge.notifier.service import NotifierService
        from smbridge.notifier.trust import CertificateTrust

        config = self.config
        files = pki.ensure_site_pki(config.work_path / "pki")
        site = demo_site(bridge_fqdn="localhost")
        self.site_name = site.cic.name
        self.notifier = NotifierService(
            site,
            reactor=self.reactor,
            # The demo trusts its own bridge's certificate (docs/switchover.md, trust).
            trust=CertificateTrust(trusted_files=[files.bridge_client]),
            link_endpoint=SSL4ServerEndpoint(
                self.reactor,
                config.notifier_port,
                pki.server_options(files.notifier, files.ca),
                interface="127.0.0.1",
            ),
            control_endpoint=TCP4ServerEndpoint(
                self.reactor, config.control_port, interface="127.0.0.1"
            ),
            http_endpoint=(
                TCP4ServerEndpoint(self.reactor, config.http_port, interface="127.0.0.1")
                if config.http_port is not None
                else None
            ),
            https_endpoint=(
                SSL4ServerEndpoint(
                    self.reactor,
                    config.https_port,
                    pki.server_options(files.notifier),
                    interface="127.0.0.1",
                )
                if config.https_port is not None
                else None
            ),
        )
        # A port that cannot bind names the demo's option for it (twistd smbridge --demo).
        self.notifier.listen_options = DEMO_LISTEN_OPTIONS
        self.notifier.setName("notifier")
        self.notifier.setServiceParent(self)
        super().startService()  # type: ignore[no-untyped-call]
        # The Notifier's ports bind at once (TCP): the bridge starts here, inside
        # startService, so a bridge port that cannot bind (ListenFailed) stops twistd
        # instead of leaving the embedded Notifier running with no bridge.
        outcome: list[object] = []
        self.notifier.when_listening().addBoth(outcome.append)
        if not outcome:  # not bound yet (an endpoint that binds later): start when it is
            self.notifier.when_listening().addCallback(self._start_bridge).addErrback(
                lambda f: self.log.failure("Demo start-up failed", failure=f, event="demo.failed")
            )
        elif isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        else:
            self._start_bridge(None)

    def _start_bridge(self, _: object) -> None:
        link_port = self.notifier.link_port.getHost().port
        bridge_config = replace(
            self.config.bridge,
            tls=demo_tls(self.config.work_path),
            notifiers=(NotifierAddress("127.0.0.1", link_port),),
            notifier_name="localhost",
            resource_ports={**self._resource_ports(), **self.config.bridge.resource_ports},
        )
        self.bridge = BridgeService(bridge_config, self.reactor)
        self.bridge.setName("bridge")  # type: ignore[no-untyped-call]
        self.bridge.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.bridge.when_ready().addCallback(self._write_ports)

    def _resource_ports(self) -> dict[str, int]:
        """Direct resource URIs of the demo point at the embedded Notifier's resource host."""
        ports: dict[str, int] = {}
        if self.notifier.http_port is not None:
            ports["http"] = self.notifier.http_port.getHost().port
        if self.notifier.https_port is not None:
            https = self.notifier.https_port.getHost().port
            ports.update(httpsecure=https, reporting=https)
        return ports

    def _write_ports(self, _: object) -> None:
        assert self.bridge is not None
        tunnel = self.bridge.tunnel
        ports = {
            "client": self.bridge.port,
            "notifier": self.notifier.link_port.getHost().port,
            "control": self.notifier.control_port.getHost().port,
            "ws": tunnel.ws_port if tunnel is not None else None,
            "wss": tunnel.wss_port if tunnel is not None else None,
            "admin": self.bridge.admin_port,
            **{f"notifier_{kind}": port for kind, port in self._resource_ports().items()},
        }
        path = self.config.work_path / "ports.json"
        path.write_text(json.dumps(ports) + "\n")
        urls = demo_urls(ports, self.site_name, self.config.bridge.admin_interface)
        self.log.info(
            "Demo ready: {listing}; users agent1..agent50 and supervisor1, password 'demo'",
            listing="; ".join(f"{label} {url}" for label, url in urls.items()),
            urls=urls,
            event="demo.ready",
            **ports,
        )


def demo_urls(ports: dict[str, Any], cic_name: str, admin_host: str) -> dict[str, str]:
    """What a person opens or dials in the demo, by what it is (a port that is off: left out).

    The tunnel URIs end in ``<CIC server>/session``, a name the demo's ``SM HTTPS URL
    Base Map`` routes to this bridge (docs/tunnel.md).
    """
    urls = {"clients": f"tls://localhost:{ports['client']}"}
    for scheme in ("ws", "wss"):
        if ports.get(scheme) is not None:
            urls[f"{scheme} tunnel"] = f"{scheme}://localhost:{ports[scheme]}/{cic_name}/session"
    if ports.get("admin") is not None:
        host = f"[{admin_host}]" if ":" in admin_host else admin_host
        urls["dashboard"] = f"http://{host}:{ports['admin']}/"
    urls["Notifier control API"] = f"http://127.0.0.1:{ports['control']}/api/state"
    return urls

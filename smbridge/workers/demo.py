"""``twistd -n smbridge --demo --workers N``: the demo's Notifier in the supervisor, N workers.

The supervisor runs the embedded reference Notifier (as the single-process demo
does) and, once it is bound, the workers, each started with the Notifier's bound
ports (``--notifier-port``, ``--notifier-http-port``, ``--notifier-https-port``).
A worker of the demo (``--demo --worker I/N``) runs only the bridge, pointed at that
Notifier with the demo's certificates. ``ports.json`` and the "Demo ready" line come
once every worker is up.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from twisted.internet import defer

from smbridge.config import BridgeConfig, NotifierAddress
from smbridge.demo import DemoConfig, DemoService, demo_urls
from smbridge.service import BridgeService
from smbridge.workers.supervisor import Supervisor


class DemoSupervisor(DemoService):
    """The demo's Notifier, then the supervisor of the workers (instead of one bridge)."""

    def __init__(self, config: DemoConfig, reactor: Any, supervisor: Supervisor) -> None:
        super().__init__(config, reactor)
        self.supervisor = supervisor
        supervisor.extra_args_needed = True  # its workers wait for the Notifier's ports

    def _start_bridge(self, _: object) -> None:
        link_port = self.notifier.link_port.getHost().port
        resource = self._resource_ports()
        self.supervisor.extra_args = [
            "--notifier-port",
            str(link_port),
            "--notifier-http-port",
            str(resource.get("http", "off")),
            "--notifier-https-port",
            str(resource.get("httpsecure", "off")),
        ]
        self.supervisor.setName("supervisor")  # type: ignore[no-untyped-call]
        self.supervisor.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.supervisor.start_workers()
        self.supervisor.when_ready().addCallback(self._write_ports)

    def stopService(self) -> Any:
        """Stop the workers (their clients told, as a bridge's are) before the Notifier."""
        if not self.supervisor.running:
            return super().stopService()  # type: ignore[no-untyped-call]
        stopping: defer.Deferred[Any] = self.supervisor.stopService()
        return stopping.addCallback(self._stop_notifier)

    def _stop_notifier(self, _: object) -> Any:
        return super().stopService()  # type: ignore[no-untyped-call]

    def _write_ports(self, _: object) -> None:
        supervisor = self.supervisor
        admin = supervisor.admin.port.getHost().port if supervisor.admin is not None else None
        ports = {
            "client": supervisor.ports.get("port"),
            "notifier": self.notifier.link_port.getHost().port,
            "control": self.notifier.control_port.getHost().port,
            "ws": supervisor.ports.get("ws-port"),
            "wss": supervisor.ports.get("wss-port"),
            "admin": admin,
            **{f"notifier_{kind}": port for kind, port in self._resource_ports().items()},
        }
        path = self.config.work_path / "ports.json"
        path.write_text(json.dumps(ports) + "\n")
        urls = demo_urls(ports, self.site_name, self.config.bridge.admin_interface)
        self.log.info(
            "Demo ready ({workers} workers): {listing}; users agent1..agent50 and "
            "supervisor1, password 'demo'",
            workers=supervisor.count,
            listing="; ".join(f"{label} {url}" for label, url in urls.items()),
            urls=urls,
            event="demo.ready",
            **ports,
        )


def demo_worker(config: BridgeConfig, options: Any, reactor: Any) -> BridgeService:
    """A worker of the demo: the bridge alone, on the supervisor's Notifier (demo TLS files)."""
    http, https = options["notifier-http-port"], options["notifier-https-port"]
    resource: dict[str, int] = {}
    if http is not None:
        resource["http"] = int(http)
    if https is not None:
        resource.update(httpsecure=int(https), reporting=int(https))
    worker_config = replace(
        config,
        notifiers=(NotifierAddress("127.0.0.1", int(options["notifier-port"])),),
        notifier_name="localhost",
        resource_ports={**resource, **config.resource_ports},
    )
    return BridgeService(worker_config, reactor)

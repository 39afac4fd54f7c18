"""A primary/backup pair of Notifiers behind one bridge, and a client session watched
through switchovers (tests and bench/switchover.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer

from smbridge.codec import Kind, catalog


@dataclass
class RunningPair:
    """Two Notifiers (``a`` started primary, ``b`` backup) and a bridge given both."""

    pki: Any
    site: Any
    notifiers: dict[str, Any]  # "a"/"b" -> NotifierService
    ports: dict[str, int]  # "a"/"b" -> link port (kept when a Notifier is restarted)
    control_ports: dict[str, int]
    detection: float
    bridge: Any = None

    def control_url(self, side: str) -> str:
        return f"http://127.0.0.1:{self.control_ports[side]}"

    def address(self, side: str) -> str:
        return f"127.0.0.1:{self.ports[side]}"

    def other(self, side: str) -> str:
        return "b" if side == "a" else "a"

    def primary(self) -> str | None:
        """Which side is primary now (None when neither running one is)."""
        for side, service in self.notifiers.items():
            if service.running and service.notifier.pair.role == "primary":
                return side
        return None

    @defer.inlineCallbacks
    def start_notifier(self, reactor: Any, side: str, role: str) -> Any:
        """Start (or restart, on the same ports) one Notifier of the pair in ``role``."""
        from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

        from smbridge import pki
        from smbridge.notifier.service import NotifierService
        from smbridge.notifier.trust import CertificateTrust

        service = NotifierService(
            self.site,
            reactor=reactor,
            trust=CertificateTrust(trusted_files=[self.pki.bridge_client]),
            link_endpoint=SSL4ServerEndpoint(
                reactor,
                self.ports.get(side, 0),
                pki.server_options(self.pki.notifier, self.pki.ca),
                interface="127.0.0.1",
            ),
            control_endpoint=TCP4ServerEndpoint(
                reactor, self.control_ports.get(side, 0), interface="127.0.0.1"
            ),
        )
        service.notifier.cic_name = f"cic-{side}"
        service.startService()
        yield service.when_listening()
        self.notifiers[side] = service
        link: Any = service.link_port
        control: Any = service.control_port
        self.ports[side] = int(link.getHost().port)
        self.control_ports[side] = int(control.getHost().port)
        return service

    def join(self, side: str, role: str) -> None:
        """Make ``side`` a pair member in ``role`` with the other side as its peer."""
        peer = self.other(side)
        self.notifiers[side].join_pair(
            role,
            self.address(peer),
            self.control_url(peer) if peer in self.control_ports else None,
            self.detection,
        )

    def stop(self) -> defer.Deferred[Any]:
        services = [self.bridge] if self.bridge is not None else []
        services += [s for s in self.notifiers.values() if s.running]
        return defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in services], consumeErrors=True
        )


@defer.inlineCallbacks
def start_pair(
    reactor: Any, work: Path, site: Any = None, detection: float = 1.0, **bridge_options: Any
) -> Any:
    """Start a Notifier pair on 127.0.0.1 (``a`` primary, ``b`` backup) and a bridge
    given both addresses (follow-primary unless ``switchover_mode`` says otherwise).

    The bridge accepts clear text on its client port (many sessions, little CPU).
    """
    from smbridge import pki
    from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
    from smbridge.notifier.demo import demo_site
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService
    from smbridge.session.negotiate import TimeoutPolicy

    files = pki.ensure_site_pki(work / "pki")
    running = RunningPair(files, site or demo_site(), {}, {}, {}, detection)
    yield running.start_notifier(reactor, "a", "primary")
    yield running.start_notifier(reactor, "b", "backup")
    running.join("a", "primary")
    running.join("b", "backup")
    config = BridgeConfig(
        identity=BridgeIdentity("sm1", "localhost", location="Indianapolis", ports={"tls": 0}),
        tls=TLSFiles(files.bridge, files.bridge_client, files.ca),
        notifiers=(
            NotifierAddress("127.0.0.1", running.ports["a"]),
            NotifierAddress("127.0.0.1", running.ports["b"]),
        ),
        notifier_name="localhost",
        port=0,
        interface="127.0.0.1",
        allow_cleartext=True,
        policy=TimeoutPolicy(1800, 60),
        **bridge_options,
    )
    bridge = BridgeService(config, reactor)
    bridge.startService()
    running.bridge = bridge
    yield bridge.when_ready()
    return running


class SwitchoverWatcher:
    """One client session: its notices, its queue events, and every request's one outcome."""

    def __init__(self, client: Any, user: str, queue: str) -> None:
        self.client = client
        self.user = user
        self.queue = queue
        self.switchovers: list[dict[str, Any]] = []
        self.events: list[str] = []  # ids of interactions added to the watched queue
        self.sent = 0
        self.outcomes: dict[str, int] = {}
        self.unmatched = 0  # answers for requests no longer pending: must stay 0
        self.running = True
        self.done: defer.Deferred[None] = defer.Deferred()
        client.add_listener(self._notice)
        protocol = client.protocol
        original = protocol._frame

        def counting(frame: Any) -> None:
            if frame.kind != Kind.NOTIFICATION and frame.request_id != 0:
                if frame.request_id not in protocol._pending:
                    self.unmatched += 1
            original(frame)

        protocol._frame = counting

    def _notice(self, name: str, frame: Any) -> None:
        key = (frame.object_type, frame.event_id)
        if key == catalog.SWITCHOVER:
            self.switchovers.append(frame.parsed())
        elif key == catalog.QUEUE_CHANGED:
            self.events.extend(i["id"] for i in frame.parsed().get("added", ()))

    def completed(self) -> int:
        return sum(1 for s in self.switchovers if s["phase"] == "completed")

    @defer.inlineCallbacks
    def loop(self) -> Any:
        """Send SetStatus requests one after another until told to stop (bounded)."""
        statuses = ("Available", "Away")
        from twisted.internet import reactor, task

        from smbridge.client import ClientError

        for i in range(100_000):
            if not self.running:
                break
            self.sent += 1
            try:
                yield self.client.request(catalog.SET_STATUS, {"status": statuses[i % 2]})
                outcome = "ok"
            except ClientError as e:
                outcome = e.code
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.done.callback(None)

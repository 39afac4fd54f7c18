"""Test fakes that several test modules share (house style: kept in one place)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from smbridge.codec import BadFrame, Decoder, Frame

# What a bridge sends in Register, for tests that play the bridge's part.
SAMPLE_REGISTRATION: dict[str, Any] = {
    "name": "bridge1",
    "fqdn": "localhost",
    "kind": "on-server",
    "location": "Indianapolis",
    "ports": {"tls": 3952, "ws": 8951, "wss": 8952},
    "accept": "default",
    "version": "test",
}


def decode_all(data: bytes) -> list[Frame]:
    """Decode a byte string that must hold only whole, valid frames."""
    events = Decoder().feed(data)
    bad = [e for e in events if isinstance(e, BadFrame)]
    if bad:
        raise AssertionError(f"bad frames in {data!r}: {bad}")
    return [e for e in events if isinstance(e, Frame)]


class FramePeer:
    """A session Peer that records what was written, decoded."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.session: Any = None

    def send(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    @property
    def frames(self) -> list[Frame]:
        return decode_all(self.data)

    def bodies(self, message: tuple[int, int]) -> list[dict[str, Any]]:
        """Payloads of the frames of one (objectType, eventId)."""
        return [f.parsed() for f in self.frames if (f.object_type, f.event_id) == message]


# --- a whole site in-process: reference Notifier + bridge over real loopback TLS ----

from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from twisted.internet import defer  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402


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


# --- the router against a scripted Notifier (StringTransport on both sides) -----------
from twisted.internet.interfaces import IStreamClientEndpoint  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from zope.interface import implementer  # noqa: E402

from smbridge.codec import Kind, encode  # noqa: E402
from smbridge.codec import catalog as c  # noqa: E402
from smbridge.codec.catalog import MessageType  # noqa: E402
from smbridge.router.router import BridgeIdentity, Router  # noqa: E402
from smbridge.session.negotiate import TimeoutPolicy  # noqa: E402
from smbridge.session.registry import SessionRegistry  # noqa: E402
from smbridge.transports.batch import WriteBatcher  # noqa: E402
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory  # noqa: E402
from smbridge.upstream.connector import LinkState, UpstreamConnector  # noqa: E402
from smbridge.upstream.link import UpstreamLink, UpstreamLinkFactory  # noqa: E402


class ScriptedNotifier:
    """The far end of an UpstreamLink: reads its requests, answers them by hand."""

    def __init__(self, link: UpstreamLink, transport: StringTransport) -> None:
        self.link = link
        self.transport = transport

    def take(self) -> list[Frame]:
        data = self.transport.value()
        self.transport.clear()
        return decode_all(data)

    def answer(self, frame: Frame, body: dict[str, Any], kind: int = Kind.RESPONSE) -> None:
        self.link.dataReceived(
            encode(kind, frame.object_type, frame.event_id, frame.request_id, body)
        )

    def event(self, message: MessageType, sub: int, body: dict[str, Any]) -> None:
        self.link.dataReceived(encode(Kind.NOTIFICATION, *message, sub, body))


@implementer(IStreamClientEndpoint)
class _NoEndpoint:
    """The harness connects its link by hand; the connector never dials."""

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        raise AssertionError("the harness connects the link itself")


class RouterHarness:
    """A Router wired to a real connector and link whose far end is a ScriptedNotifier."""

    def __init__(self, parameters: dict[str, Any] | None = None, max_watches: int = 200) -> None:
        self.clock = Clock()
        self.batcher = WriteBatcher(self.clock)
        self.registry = SessionRegistry(self.clock, "sm1", TimeoutPolicy(1800, 60))
        self.connector = UpstreamConnector(
            self.clock, _NoEndpoint(), {"name": "sm1"}, self.batcher, "test", 1 << 20
        )
        self.router = Router(
            self.registry, self.connector, BridgeIdentity("sm1", "sm1.example"), max_watches
        )
        self.connector.state = LinkState.CONNECTING
        self.notifier = self.connect_link()
        (register,) = self.notifier.take()
        assert (register.object_type, register.event_id) == c.LINK_REGISTER
        params = parameters or {}
        self.notifier.answer(
            register,
            {
                "cic": {"name": "cic1", "role": "primary"},
                "parameters": params,
                "roster": [{"name": "sm1"}],
            },
        )
        assert self.connector.state is LinkState.UP
        (sub,) = self.upstream()
        assert sub.parsed()["topic"] == "parameters"
        self.params_sub = sub.parsed()["sub"]
        self.notifier.answer(sub, {"snapshot": {"parameters": params}})
        self.user_subs: dict[str, int] = {}

    def serve(self, sub: Frame, snapshot: dict[str, Any]) -> int:
        """Answer a Subscribe with a snapshot; return its subscription id."""
        assert (sub.object_type, sub.event_id) == c.LINK_SUBSCRIBE, sub
        self.notifier.answer(sub, {"snapshot": snapshot})
        return int(sub.parsed()["sub"])

    def connect_link(self) -> ScriptedNotifier:
        link = UpstreamLinkFactory(self.connector, self.batcher).buildProtocol(None)
        transport = StringTransport()
        link.makeConnection(transport)  # type: ignore[no-untyped-call]
        self.clock.advance(0)
        return ScriptedNotifier(link, transport)

    def client(self) -> tuple[ClientConnection, StringTransport]:
        conn = ClientConnectionFactory(self.router, self.batcher).connection("tls")
        transport = StringTransport()
        conn.makeConnection(transport)  # type: ignore[no-untyped-call]
        return conn, transport

    def send(
        self,
        conn: ClientConnection,
        message: MessageType,
        rid: int,
        body: dict[str, Any] | None = None,
    ) -> None:
        conn.dataReceived(encode(Kind.REQUEST, *message, rid, body))
        self.clock.advance(0)

    def upstream(self) -> list[Frame]:
        self.clock.advance(0)
        return self.notifier.take()

    def received(self, transport: StringTransport) -> list[Frame]:
        self.clock.advance(0)
        data = transport.value()
        transport.clear()
        return decode_all(data)

    def logon(
        self, user: str = "agent1", rights: list[str] | None = None
    ) -> tuple[ClientConnection, StringTransport, dict[str, Any]]:
        conn, transport = self.client()
        self.send(conn, c.CREATE_SESSION, 1, {"user": user, "password": "demo"})
        (auth,) = self.upstream()
        self.notifier.answer(
            auth,
            {
                "user": {"id": user, "displayName": user.title(), "rights": rights or []},
                "station": None,
                "location": "Indianapolis",
            },
        )
        for frame in self.upstream():  # SessionOpened, and the user's topic once per user
            if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
                self.user_subs[user] = self.serve(frame, {"user": user, "interactions": []})
        replies = self.received(transport)
        return conn, transport, replies[0].parsed()


def poll(
    predicate: Any, deadline: float = 10.0, step: float = 0.02, clock: Any = None
) -> defer.Deferred[None]:
    """Fire once ``predicate()`` is true; fail after ``deadline`` seconds (no fixed sleeps)."""
    from twisted.internet import task

    if clock is None:
        from twisted.internet import reactor as clock

    @defer.inlineCallbacks
    def loop() -> Any:
        waited = 0.0
        while not predicate():
            if waited >= deadline:
                raise AssertionError(f"condition not met within {deadline}s")
            yield task.deferLater(clock, step, lambda: None)
            waited += step

    d: defer.Deferred[None] = loop()
    return d


class OutputProcess(ProcessProtocol):
    """A child spawned with ``reactor.spawnProcess``: keeps its output, fires ``ended``."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a subprocess to bind)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: Any, grace: float = 10.0) -> None:
    """Terminate a subprocess, killing it if it does not exit within ``grace`` seconds."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class TwistdProcess:
    """A ``twistd -n`` subprocess for a test: output to a file, waits with a deadline.

    ``kill()`` (register it with ``addCleanup``) ends it if the test did not.
    """

    def __init__(self, work: Path, args: list[str], log_name: str = "twistd.log") -> None:
        import os
        import subprocess
        import sys

        self.work = work
        self.log_path = work / log_name
        self._log = self.log_path.open("wb")
        twistd = str(Path(sys.executable).parent / "twistd")
        self.proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=work,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    @defer.inlineCallbacks
    def wait_for(
        self, predicate: Callable[[], Any], what: str, deadline: float = 45.0
    ) -> Generator[defer.Deferred[Any], Any, None]:
        """Poll ``predicate`` until true; fail early if twistd exits, or at the deadline."""
        from twisted.internet import reactor, task

        end = time.monotonic() + deadline
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"twistd exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > end:
                raise AssertionError(f"no {what} within {deadline}s:\n{self.output()}")
            yield task.deferLater(reactor, 0.05, lambda: None)


# --- fake Notifier endpoints for the connector's state machine ------------------------
@implementer(IStreamClientEndpoint)
class FakeNotifierEndpoint:
    """A Notifier address: ``connect`` builds the link over a StringTransport, or fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reachable = True
        self.attempts = 0
        self.peers: list[ScriptedNotifier] = []

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.attempts += 1
        if not self.reachable:
            from twisted.internet.error import ConnectionRefusedError

            return defer.fail(ConnectionRefusedError(self.name))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.peers.append(ScriptedNotifier(protocol, transport))
        return defer.succeed(protocol)

    @property
    def last(self) -> ScriptedNotifier:
        return self.peers[-1]

    def drop(self) -> None:
        """The far end closed the newest link."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.last.link.connectionLost(Failure(ConnectionDone()))


# --- a Notifier pair and one bridge following it ---------------------------------------
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


# --- a client session through switchovers (tests and bench/switchover.py) ------------
from smbridge.codec import catalog  # noqa: E402


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


class Recorder:
    """Collects (name, payload) of every notification a client library client receives."""

    def __init__(self, client: Any) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        client.add_listener(lambda name, frame: self.events.append((name, frame.parsed())))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [body for n, body in self.events if n == name]

"""Test fakes that several test modules share (house style: kept in one place)."""

from __future__ import annotations

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
    **bridge_options: Any,
) -> Any:
    """Start a reference Notifier (demo site unless given) and a bridge on 127.0.0.1:0."""
    from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

    from smbridge import pki
    from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
    from smbridge.notifier.demo import demo_site
    from smbridge.notifier.service import NotifierService
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService
    from smbridge.session.negotiate import TimeoutPolicy

    files = pki.ensure_site_pki(work / "pki")
    notifier = NotifierService(
        site if site is not None else demo_site(),
        reactor=reactor,
        link_endpoint=SSL4ServerEndpoint(
            reactor, 0, pki.server_options(files.notifier, files.ca), interface="127.0.0.1"
        ),
        control_endpoint=TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
    )
    notifier.startService()
    running = RunningSite(files, notifier, None, [notifier])
    yield notifier.when_listening()
    config = BridgeConfig(
        identity=BridgeIdentity(
            "sm1", "localhost", location="Indianapolis", ports={"tls": 0, "ws": None, "wss": None}
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
def http_json(reactor: Any, method: str, url: str, body: Any = None) -> Any:
    """One HTTP request with JSON in and out, on a non-persistent pool (no timers left behind)."""
    import treq
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    response = yield treq.request(method, url, json=body, pool=pool)
    data = yield response.json()
    return response.code, data

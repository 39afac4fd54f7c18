"""Per-connection work on the tunnel's accept path (docs/benchmarks.md, "Reconnects").

A logon over the tunnel is logged once, at info (``session.created``, with the transport
and remote address); the tunnel logs a route (server, base, client type) the first
time it is requested (``tunnel.route``), not each connection.
Autobahn's transport details (peer certificate, TLS channel id: for WAMP) are not built.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

import autobahn.twisted.websocket as autobahn_twisted
import autobahn.websocket.protocol as autobahn_protocol
import pytest
from twisted.internet import defer, reactor, threads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.testing import poll, start_site

UPGRADE = (
    b"GET /sm1/session HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nININ-Client-Type: test\r\n\r\n"
)


def log_on(port: int, ca: Path | None) -> bytes:
    """Upgrade (over TLS when ``ca``), log on, and return the first bytes of the answer."""
    raw = socket.create_connection(("127.0.0.1", port), 5)
    sock: Any = raw
    if ca is not None:
        context = ssl.create_default_context(cafile=str(ca))
        sock = context.wrap_socket(raw, server_hostname="localhost")
    with sock:
        sock.settimeout(5)
        sock.sendall(UPGRADE)
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 101"), got[:80]
        body = {"user": "agent1", "password": "demo", "clientId": "accept-cost"}
        frame = encode(Kind.REQUEST, *c.CREATE_SESSION, 1, body)
        sock.sendall(bytes((0x82, 0x80 | len(frame))) + b"\0" * 4 + frame)
        rest = got.partition(b"\r\n\r\n")[2]
        while len(rest) < 8:
            rest += sock.recv(4096)
        return rest


@pytest.mark.integration
class AcceptPath(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def check(self, scheme: str) -> Any:
        work = Path(tempfile.mkdtemp(prefix="smbridge-accept-"))
        site = yield start_site(reactor, work, **{f"{scheme}_port": 0})
        self.addCleanup(site.stop)
        conns = site.bridge.connections.connections
        self.addCleanup(poll, lambda: not conns)  # the bridge saw the client go
        built: list[Any] = []
        real = autobahn_twisted.create_transport_details
        self.patch(
            autobahn_twisted,
            "create_transport_details",
            lambda *a: built.append(a) or real(*a),
        )
        self.patch(autobahn_twisted, "transport_channel_id", lambda *a: built.append(a))
        highlighted: list[str] = []  # Autobahn's debug-line arguments, formatted eagerly
        real_hltype = autobahn_protocol.hltype
        for module in (autobahn_protocol, autobahn_twisted):
            self.patch(module, "hltype", lambda f: highlighted.append(f.__name__) or real_hltype(f))
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        port = site.wss_port if scheme == "wss" else site.ws_port
        ca = site.pki.ca if scheme == "wss" else None
        for _ in range(2):
            yield threads.deferToThread(log_on, port, ca)
            yield poll(lambda: not conns)
        created = [e for e in observer if e.get("event") == "session.created"]
        self.assertEqual(
            [(e["log_level"], e["transport"]) for e in created], [(LogLevel.info, scheme)] * 2
        )
        self.assertTrue(all(e["remote"].startswith("127.0.0.1:") for e in created), created)
        self.assertFalse([e for e in observer if e.get("event") == "tunnel.open"])
        (route,) = [
            e for e in observer if e.get("event") == "tunnel.route"
        ]  # once, not per connection
        base = f"{'https' if scheme == 'wss' else 'http'}://localhost"
        self.assertEqual(
            (route["log_level"], route["server"], route["base"], route["client_type"]),
            (LogLevel.info, "sm1", base, "test"),
        )
        self.assertEqual(built, [])
        self.assertEqual(set(highlighted), {"processHandshake"})  # not per accept and close

    def test_ws_logon_logs_one_info_line_and_builds_no_transport_details(self) -> Any:
        """Over ws: session.created per logon, tunnel.route once, no transport details."""
        return self.check("ws")

    def test_wss_logon_logs_one_info_line_and_builds_no_transport_details(self) -> Any:
        """Over wss: the same, and no TLS channel id is computed for the open connection."""
        return self.check("wss")


def decision_factory(parameters: dict[str, str]) -> Any:
    from twisted.internet.task import Clock

    from smbridge.config import TunnelSettings
    from smbridge.transports.batch import WriteBatcher
    from smbridge.transports.connection import ClientConnectionFactory
    from smbridge.tunnel.tunnel import BridgeNames, TunnelFactory

    clock = Clock()
    app = ClientConnectionFactory(None, WriteBatcher(clock))  # type: ignore[arg-type]
    names = BridgeNames(lambda: "cic1", lambda: parameters, ("sm1",))
    return TunnelFactory(app, names, "wss", TunnelSettings(), clock)


def test_decisions_are_reused_until_the_names_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """An accepted handshake's route is decoded once per (target, relevant headers, names);
    a new alias map decodes again, and refusals are decoded every time."""
    import smbridge.tunnel.route as route_module

    decoded: list[str] = []
    real = route_module.decode

    def counting(target: str, *args: Any) -> Any:
        decoded.append(target)
        return real(target, *args)

    monkeypatch.setattr(route_module, "decode", counting)
    parameters: dict[str, str] = {}
    factory = decision_factory(parameters)
    headers = {"host": "bridge.example", "inin-client-type": "t", "user-agent": "a"}
    first, fresh = factory.decide("/cic1/session", headers)
    again, reused = factory.decide("/cic1/session", {**headers, "user-agent": "b"})
    assert first == again and first.base_uri == "https://bridge.example"
    assert (fresh, reused) == (True, False)
    assert decoded == ["/cic1/session"]
    other, _ = factory.decide("/cic1/session", {**headers, "x-forwarded-host": "sm.example"})
    assert other.base_uri == "https://sm.example" and other.proxied
    typed, _ = factory.decide("/cic1/session", {**headers, "inin-client-type": "u"})
    assert typed.client_type == "u" and len(decoded) == 3
    parameters["SM HTTPS URL Base Map"] = "cic1|public1"
    aliased, _ = factory.decide("/cic1/session", headers)
    assert aliased.alias == "public1" and len(decoded) == 4
    for _ in range(2):
        refusal, fresh = factory.decide("/nobody/session", headers)
        assert (refusal.status, fresh) == (404, True)
    assert len(decoded) == 6
    for i in range(2000):  # bounded: distinct targets do not grow it without limit
        factory.decide(f"/x{i}/cic1/session", headers)
    assert len(factory.decisions) <= 256

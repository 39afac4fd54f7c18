"""Strangers over real sockets: 1,000 silent or half-open connections all closed at their
deadlines while a legitimate client logs on and works throughout; large frames before
logon refused as soon as their header is read."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from smbridge.client import connect
from smbridge.config import TunnelSettings
from smbridge.testing import poll, start_site

pytestmark = pytest.mark.integration

DEADLINE = 2.0  # every stage's time in this test
PER_KIND = 200  # five kinds: 1,000 connections
SLACK = 1.5  # a loaded machine's lateness allowed on top of the deadline


def half_client_hello() -> bytes:
    """The first half of a real TLS ClientHello."""
    conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    hello: bytes = conn.bio_read(65536)
    return hello[: len(hello) // 2]


@implementer(IHandshakeListener)
class Idle(Protocol):
    """Sends ``first`` (maybe nothing), then stays silent; records when its clock starts
    (the accept, or the end of its TLS handshake) and when the bridge closes it."""

    def __init__(self, kind: str, first: bytes = b"", tls: bool = False) -> None:
        self.kind = kind
        self.first = first
        self.tls = tls
        self.started: float | None = None
        self.ended: float | None = None

    def connectionMade(self) -> None:
        if not self.tls:
            self.started = time.monotonic()
        if self.first:
            self.transport.write(self.first)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        self.started = time.monotonic()

    def connectionLost(self, reason: Any = None) -> None:
        self.ended = time.monotonic()


class Slowloris(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-slowloris-"))
        self.site = yield start_site(
            reactor,
            self.work,
            ws_port=0,
            wss_port=0,
            handshake_timeout=DEADLINE,
            logon_timeout=DEADLINE,
            tunnel=TunnelSettings(open_timeout=DEADLINE),
        )
        self.addCleanup(self.site.stop)
        ca = Certificate.loadPEM(self.site.pki.ca.read_bytes())
        self.tls_options = optionsForClientTLS("localhost", trustRoot=ca)

    def dial(self, port: int, proto: Idle) -> defer.Deferred[Any]:
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if proto.tls:
            endpoint = wrapClientTLS(self.tls_options, endpoint)
        return connectProtocol(endpoint, proto)

    @defer.inlineCallbacks
    def legitimate(self, stop: list[bool], latencies: list[float], done: list[int]) -> Any:
        """Log on, ask for the version, heartbeat, log off; again until told to stop."""
        while not stop:
            began = time.monotonic()
            client = yield connect(
                reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
            )
            yield client.logon("agent1", "demo")
            latencies.append(time.monotonic() - began)
            yield client.get_version()
            yield client.heartbeat()
            yield client.logoff()
            done[0] += 1

    @defer.inlineCallbacks
    def test_a_thousand_idle_connections_closed_at_their_deadlines(self) -> Any:
        """Silent, half-hello, TLS-then-silent, half-upgrade and wss-then-silent connections
        (1,000) are all closed within the deadline while a client keeps logging on."""
        bridge = self.site.bridge
        tunnel = yield connect(  # logged on over wss before the flood: no deadline after logon
            reactor, f"wss://localhost:{self.site.wss_port}/sm1/session", ca=self.site.pki.ca
        )
        yield tunnel.logon("agent2", "demo")
        stop: list[bool] = []
        latencies: list[float] = []
        done = [0]
        worker = self.legitimate(stop, latencies, done)
        hello = half_client_hello()
        upgrade = b"GET /IC/session HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        client_port, ws_port, wss_port = (
            self.site.client_port,
            self.site.ws_port,
            self.site.wss_port,
        )
        kinds = [
            ("silent", client_port, b"", False),
            ("half-hello", client_port, hello, False),
            ("tls-silent", client_port, b"", True),
            ("ws-half-upgrade", ws_port, upgrade, False),
            ("wss-silent", wss_port, b"", True),
        ]
        flood: list[Idle] = []
        dials = []
        flood_began = time.monotonic()
        for i in range(PER_KIND):
            for kind, port, first, tls in kinds:
                proto = Idle(kind, first, tls)
                flood.append(proto)
                dials.append(self.dial(port, proto))
            if i % 5 == 4:  # 25 at a time: the listen backlog (50) takes each wave
                yield task.deferLater(reactor, 0.01, lambda: None)
        yield defer.gatherResults(dials)
        yield poll(lambda: all(p.ended is not None for p in flood), deadline=30)
        all_closed = time.monotonic() - flood_began
        stop.append(True)
        yield worker

        lifetimes = {kind: [] for kind, *_ in kinds}
        for p in flood:
            assert p.ended is not None and p.started is not None, p.kind
            lifetimes[p.kind].append(p.ended - p.started)
        worst = {kind: max(v) for kind, v in lifetimes.items()}
        shown = {kind: round(v, 2) for kind, v in worst.items()}
        counts = Counter(
            reason
            for name, labels, n in bridge.router.counters
            if name == "connections_closed"
            for reason in [labels["reason"]] * n
        )
        print(  # the figures for the note
            f"\nslowloris: {len(flood)} connections, all closed {all_closed:.1f}s after the "
            f"first dial; longest lifetime by kind {shown}; "
            f"closed by reason {dict(counts)}; legitimate client: {done[0]} logon cycles, "
            f"logon latency max {max(latencies) * 1000:.0f} ms, "
            f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms"
        )
        for kind, longest in worst.items():
            self.assertGreaterEqual(min(lifetimes[kind]), DEADLINE - 0.5, kind)  # a busy turn
            self.assertLessEqual(longest, DEADLINE + SLACK, kind)
        self.assertEqual(
            dict(counts),
            {
                "handshake-timeout": 2 * PER_KIND,  # silent and half a ClientHello
                "logon-timeout": PER_KIND,  # TLS done, then nothing
                "upgrade-timeout": 2 * PER_KIND,  # half an upgrade; wss TLS then nothing
            },
        )
        self.assertGreaterEqual(done[0], 3)
        self.assertLess(max(latencies), DEADLINE)
        from smbridge.admin.metrics import bridge_registry, exposition

        scrape = exposition(bridge_registry(bridge)).decode()
        self.assertIn('smbridge_connections_closed_total{reason="handshake-timeout"} 400.0', scrape)
        yield tunnel.heartbeat()  # alive well past every deadline
        self.assertEqual(len(bridge.connections.connections), 1)
        yield tunnel.logoff()


class BigFrame(Protocol):
    """Declares a 1 MiB frame before logon, sends 64 KiB of it and waits for the answer."""

    def __init__(self, header: bytes) -> None:
        self.header = header
        self.received = b""
        self.ended = False

    def connectionMade(self) -> None:
        self.transport.write(self.header + b"x" * 65536)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.ended = True


class LargeFramesBeforeLogon(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_unfinished_large_frames_are_refused_at_their_header(self) -> Any:
        """200 TLS connections each declaring a 1 MiB frame before logon get bad-frame and
        are closed; nothing of them stays buffered."""
        import struct

        from smbridge.testing import decode_all

        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-bigframe-")), logon_timeout=60
        )
        self.addCleanup(site.stop)
        ca = Certificate.loadPEM(site.pki.ca.read_bytes())
        options = optionsForClientTLS("localhost", trustRoot=ca)
        header = struct.pack(">IBBHHI", 1 << 20, 1, 1, 168, 1, 5)
        protos = [BigFrame(header) for _ in range(200)]
        for i, proto in enumerate(protos):
            endpoint = wrapClientTLS(
                options, TCP4ClientEndpoint(reactor, "127.0.0.1", site.client_port)
            )
            yield connectProtocol(endpoint, proto)
            if i % 25 == 24:
                yield task.deferLater(reactor, 0.01, lambda: None)
        yield poll(lambda: all(p.ended for p in protos), deadline=30)
        codes = {decode_all(p.received)[0].parsed()["code"] for p in protos}
        self.assertEqual(codes, {"bad-frame"})
        counters = site.bridge.router.counters
        self.assertEqual(counters.get("connections_closed", reason="prelogon-frame-too-large"), 200)
        self.assertEqual(len(site.bridge.connections.connections), 0)

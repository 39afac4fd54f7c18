"""An open tunnel connection carries only what it needs (smbridge/tunnel/slim.py)."""

from __future__ import annotations

import socket
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.config import TunnelSettings
from smbridge.testing import poll, start_site
from smbridge.tunnel.slim import HANDSHAKE_ONLY, NO_TRAFFIC_STATS, LazyQueue, options_as_class
from smbridge.tunnel.tunnel import TunnelProtocol

UPGRADE = (
    b"GET /sm1/session HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nININ-Client-Type: test\r\n\r\n"
)


def open_and_log_on(port: int) -> socket.socket:
    """A raw ws client that upgrades and logs on; returned open."""
    sock = socket.create_connection(("127.0.0.1", port), 5)
    sock.settimeout(5)
    sock.sendall(UPGRADE)
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(4096)
    body = {"user": "agent1", "password": "demo", "clientId": "slim"}
    frame = encode(Kind.REQUEST, *c.CREATE_SESSION, 1, body)
    assert len(frame) < 126
    sock.sendall(bytes((0x82, 0x80 | len(frame))) + b"\0" * 4 + frame)
    head = got.partition(b"\r\n\r\n")[2]
    while len(head) < 2:
        head += sock.recv(4096)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    return got


@pytest.mark.integration
class OpenConnection(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_open_connection_is_trimmed_and_still_sends(self) -> Any:
        """After the upgrade: no handshake leftovers, a small __dict__, options on the class
        (changed for later connections only), and a synchronous send still reaches the
        client through the lazy queue."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-slim-"))
        site = yield start_site(reactor, work, ws_port=0, tunnel=TunnelSettings(ping_interval=0))
        self.addCleanup(site.stop)
        sock = yield threads.deferToThread(open_and_log_on, site.ws_port)
        conns = site.bridge.connections.connections
        self.addCleanup(poll, lambda: not conns)  # the bridge saw it go: no close timer left
        self.addCleanup(sock.close)
        yield poll(lambda: any(getattr(x, "ws", None) for x in conns))
        ws = next(x.ws for x in conns if getattr(x, "ws", None))
        own = vars(ws)
        self.assertFalse(set(HANDSHAKE_ONLY) & set(own), sorted(own))
        self.assertFalse({"autoPingInterval", "maxMessagePayloadSize"} & set(own))
        self.assertEqual(ws.maxMessagePayloadSize, ws.factory.max_message)
        self.assertIsNone(ws.perMessageCompressionAccept([]))  # a function option stays one
        self.assertLessEqual(len(own), 32, sorted(own))
        self.assertIsInstance(ws.send_queue, LazyQueue)
        self.assertIs(ws.trafficStats, NO_TRAFFIC_STATS)
        ws.factory.setProtocolOptions(autoPingInterval=7)  # for connections made from now on
        self.assertEqual((ws.factory.protocol.autoPingInterval, ws.autoPingInterval), (7, 0))
        ws.sendData(b"\x82\x05hello", sync=True)  # Autobahn's queued path
        self.assertIsInstance(ws.send_queue, deque)
        got = yield threads.deferToThread(read_until, sock, b"hello")
        self.assertIn(b"\x82\x05hello", got)


def test_options_become_class_attributes_and_defaults_are_shared() -> None:
    """The subclass holds the factory's options and the open-state defaults."""

    class Factory:
        def __getattr__(self, name: str) -> Any:
            return f"option {name}"

    cls = options_as_class(TunnelProtocol, Factory())
    assert cls.CONFIG_ATTRS == ()
    assert cls.autoPingInterval == "option autoPingInterval"
    assert cls.http_headers is None and cls.wasClean is False
    assert issubclass(cls, TunnelProtocol) and cls.__name__ == "TunnelProtocol"


def test_lazy_queue_is_empty_until_an_append_gives_its_owner_a_deque() -> None:
    """len, iteration and popleft behave as an empty deque; append installs a real one."""

    class Owner:
        send_queue: Any = None

    owner = Owner()
    queue = LazyQueue(owner)
    owner.send_queue = queue
    assert len(queue) == 0 and list(queue) == [] and not queue
    with pytest.raises(IndexError):
        queue.popleft()
    queue.append((b"x", True))
    assert owner.send_queue == deque([(b"x", True)])


def test_traffic_stats_sink_reads_zero_and_drops_writes() -> None:
    """Autobahn's ``stats.x += n`` leaves the shared sink at zero."""
    stats: Any = NO_TRAFFIC_STATS
    stats.incomingOctetsWireLevel += 10
    assert stats.incomingOctetsWireLevel == 0

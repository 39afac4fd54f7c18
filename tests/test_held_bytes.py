"""Bytes held for stalled clients: bounded per client, counted by the safeguard (issue 13, 4 and 5).

Real loopback TLS, the real bridge and reference Notifier, the client library. A
stalled client logs on, stops reading and pipelines GetDirectory requests (each
answer is about 5.9 kB, each request under 100 bytes).
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge.client import ClientError, connect
from smbridge.codec.catalog import GET_DIRECTORY
from smbridge.sender import parameters as p
from smbridge.testing import http_json, poll, start_site

pytestmark = pytest.mark.integration

BOUND = 1 << 20  # --max-held-bytes for these tests
TRANSPORT_SLACK = 65536 + 8192  # a transport's buffer before it pauses us, plus one answer
DIRECTORY = {"name": "Company Directory"}
LIMITED = {p.ENABLED: "Yes", p.TOTAL: "60000", p.INTERVAL: "1000"}


def stream(client: Any) -> Any:
    """The client's byte-stream transport (TLS), under the WebSocket layer if any."""
    transport = client.protocol.transport
    ws = getattr(transport, "ws", None)
    return ws.transport if ws is not None else transport


def stall(client: Any) -> None:
    """Stop reading on ``client``'s socket (and keep its receive window small)."""
    transport = stream(client)
    tcp = getattr(transport, "transport", None) or transport  # under TLS, the TCP transport
    tcp.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport.pauseProducing()


def pipeline(client: Any, count: int) -> None:
    """Send ``count`` GetDirectory requests without waiting; their answers are never read."""
    for _ in range(count):
        d = client.protocol.request(*GET_DIRECTORY, DIRECTORY)
        d.addErrback(lambda _: None)  # failed with the connection, unread


def abort(client: Any) -> None:
    transport = stream(client)
    if transport is not None and client.protocol.connected:
        transport.abortConnection()


def held_for(site: Any, conn: Any) -> int:
    """Every byte the bridge holds for ``conn`` between turns: its queue, the limiter's, its
    transport's."""
    sender = site.bridge.connections.sender
    return int(conn.held_bytes()) + int(sender.session_status(conn)["queuedBytes"])


def turn() -> defer.Deferred[None]:
    return task.deferLater(reactor, 0.005, lambda: None)


class StalledReaderBound(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def _stalled_reader_is_bounded(self, parameters: dict[str, str], wss: bool = False) -> Any:
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-held-")),
            parameters=parameters,
            max_held_bytes=BOUND,
            **({"wss_port": 0} if wss else {}),
        )
        self.addCleanup(site.stop)
        sender = site.bridge.connections.sender
        yield poll(lambda: sender.settings.enabled is (p.ENABLED in parameters))
        uri = (
            f"wss://localhost:{site.wss_port}/cic1/session"
            if wss
            else f"tls://localhost:{site.client_port}"
        )
        client = yield connect(reactor, uri, ca=site.pki.ca)
        self.addCleanup(abort, client)
        yield client.logon("agent1", "demo")
        state = client.resume_state
        [conn] = [c for c in site.bridge.connections.connections if c.session is not None]
        session = conn.session
        stall(client)

        peak = 0
        for _ in range(200):  # bounded: at most 200 x 20 requests (about 23 MB of answers)
            if not conn.connected:
                break
            pipeline(client, 20)
            for _ in range(3):
                yield turn()
                if conn.connected:
                    peak = max(peak, held_for(site, conn))
        yield poll(lambda: not conn.connected and conn not in site.bridge.connections.connections)
        self.assertGreater(peak, BOUND // 2)
        self.assertLessEqual(peak, BOUND + TRANSPORT_SLACK)
        self.assertEqual(sender.held_bytes(), 0)

        # The session lingers, and resumes on a new connection.
        self.assertEqual(session.state.value, "lingering")
        other = yield connect(reactor, uri, ca=site.pki.ca)
        self.addCleanup(other.close)
        reply = yield other.resume(state)
        self.assertTrue(reply["resumed"])
        answer = yield other.get_directory("Company Directory")
        self.assertEqual(len(answer["entries"]), 51)

    def test_a_stalled_reader_is_bounded_and_dropped_with_the_limiter_off(self):
        """Limiter off: the bytes held for a pipelining reader stay under the bound; it lingers."""
        return self._stalled_reader_is_bounded({})

    def test_a_stalled_reader_is_bounded_and_dropped_with_the_limiter_on(self):
        """Limiter on: its limiter queue counts too, so it is dropped at the bound; it lingers."""
        return self._stalled_reader_is_bounded(LIMITED)

    def test_a_stalled_reader_over_wss_is_bounded_and_dropped(self):
        """Over the wss tunnel too, what its WebSocket and TLS layers hold counts."""
        return self._stalled_reader_is_bounded({}, wss=True)


class SafeguardForStalledReaders(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def _safeguard_engages(self, parameters: dict[str, str]) -> Any:
        limit = 1_000_000
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-held-")),
            parameters={p.MAX_PRIVATE_BYTES: str(limit), **parameters},
            admin_port=0,
        )
        self.addCleanup(site.stop)
        sender = site.bridge.connections.sender
        yield poll(lambda: sender.settings.max_private_bytes == limit)
        status_url = f"http://127.0.0.1:{site.bridge.admin_port}/api/status"
        uri = f"tls://localhost:{site.client_port}"

        # One logon and logoff first, as on any bridge that has run for a while.
        first = yield connect(reactor, uri, ca=site.pki.ca)
        yield first.logon("agent1", "demo")
        yield first.logoff()
        yield poll(lambda: not site.bridge.connections.connections)

        healthy = yield connect(reactor, uri, ca=site.pki.ca)
        self.addCleanup(healthy.close)
        yield healthy.logon("agent2", "demo")
        stalled = []
        for i in range(4):
            client = yield connect(reactor, uri, ca=site.pki.ca)
            self.addCleanup(abort, client)
            yield client.logon(f"agent{i + 3}", "demo")
            stall(client)
            stalled.append(client)
        for _ in range(10):  # bounded: until the kernel's socket buffers are full
            for client in stalled:
                pipeline(client, 120)  # one burst each: about 700 kB of answers
            yield task.deferLater(reactor, 0.3, lambda: None)  # what the kernel takes, taken
            if sender.held_bytes() > limit:
                break
        self.assertGreater(sender.held_bytes(), limit)

        code, status = yield http_json(reactor, "GET", status_url)
        deadline = 40
        while not status["sender"]["safeguardActive"] and deadline:  # bounded: 40 x 0.05 s
            yield task.deferLater(reactor, 0.05, lambda: None)
            code, status = yield http_json(reactor, "GET", status_url)
            deadline -= 1
        self.assertEqual(code, 200)
        self.assertTrue(status["sender"]["safeguardActive"])
        self.assertGreater(status["sender"]["heldBytes"], limit)
        with self.assertRaises(ClientError) as raised:
            yield healthy.get_directory("Company Directory")  # medium, 5.9 kB
        self.assertEqual(raised.exception.code, "server-overloaded")
        beat = yield healthy.heartbeat()  # small replies pass
        self.assertIn("sessionUpdated", beat)

        for client in stalled:
            abort(client)
        yield poll(lambda: not sender.safeguard_active, deadline=10.0)
        code, status = yield http_json(reactor, "GET", status_url)
        self.assertFalse(status["sender"]["safeguardActive"])
        answer = yield healthy.get_directory("Company Directory")
        self.assertEqual(len(answer["entries"]), 51)

    def test_the_safeguard_engages_for_stalled_readers_with_the_limiter_off(self):
        """Limiter off: bytes in stalled clients' transports switch the safeguard on, then off."""
        return self._safeguard_engages({})

    def test_the_safeguard_engages_for_stalled_readers_with_the_limiter_on(self):
        """Limiter on: the same, counting its queues and the transports' buffers."""
        return self._safeguard_engages({p.ENABLED: "Yes", p.TOTAL: "60000", p.INTERVAL: "100"})

"""The sender keeps working after the last client leaves and another one comes (issue 13, 3)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.codec import Kind, encode_raw
from smbridge.codec.catalog import QUEUE_CHANGED, STATUS_CHANGED
from smbridge.sender import parameters as p
from smbridge.sender.sender import MEMORY_CHECK_SECONDS
from smbridge.testing import RouterHarness, decode_all, poll, start_site
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory

LIMITED = {p.ENABLED: "Yes", p.TOTAL: "60000", p.INTERVAL: "1000"}


def notification(message: tuple[int, int], size: int, tag: int = 0) -> bytes:
    """A notification of exactly ``size`` bytes."""
    return encode_raw(Kind.NOTIFICATION, *message, tag, b'{"p":"' + b"x" * (size - 22) + b'"}')


def attach(factory: ClientConnectionFactory) -> tuple[ClientConnection, StringTransport]:
    conn = factory.connection("tls")
    transport = StringTransport()
    conn.makeConnection(transport)  # type: ignore[no-untyped-call]
    return conn, transport


def test_the_limiter_paces_again_after_the_last_client_left_and_another_came():
    """Attach, detach, attach: queued frames still leave at the next pacing steps."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    sender = factory.sender
    assert sender.configure(LIMITED) == []
    first, _ = attach(factory)
    first.connectionLost(None)
    assert h.clock.getDelayedCalls() == []  # nothing left on the reactor while idle
    conn, transport = attach(factory)
    for i in range(100):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    h.clock.advance(0)
    assert len(transport.value()) == 60000
    h.clock.pump([1.0] + [0.1] * 9)  # the next interval, in its ten pacing steps
    assert len(transport.value()) == 100000
    assert [f.request_id for f in decode_all(transport.value())] == list(range(100))
    conn.connectionLost(None)
    h.clock.advance(1.0)  # limiting ends at the boundary where nothing waits
    assert h.clock.getDelayedCalls() == []


def test_the_memory_safeguard_engages_after_the_last_client_left_and_another_came():
    """Attach, detach, attach: held bytes are still recounted and switch the safeguard on."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    sender = factory.sender
    assert sender.configure({p.MAX_PRIVATE_BYTES: "10000"}) == []
    first, _ = attach(factory)
    first.connectionLost(None)
    conn, _ = attach(factory)
    conn.pauseProducing()
    for i in range(4):
        conn.send(notification(STATUS_CHANGED, 3000, i))
    h.clock.advance(MEMORY_CHECK_SECONDS)
    assert sender.safeguard_active
    conn.resumeProducing()
    h.clock.advance(MEMORY_CHECK_SECONDS)
    assert not sender.safeguard_active
    conn.connectionLost(None)
    h.clock.advance(MEMORY_CHECK_SECONDS)
    assert h.clock.getDelayedCalls() == []


def test_a_stopped_sender_schedules_nothing():
    """After stop() (the bridge stopping) a closing connection's frames arm no call."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    factory.sender.configure(LIMITED)
    conn, _ = attach(factory)
    factory.sender.stop()
    conn.pauseProducing()
    for i in range(100):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    h.clock.advance(0)
    assert [c for c in h.clock.getDelayedCalls() if c.func != conn._stalled] == []


@pytest.mark.integration
class RestartedSender(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_thirty_sessions_are_paced_after_a_logon_and_logoff(self):
        """Log on, log off, log on 30 sessions and saturate: every answer arrives on pace."""
        total, interval = 60000, 100  # bytes per interval, ms: 600,000 bytes a second
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-restart-")),
            parameters={p.ENABLED: "Yes", p.TOTAL: str(total), p.INTERVAL: str(interval)},
        )
        self.addCleanup(site.stop)
        connections = site.bridge.connections
        sender = connections.sender
        yield poll(lambda: sender.settings.enabled and sender.settings.total_bytes == total)
        uri = f"tls://localhost:{site.client_port}"

        first = yield connect(reactor, uri, ca=site.pki.ca)
        yield first.logon("agent1", "demo")
        yield first.logoff()
        yield poll(lambda: not connections.connections and not sender.receivers)

        clients: list[Any] = []
        for i in range(30):
            client = yield connect(reactor, uri, ca=site.pki.ca)
            self.addCleanup(client.close)
            yield client.logon(f"agent{i + 1}", "demo")
            clients.append(client)
        written = sum(c.sent_bytes for c in connections.connections)
        yield clients[0].get_directory("Company Directory")
        yield poll(lambda: sum(c.sent_bytes for c in connections.connections) > written)
        size = sum(c.sent_bytes for c in connections.connections) - written

        per_client = 6
        started = time.monotonic()
        answers = [
            client.get_directory("Company Directory")
            for client in clients
            for _ in range(per_client)
        ]  # fmt: skip
        results = yield defer.gatherResults(answers)
        took = time.monotonic() - started
        self.assertEqual(len(results), 30 * per_client)
        self.assertTrue(all(len(r["entries"]) == 51 for r in results))
        # Well over the total: the limiter was limiting, yet paced everything out.
        pacing = 30 * per_client * size / (total * 1000 / interval)
        self.assertGreater(pacing, 1.0)
        self.assertLess(took, 2 * pacing + 2.0)
        self.assertGreater(max(sender.scheduler.history), total - 1)

"""The memory safeguard on a running bridge with real sockets and a client that stops reading."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from smbridge.client import ClientError, connect
from smbridge.codec import Kind, encode, encode_raw
from smbridge.codec.catalog import HEARTBEAT, STATUS_CHANGED
from smbridge.sender import parameters as p
from smbridge.testing import Recorder, http_json, poll, start_site

FRAME = encode_raw(Kind.NOTIFICATION, *STATUS_CHANGED, 0, b'{"p":"' + b"x" * 7978 + b'"}')
LIMIT = 300_000


class StalledReader(Protocol):
    """A raw client with a tiny receive buffer that stops reading at once."""

    def connectionMade(self) -> None:
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.transport.write(encode(Kind.REQUEST, *HEARTBEAT, 1))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        pass


class Safeguard(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_a_stalled_reader_triggers_suppression_suspension_and_recovery(self):
        """Held bytes over the limit suppress and suspend; once read, the queue comes back whole."""
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-safeguard-")),
            admin_port=0,
            allow_cleartext=True,
        )
        self.addCleanup(site.stop)
        notifier = site.notifier.notifier
        sender = site.bridge.connections.sender
        control = site.control_url
        yield http_json(reactor, "POST", f"{control}/api/traffic", {"callsPerSecond": 0})
        code, _ = yield http_json(
            reactor,
            "POST",
            f"{control}/api/parameters",
            {p.MAX_PRIVATE_BYTES: str(LIMIT), p.SMALL_MESSAGE: "100"},
        )
        self.assertEqual(code, 200)
        yield poll(lambda: sender.settings.max_private_bytes == LIMIT)
        self.assertEqual(sender.settings.small_message_bytes, 100)

        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        self.addCleanup(client.close)
        yield client.logon("agent1", "demo")
        recorder = Recorder(client)
        yield client.watch_queue("Sales")
        notifier.change_queue("Support", added=[{"id": "sg-2", "note": "y" * 200}])

        # A raw client that never reads; the bridge holds what it cannot write to it.
        before = set(site.bridge.connections.connections)
        reader = StalledReader()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", site.client_port).connect(
            Factory.forProtocol(lambda: reader)
        )
        yield poll(lambda: len(site.bridge.connections.connections) == len(before) + 1)
        [stalled] = set(site.bridge.connections.connections) - before
        for _ in range(400):  # bounded: until the bridge holds more than the limit
            for _ in range(10):
                stalled.send(FRAME)
            yield poll(lambda: not site.bridge.batcher._dirty)
            if stalled._paused and stalled.held_bytes() > LIMIT:
                break
        self.assertGreater(sender.held_bytes(), LIMIT)
        yield poll(lambda: sender.safeguard_active)

        # A large queue update suspends the queue once; later ones are dropped.
        item = {"id": "sg-1", "note": "x" * 200}
        notifier.change_queue("Sales", added=[item])
        yield poll(lambda: recorder.of("QueueSuspended") != [])
        notifier.change_queue("Sales", changed=[item])
        # A large response becomes server-overloaded.
        with self.assertRaises(ClientError) as raised:
            yield client.watch_queue("Support")
        self.assertEqual(raised.exception.code, "server-overloaded")
        self.assertEqual(recorder.of("QueueSuspended"), [{"queue": "Sales"}])
        self.assertEqual(recorder.of("QueueChanged"), [])
        base = f"http://127.0.0.1:{site.bridge.admin_port}"
        code, status = yield http_json(reactor, "GET", f"{base}/api/status")
        self.assertTrue(status["sender"]["safeguardActive"])
        self.assertEqual(status["sender"]["suppressed"]["low"]["frames"], 2)
        self.assertEqual(status["sender"]["suppressed"]["medium"]["frames"], 1)
        self.assertEqual(status["sender"]["suspendedQueues"], 1)

        # The reader reads again: held bytes fall, the queue comes back with a snapshot.
        reader.transport.resumeProducing()  # type: ignore[union-attr]
        yield poll(lambda: not sender.safeguard_active, deadline=10.0)
        yield poll(lambda: recorder.of("QueueChanged") != [])
        self.assertEqual(recorder.of("QueueUnsuspended"), [{"queue": "Sales"}])
        names = [n for n, _ in recorder.events]
        self.assertLess(names.index("QueueUnsuspended"), names.index("QueueChanged"))
        [fresh] = recorder.of("QueueChanged")
        self.assertTrue(fresh["reset"])
        self.assertEqual(
            [i["id"] for i in fresh["interactions"]],
            [i["id"] for i in notifier.queue_items("Sales")],
        )
        snapshot = yield client.watch_queue("Support")  # large replies pass again
        self.assertEqual(snapshot["queue"], "Support")
        reader.transport.loseConnection()  # type: ignore[union-attr]

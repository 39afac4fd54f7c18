"""Backpressure on real loopback sockets: a slow reader is paused, bounded and dropped."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from smbridge.codec import Kind, encode_raw
from smbridge.codec.catalog import QUEUE_CHANGED
from smbridge.testing import poll
from smbridge.transports.batch import WriteBatcher
from smbridge.transports.connection import ClientConnectionFactory

FRAME = encode_raw(Kind.NOTIFICATION, *QUEUE_CHANGED, 0, b'{"p":"' + b"x" * (8000 - 22) + b'"}')


class _Router:
    def connection_lost(self, conn: Any) -> None:
        pass


class Reader(Protocol):
    def __init__(self, slow: bool) -> None:
        self.slow = slow
        self.data = bytearray()
        self.closed = False

    def connectionMade(self) -> None:
        if self.slow:
            sock = self.transport.getHandle()  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True


class SlowReader(TestCase):
    @defer.inlineCallbacks
    def test_a_slow_reader_is_paused_bounded_and_disconnected_while_others_receive(self):
        """A slow client is paused, holds bounded bytes, is dropped; the fast one gets all."""
        batcher = WriteBatcher(reactor)
        factory = ClientConnectionFactory(
            _Router(),  # type: ignore[arg-type]
            batcher,
            max_unread_seconds=1.0,
            max_held_bytes=1 << 20,
        )
        factory.buildProtocol = lambda addr: factory.connection("clear")  # type: ignore[method-assign]
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        readers = {"slow": Reader(True), "fast": Reader(False)}
        for name in ("slow", "fast"):
            reader = readers[name]
            yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
                Factory.forProtocol(lambda reader=reader: reader)
            )
        yield poll(lambda: len(factory.connections) == 2)
        slow_conn = next(c for c in factory.connections if c.remote.endswith(
            str(readers["slow"].transport.getHost().port)))  # fmt: skip
        sent = 0
        for _ in range(200):  # bounded: stop once the slow client's transport has paused us
            for _ in range(10):
                for conn in list(factory.connections):
                    conn.send(FRAME)
                sent += 1
            yield poll(lambda: not batcher._dirty)
            if slow_conn._paused:
                break
        self.assertTrue(slow_conn._paused)
        for _ in range(20):
            slow_conn.send(FRAME)
        self.assertGreaterEqual(slow_conn.held_bytes(), 20 * len(FRAME))
        self.assertLessEqual(slow_conn.held_bytes(), (1 << 20) + 2 * 65536 + len(FRAME))
        self.assertEqual(factory.sender.held_bytes(), sum(
            c.held_bytes() for c in factory.connections))  # fmt: skip
        # The fast reader got every frame meanwhile.
        yield poll(lambda: len(readers["fast"].data) == sent * len(FRAME))
        # Past max_unread_seconds the slow client is dropped (aborted).
        yield poll(lambda: not slow_conn.connected, deadline=5.0)
        readers["slow"].transport.resumeProducing()  # reading again, it sees the reset
        yield poll(lambda: readers["slow"].closed, deadline=5.0)
        self.assertNotIn(slow_conn, factory.connections)
        self.assertEqual(len(factory.connections), 1)
        self.assertEqual(factory.sender.held_bytes(), 0)
        self.assertFalse(readers["fast"].closed)
        readers["fast"].transport.loseConnection()
        yield poll(lambda: not factory.connections)

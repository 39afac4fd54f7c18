"""The client listener over real loopback sockets: TLS and clear text on one port."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.codec import Decoder, Kind, encode
from smbridge.codec import catalog as c
from smbridge.testing import start_site


class RawClient(Protocol):
    """Collects decoded frames; ``next_frame()`` waits for the next one."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.frames: list = []
        self.waiting: list[defer.Deferred] = []
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if self.waiting:
                self.waiting.pop(0).callback(frame)
            else:
                self.frames.append(frame)

    def next_frame(self) -> defer.Deferred:
        if self.frames:
            return defer.succeed(self.frames.pop(0))
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        return d

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)


class ListenerTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def _site(self, **kw):
        site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-test-")), **kw)
        self.addCleanup(site.stop)
        return site

    def _connect(self, site, tls: bool):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", site.client_port)
        if tls:
            endpoint = wrapClientTLS(pki.client_options("localhost", site.pki.ca), endpoint)
        return endpoint.connect(Factory.forProtocol(RawClient))

    @defer.inlineCallbacks
    def test_tls_client_is_served(self):
        """A TLS client that verifies the bridge's certificate gets GetVersion answered."""
        site = yield self._site()
        client = yield self._connect(site, tls=True)
        client.transport.write(encode(Kind.REQUEST, *c.GET_VERSION, 3))
        frame = yield client.next_frame()
        self.assertEqual((frame.kind, frame.request_id), (Kind.RESPONSE, 3))
        self.assertEqual(frame.parsed()["server"], "smbridge")
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_cleartext_refused_with_tls_required(self):
        """Clear text gets an error frame tls-required and the connection is closed."""
        site = yield self._site()
        client = yield self._connect(site, tls=False)
        client.transport.write(encode(Kind.REQUEST, *c.GET_VERSION, 3))
        frame = yield client.next_frame()
        self.assertEqual(frame.kind, Kind.ERROR)
        self.assertEqual(frame.parsed()["code"], "tls-required")
        yield client.lost

    @defer.inlineCallbacks
    def test_cleartext_allowed_when_configured(self):
        """With clear text allowed, the same port serves an unencrypted client."""
        site = yield self._site(allow_cleartext=True)
        client = yield self._connect(site, tls=False)
        client.transport.write(encode(Kind.REQUEST, *c.GET_VERSION, 4))
        frame = yield client.next_frame()
        self.assertEqual((frame.kind, frame.request_id), (Kind.RESPONSE, 4))
        client.transport.loseConnection()
        yield client.lost

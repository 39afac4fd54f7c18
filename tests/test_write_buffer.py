"""A client's transport buffers 1/16 of --max-held-bytes before it pauses the connection.

Twisted's default (64 KiB) paused every client on every large fan-out run
(transports/held.py, ``set_write_buffer``; docs/sender.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.testing import poll, start_site
from smbridge.transports.held import set_write_buffer, write_buffer_bytes


def test_the_share_of_the_bound_with_twisteds_default_as_the_floor() -> None:
    """4 MiB held at most: 256 KiB in the transport; never under Twisted's 64 KiB."""
    assert write_buffer_bytes(4 << 20) == 256 << 10
    assert write_buffer_bytes(1 << 30) == 64 << 20
    assert write_buffer_bytes(1 << 20) == 64 << 10
    assert write_buffer_bytes(65536) == 64 << 10


def test_only_a_transport_with_a_buffer_is_changed() -> None:
    """A transport without ``bufferSize`` (the tunnel's WebSocket layer) is left alone."""

    class Buffered:
        bufferSize = 65536

    class Plain:
        pass

    buffered, plain = Buffered(), Plain()
    set_write_buffer(buffered, 8 << 20)
    set_write_buffer(plain, 8 << 20)
    assert buffered.bufferSize == 512 << 10
    assert not hasattr(plain, "bufferSize")


@pytest.mark.integration
class RealConnections(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def _buffer_of_a_logged_on_client(self, **site_options: Any) -> Any:
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-wbuf-")), **site_options
        )
        self.addCleanup(site.stop)
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        self.addCleanup(client.close)
        yield client.logon("agent1", "demo")
        yield poll(lambda: any(c.session for c in site.bridge.connections.connections))
        [conn] = [c for c in site.bridge.connections.connections if c.session is not None]
        return conn.transport.bufferSize

    @defer.inlineCallbacks
    def test_a_tls_client_gets_a_sixteenth_of_the_default_bound(self) -> Any:
        """Default --max-held-bytes (4 MiB): the TLS client's TCP transport pauses past 256 KiB."""
        size = yield self._buffer_of_a_logged_on_client()
        self.assertEqual(size, 256 << 10)

    @defer.inlineCallbacks
    def test_the_buffer_follows_the_bound(self) -> Any:
        """--max-held-bytes 8 MiB: 512 KiB."""
        size = yield self._buffer_of_a_logged_on_client(max_held_bytes=8 << 20)
        self.assertEqual(size, 512 << 10)

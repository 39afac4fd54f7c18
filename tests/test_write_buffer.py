"""A client's TCP transport buffers 1/16 of --max-held-bytes before it pauses the connection;
it has TCP keepalive with the documented timings, under TLS too.

Twisted's default (64 KiB) paused every client on every large fan-out run
(transports/held.py, ``set_write_buffer``; docs/sender.md).
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.testing import poll, start_site
from smbridge.transports.held import set_write_buffer, write_buffer_bytes
from smbridge.transports.sockets import tcp_layer


def test_the_share_of_the_bound_with_twisteds_default_as_the_floor() -> None:
    """4 MiB held at most: 256 KiB in the transport; never under Twisted's 64 KiB."""
    assert write_buffer_bytes(4 << 20) == 256 << 10
    assert write_buffer_bytes(1 << 30) == 64 << 20
    assert write_buffer_bytes(1 << 20) == 64 << 10
    assert write_buffer_bytes(65536) == 64 << 10


def test_the_buffer_is_set_on_the_tcp_layer_not_on_a_wrapper() -> None:
    """Under a wrapper that forwards attributes (as TLS does), the socket's layer gets it."""

    class Tcp:
        bufferSize = 65536

        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def getHandle(self) -> socket.socket:
            return self.sock

    class Wrapper:  # like TLSMemoryBIOProtocol: getHandle is not the socket
        def __init__(self, transport: Tcp) -> None:
            self.transport = transport

        def getHandle(self) -> object:
            return object()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.transport, name)

    a, b = socket.socketpair()
    try:
        tcp = Tcp(a)
        wrapper = Wrapper(tcp)
        set_write_buffer(wrapper, 8 << 20)
        assert tcp.bufferSize == 512 << 10 and "bufferSize" not in vars(wrapper)
        plain = Wrapper(None)  # type: ignore[arg-type]  # no TCP layer below: unchanged
        set_write_buffer(plain, 8 << 20)
        assert "bufferSize" not in vars(plain)
    finally:
        a.close()
        b.close()


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
        tcp = tcp_layer(conn.transport)
        self.assertIsNot(tcp, conn.transport)  # under the TLS layer
        self.assertNotIn("bufferSize", vars(conn.transport))  # nothing left on the TLS layer
        handle = tcp.getHandle()
        keepalive = (
            handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )
        self.assertEqual(keepalive, (1, 60, 10, 6))  # docs/lifecycle.md, under TLS too
        return tcp.bufferSize

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

"""The Notifier link turns Nagle off: notifications have no answer to carry the ACK.

With the user topic's grace a logon sends the Notifier only SessionClosed and
SessionOpened (notifications) after Authenticate, so with Nagle on the next
Authenticate would wait for the delayed ACK of those small segments (up to 40 ms).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from smbridge.codec import catalog as c
from smbridge.testing.frames import decode_all
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream.connector import UpstreamConnector
from smbridge.upstream.link import UpstreamLinkFactory


class _TCPTransport(StringTransport):
    nodelay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


class _NoEndpoint:
    def connect(self, factory: object) -> object:
        raise AssertionError("connected by hand")


def test_link_sets_tcp_nodelay_before_registering():
    clock = Clock()
    batcher = WriteBatcher(clock)
    connector = UpstreamConnector(clock, _NoEndpoint(), {"name": "sm1"}, batcher, "test", 1 << 20)  # type: ignore[arg-type]
    link = UpstreamLinkFactory(connector, batcher).buildProtocol(None)
    transport = _TCPTransport()
    link.makeConnection(transport)  # type: ignore[no-untyped-call]
    clock.advance(0)
    assert transport.nodelay is True
    (register,) = decode_all(transport.value())
    assert (register.object_type, register.event_id) == c.LINK_REGISTER


def test_a_transport_without_tcp_options_is_left_alone():
    """A link over something that is not TCP (a test's string transport) still registers."""
    clock = Clock()
    batcher = WriteBatcher(clock)
    connector = UpstreamConnector(clock, _NoEndpoint(), {"name": "sm1"}, batcher, "test", 1 << 20)  # type: ignore[arg-type]
    link = UpstreamLinkFactory(connector, batcher).buildProtocol(None)
    transport = StringTransport()
    link.makeConnection(transport)  # type: ignore[no-untyped-call]
    clock.advance(0)
    (register,) = decode_all(transport.value())
    assert (register.object_type, register.event_id) == c.LINK_REGISTER

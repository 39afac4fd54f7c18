"""The router against a scripted Notifier (StringTransport on both sides), and fake
Notifier endpoints for the connector's state machine."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import Frame, Kind, encode
from smbridge.codec import catalog as c
from smbridge.codec.catalog import MessageType
from smbridge.router.router import BridgeIdentity, Router
from smbridge.session.negotiate import TimeoutPolicy
from smbridge.session.registry import SessionRegistry
from smbridge.testing.frames import decode_all
from smbridge.transports.batch import WriteBatcher
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory
from smbridge.upstream.connector import LinkState, UpstreamConnector
from smbridge.upstream.link import UpstreamLink, UpstreamLinkFactory


class ScriptedNotifier:
    """The far end of an UpstreamLink: reads its requests, answers them by hand."""

    def __init__(self, link: UpstreamLink, transport: StringTransport) -> None:
        self.link = link
        self.transport = transport

    def take(self) -> list[Frame]:
        data = self.transport.value()
        self.transport.clear()
        return decode_all(data)

    def answer(self, frame: Frame, body: dict[str, Any], kind: int = Kind.RESPONSE) -> None:
        self.link.dataReceived(
            encode(kind, frame.object_type, frame.event_id, frame.request_id, body)
        )

    def event(self, message: MessageType, sub: int, body: dict[str, Any]) -> None:
        """One upstream read of one event, its run handed out as at the end of a turn
        (the connections are not flushed: what they queued stays for the test to see)."""
        self.link.dataReceived(encode(Kind.NOTIFICATION, *message, sub, body))
        if self.link.batcher.staged is not None:
            self.link.batcher.unstage()


@implementer(IStreamClientEndpoint)
class _NoEndpoint:
    """The harness connects its link by hand; the connector never dials."""

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        raise AssertionError("the harness connects the link itself")


class RouterHarness:
    """A Router wired to a real connector and link whose far end is a ScriptedNotifier."""

    def __init__(self, parameters: dict[str, Any] | None = None, max_watches: int = 200) -> None:
        self.clock = Clock()
        self.batcher = WriteBatcher(self.clock)
        self.registry = SessionRegistry(self.clock, "sm1", TimeoutPolicy(1800, 60))
        self.connector = UpstreamConnector(
            self.clock, _NoEndpoint(), {"name": "sm1"}, self.batcher, "test", 1 << 20
        )
        self.router = Router(
            self.registry, self.connector, BridgeIdentity("sm1", "sm1.example"), max_watches
        )
        self.connector.state = LinkState.CONNECTING
        self.notifier = self.connect_link()
        (register,) = self.notifier.take()
        assert (register.object_type, register.event_id) == c.LINK_REGISTER
        params = parameters or {}
        self.notifier.answer(
            register,
            {
                "cic": {"name": "cic1", "role": "primary"},
                "parameters": params,
                "roster": [{"name": "sm1"}],
            },
        )
        assert self.connector.state is LinkState.UP
        (sub,) = self.upstream()
        assert sub.parsed()["topic"] == "parameters"
        self.params_sub = sub.parsed()["sub"]
        self.notifier.answer(sub, {"snapshot": {"parameters": params}})
        self.user_subs: dict[str, int] = {}

    def serve(self, sub: Frame, snapshot: dict[str, Any]) -> int:
        """Answer a Subscribe with a snapshot; return its subscription id."""
        assert (sub.object_type, sub.event_id) == c.LINK_SUBSCRIBE, sub
        self.notifier.answer(sub, {"snapshot": snapshot})
        return int(sub.parsed()["sub"])

    def connect_link(self) -> ScriptedNotifier:
        link = UpstreamLinkFactory(self.connector, self.batcher).buildProtocol(None)
        transport = StringTransport()
        link.makeConnection(transport)  # type: ignore[no-untyped-call]
        self.clock.advance(0)
        return ScriptedNotifier(link, transport)

    def switch_over(self, name: str = "cic2") -> None:
        """The link drops while the connector runs and comes back to ``name``, primary:
        a switchover. The Subscribes sent again are left for :meth:`upstream`."""
        self.connector.running = True
        self.notifier.link.connectionLost(None)  # type: ignore[arg-type]
        self.notifier = self.connect_link()
        (register,) = self.notifier.take()
        self.notifier.answer(register, {"cic": {"name": name, "role": "primary"}, "parameters": {}})

    def client(self) -> tuple[ClientConnection, StringTransport]:
        conn = ClientConnectionFactory(self.router, self.batcher).connection("tls")
        transport = StringTransport()
        conn.makeConnection(transport)  # type: ignore[no-untyped-call]
        return conn, transport

    def send(
        self,
        conn: ClientConnection,
        message: MessageType,
        rid: int,
        body: dict[str, Any] | None = None,
    ) -> None:
        conn.dataReceived(encode(Kind.REQUEST, *message, rid, body))
        self.clock.advance(0)

    def upstream(self) -> list[Frame]:
        self.clock.advance(0)
        return self.notifier.take()

    def received(self, transport: StringTransport) -> list[Frame]:
        self.clock.advance(0)
        data = transport.value()
        transport.clear()
        return decode_all(data)

    def logon(
        self, user: str = "agent1", rights: list[str] | None = None
    ) -> tuple[ClientConnection, StringTransport, dict[str, Any]]:
        conn, transport = self.client()
        self.send(conn, c.CREATE_SESSION, 1, {"user": user, "password": "demo"})
        (auth,) = self.upstream()
        self.notifier.answer(
            auth,
            {
                "user": {"id": user, "displayName": user.title(), "rights": rights or []},
                "station": None,
                "location": "Indianapolis",
            },
        )
        for frame in self.upstream():  # SessionOpened, and the user's topic once per user
            if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
                self.user_subs[user] = self.serve(frame, {"user": user, "interactions": []})
        replies = self.received(transport)
        return conn, transport, replies[0].parsed()


@implementer(IStreamClientEndpoint)
class FakeNotifierEndpoint:
    """A Notifier address: ``connect`` builds the link over a StringTransport, or fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reachable = True
        self.attempts = 0
        self.peers: list[ScriptedNotifier] = []

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.attempts += 1
        if not self.reachable:
            from twisted.internet.error import ConnectionRefusedError

            return defer.fail(ConnectionRefusedError(self.name))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.peers.append(ScriptedNotifier(protocol, transport))
        return defer.succeed(protocol)

    @property
    def last(self) -> ScriptedNotifier:
        return self.peers[-1]

    def drop(self) -> None:
        """The far end closed the newest link."""
        from twisted.internet.error import ConnectionDone

        self.last.link.connectionLost(Failure(ConnectionDone()))

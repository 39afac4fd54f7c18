"""BridgeClient: logon, heartbeats on an injected Clock, listeners and logoff."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client import BridgeClient, BridgeProtocol, ClientError, connect, parse_bridge_uri
from smbridge.codec import Decoder, Frame, Kind, encode, encode_error
from smbridge.codec.catalog import CREATE_SESSION, DESTROY_SESSION, HEARTBEAT

LOGON_REPLY = {
    "sessionId": "bridge-1.0001",
    "resumeToken": "s3cr3t-token",
    "sessionTimeout": 90,
    "heartbeatInterval": 30,
    "server": {"name": "bridge-1"},
}


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.protocol = BridgeProtocol()
        self.protocol.makeConnection(self.transport)
        self.client = BridgeClient(self.protocol, self.clock, parse_bridge_uri("tls://typed.host"))

    def sent(self) -> list[Frame]:
        frames = Decoder().feed(self.transport.value())
        self.transport.clear()
        return frames  # type: ignore[return-value]

    def answer(self, frame: Frame, body: dict[str, Any] | None = None) -> None:
        self.protocol.dataReceived(
            encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, body or {})
        )

    def logon(self, **kwargs: Any) -> dict[str, Any]:
        d = self.client.logon("alice", "pw", **kwargs)
        [frame] = self.sent()
        self.answer(frame, LOGON_REPLY)
        return self.successResultOf(d)

    def test_logon_sends_create_session(self) -> None:
        """logon sends CreateSession with the documented fields and only the options given."""
        self.client.logon(
            "alice", "pw", station="7001", session_timeout=120, client_id="pc-1", client_version="9"
        )
        [frame] = self.sent()
        assert (frame.object_type, frame.event_id) == CREATE_SESSION
        assert frame.body == {
            "user": "alice",
            "password": "pw",
            "clientId": "pc-1",
            "clientApp": "smbridge-client",
            "clientVersion": "9",
            "notifyImminent": True,
            "station": "7001",
            "host": "typed.host",
            "sessionTimeout": 120,
        }

    def test_logon_stores_session(self) -> None:
        """A successful logon returns the reply and records the session id, timeout and interval."""
        reply = self.logon()
        assert reply == LOGON_REPLY
        assert self.client.session_id == "bridge-1.0001"
        assert (self.client.session_timeout, self.client.heartbeat_interval) == (90.0, 30.0)

    def test_logon_failure(self) -> None:
        """A logon-failed error reaches the caller as ClientError and no heartbeat starts."""
        d = self.client.logon("alice", "wrong")
        [frame] = self.sent()
        self.protocol.dataReceived(
            encode_error(168, 1, frame.request_id, "logon-failed", "bad", reason="bad-credentials")
        )
        error = self.failureResultOf(d, ClientError).value
        assert (error.code, error.reason) == ("logon-failed", "bad-credentials")
        assert self.client.session_id is None
        self.clock.advance(1000)
        assert self.sent() == []

    def test_heartbeats_at_interval(self) -> None:
        """After logon a Heartbeat goes out every heartbeatInterval seconds, not before."""
        self.logon()
        self.clock.advance(29)
        assert self.sent() == []
        self.clock.advance(1)
        [beat] = self.sent()
        assert (beat.object_type, beat.event_id, beat.body) == (*HEARTBEAT, {})
        self.answer(beat, {"sessionUpdated": True, "haSwitchover": False})
        self.clock.advance(30)
        self.clock.advance(30)
        assert [(f.object_type, f.event_id) for f in self.sent()] == [HEARTBEAT, HEARTBEAT]

    def test_unanswered_heartbeat_does_not_delay_the_next(self) -> None:
        """Heartbeats keep their schedule even while an earlier one waits for its answer."""
        self.logon()
        self.clock.pump([30, 30, 30])
        assert len(self.sent()) == 3

    def test_logoff_stops_heartbeats_and_closes(self) -> None:
        """logoff sends DestroySession, closes after the answer and stops heartbeats."""
        self.logon()
        d = self.client.logoff()
        [destroy] = self.sent()
        assert (destroy.object_type, destroy.event_id) == DESTROY_SESSION
        self.assertNoResult(d)
        self.answer(destroy)
        assert self.transport.disconnecting is True
        self.protocol.connectionLost(Failure(ConnectionDone()))
        assert self.successResultOf(d) is None
        assert self.client.session_id is None
        self.clock.advance(300)
        assert self.sent() == []

    def test_session_terminated_stops_heartbeats(self) -> None:
        """SessionTerminated from the bridge stops heartbeats and clears the session id."""
        self.logon()
        seen: list[tuple[str, Any]] = []
        self.client.add_listener(lambda name, frame: seen.append((name, frame.body)))
        self.protocol.dataReceived(encode(Kind.NOTIFICATION, 168, 11, 0, {"reason": "expired"}))
        assert seen == [("SessionTerminated", {"reason": "expired"})]
        assert (self.client.session_id, self.client.terminated_reason) == (None, "expired")
        self.clock.advance(300)
        assert self.sent() == []

    def test_no_session_heartbeat_error_stops_heartbeats(self) -> None:
        """A heartbeat answered no-session stops the loop instead of failing every interval."""
        self.logon()
        self.clock.advance(30)
        [beat] = self.sent()
        self.protocol.dataReceived(encode_error(168, 3, beat.request_id, "no-session", "gone"))
        self.clock.advance(300)
        assert self.sent() == []

    def test_connection_loss_stops_heartbeats(self) -> None:
        """When the connection ends the heartbeat loop stops and ``closed`` fires."""
        self.logon()
        closed = self.client.closed
        self.protocol.connectionLost(Failure(ConnectionDone()))
        assert isinstance(self.successResultOf(closed), ConnectionDone)
        assert self.clock.getDelayedCalls() == []

    def test_listener_names_and_removal(self) -> None:
        """Listeners get the catalog name (or "(o,e)" when unknown) and stop after removal."""
        seen: list[str] = []

        def listener(name: str, frame: Frame) -> None:
            seen.append(name)

        self.client.add_listener(listener)
        self.protocol.dataReceived(encode(Kind.NOTIFICATION, 173, 3, 0, {"queue": "Sales"}))
        self.protocol.dataReceived(encode(Kind.NOTIFICATION, 300, 7, 0, {}))
        self.client.remove_listener(listener)
        self.protocol.dataReceived(encode(Kind.NOTIFICATION, 173, 3, 0, {}))
        assert seen == ["QueueChanged", "(300,7)"]

    def test_convenience_requests(self) -> None:
        """The convenience methods and the generic request send the right frames."""
        self.client.watch_queue("Sales")
        self.client.unwatch_queue("Sales")
        self.client.get_directory("Company")
        self.client.get_version()
        self.client.request((171, 1), {"status": "Available"})
        assert [(f.object_type, f.event_id, f.body) for f in self.sent()] == [
            (173, 1, {"queue": "Sales"}),
            (173, 2, {"queue": "Sales"}),
            (174, 1, {"name": "Company"}),
            (168, 4, {}),
            (171, 1, {"status": "Available"}),
        ]

    def test_secrets_never_logged(self) -> None:
        """Neither the password nor the resume token appears in any log event."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        d = self.client.logon("alice", "hunter2-password")
        [frame] = self.sent()
        self.answer(frame, LOGON_REPLY)
        self.successResultOf(d)
        self.client.logoff()
        text = repr([dict(e) for e in observer])
        assert {e.get("event") for e in observer} >= {"client.logon", "client.session_open"}
        assert "hunter2-password" not in text
        assert "s3cr3t-token" not in text

    def test_websocket_uri_gets_the_websocket_dialer(self) -> None:
        """Dialing a wss:// URI opens a WebSocket to the URI's path (tested for real in
        test_client_ws.py); here only that the URL it requests is the URI's."""
        from smbridge.client.uri import parse_bridge_uri
        from smbridge.client.ws import websocket_url

        address = parse_bridge_uri("wss://Proxy:9443/x/CIC1/session?a=1")
        assert websocket_url(address) == "wss://proxy:9443/x/CIC1/session?a=1"

    def test_bad_uri_fails_connect(self) -> None:
        """connect fails with ValueError on a bad URI instead of raising."""
        self.failureResultOf(connect(self.clock, "bridge:3952"), ValueError)

"""The Notifier's link protocol over an in-memory transport."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from smbridge.codec.catalog import (
    LINK_AUTHENTICATE,
    LINK_PING,
    LINK_REGISTER,
    LINK_SESSION_OPENED,
    LINK_SUBSCRIBE,
    LINK_UNSUBSCRIBE,
    QUEUE_CHANGED,
    SET_STATUS,
)
from smbridge.codec.frames import Decoder, Frame, Kind, encode
from smbridge.notifier.demo import demo_site
from smbridge.notifier.link import NotifierLink, NotifierLinkFactory
from smbridge.notifier.model import Notifier
from smbridge.testing import SAMPLE_REGISTRATION

SITE = demo_site()
REGISTER = SAMPLE_REGISTRATION


class Harness:
    def __init__(self) -> None:
        self.notifier = Notifier(SITE, Clock())
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 40000))
        self.proto = NotifierLinkFactory(self.notifier).buildProtocol(None)
        self.proto.makeConnection(self.transport)
        self.decoder = Decoder()

    def send(self, raw: bytes, one_byte_at_a_time: bool = False) -> list[Frame]:
        if one_byte_at_a_time:
            for i in range(len(raw)):
                self.proto.dataReceived(raw[i : i + 1])
        else:
            self.proto.dataReceived(raw)
        return self.received()

    def received(self) -> list[Frame]:
        data = self.transport.value()
        self.transport.clear()
        frames = self.decoder.feed(data)
        assert all(isinstance(f, Frame) for f in frames)
        return frames  # type: ignore[return-value]

    def request(self, kind_type: tuple[int, int], rid: int, body: dict[str, Any]) -> Frame:
        (frame,) = self.send(encode(Kind.REQUEST, *kind_type, rid, body))
        return frame

    def registered(self) -> Harness:
        assert self.request(LINK_REGISTER, 1, REGISTER).kind == Kind.RESPONSE
        return self


def test_register_answers_with_site_data() -> None:
    """Register gets a response with the same requestId carrying cic, parameters and roster."""
    h = Harness()
    answer = h.request(LINK_REGISTER, 41, REGISTER)
    assert (answer.kind, answer.object_type, answer.event_id, answer.request_id) == (
        Kind.RESPONSE,
        200,
        1,
        41,
    )
    body = answer.parsed()
    assert body["cic"] == {"name": "cic1", "role": "primary"}
    assert body["roster"][0]["available"] is True
    assert h.notifier.state()["bridges"][0]["peer"] == "10.0.0.7:40000"


@pytest.mark.parametrize("msg", [LINK_AUTHENTICATE, LINK_SUBSCRIBE, LINK_PING, SET_STATUS])
def test_requests_before_register_are_refused(msg: tuple[int, int]) -> None:
    """Any request before Register is answered not-registered and the link stays open."""
    h = Harness()
    answer = h.request(msg, 5, {"user": "agent1", "password": "demo"})
    assert (answer.kind, answer.object_type, answer.event_id, answer.request_id) == (
        Kind.ERROR,
        *msg,
        5,
    )
    assert answer.parsed()["code"] == "not-registered"
    assert h.transport.disconnecting is False


def test_authenticate_good_and_bad() -> None:
    """Authenticate answers the user, or logon-failed with a reason."""
    h = Harness().registered()
    ok = h.request(
        LINK_AUTHENTICATE, 2, {"user": "agent1", "password": "demo", "station": "LON-01"}
    )
    assert ok.kind == Kind.RESPONSE
    assert ok.parsed()["location"] == "London"
    bad = h.request(LINK_AUTHENTICATE, 3, {"user": "agent1", "password": "nope"})
    assert (bad.kind, bad.request_id) == (Kind.ERROR, 3)
    assert bad.parsed() == {
        "code": "logon-failed",
        "message": "wrong user name or password",
        "reason": "bad-credentials",
    }
    missing = h.request(LINK_AUTHENTICATE, 4, {"user": "agent1"})
    assert missing.parsed()["code"] == "bad-request"


def test_subscribe_events_and_unsubscribe() -> None:
    """Subscribe answers the snapshot; events then carry the sub as requestId until Unsubscribe."""
    h = Harness().registered()
    answer = h.request(LINK_SUBSCRIBE, 7, {"topic": "queue:Sales", "sub": 1001})
    assert answer.parsed() == {"snapshot": {"queue": "Sales", "interactions": []}}
    h.notifier.change_queue("Sales", added=[{"id": "c1"}])
    (event,) = h.received()
    assert (event.kind, event.object_type, event.event_id, event.request_id) == (
        Kind.NOTIFICATION,
        *QUEUE_CHANGED,
        1001,
    )
    assert event.parsed()["added"] == [{"id": "c1"}]
    assert h.request(LINK_UNSUBSCRIBE, 8, {"sub": 1001}).parsed() == {}
    h.notifier.change_queue("Sales", removed=["c1"])
    assert h.received() == []


def test_subscribe_unknown_topic() -> None:
    """Subscribing to an unknown topic is answered not-found."""
    h = Harness().registered()
    assert (
        h.request(LINK_SUBSCRIBE, 9, {"topic": "queue:Nope", "sub": 1}).parsed()["code"]
        == "not-found"
    )


def test_ping_and_frames_fed_one_byte_at_a_time() -> None:
    """Ping answers {} even when the request arrives one byte at a time."""
    h = Harness().registered()
    (pong,) = h.send(encode(Kind.REQUEST, *LINK_PING, 77, {}), one_byte_at_a_time=True)
    assert (pong.kind, pong.request_id, pong.payload) == (Kind.RESPONSE, 77, b"")


def test_forwarded_requests() -> None:
    """Forwarded SetStatus is answered with the same type and requestId; unknown types refused."""
    h = Harness().registered()
    ok = h.request(SET_STATUS, 12, {"status": "Away", "_session": {"id": "s", "user": "agent2"}})
    assert (ok.kind, ok.object_type, ok.event_id, ok.request_id) == (Kind.RESPONSE, 171, 1, 12)
    assert ok.parsed() == {"user": "agent2", "status": "Away", "since": 0.0}
    nope = h.request((172, 99), 13, {"_session": {"id": "s", "user": "agent2"}})
    assert (nope.kind, nope.request_id, nope.parsed()["code"]) == (
        Kind.ERROR,
        13,
        "unknown-request",
    )
    link = h.request((200, 99), 14, {})
    assert link.parsed()["code"] == "unknown-request"


def test_session_notifications_are_recorded_without_answer() -> None:
    """SessionOpened is a notification: recorded in state, nothing written back."""
    h = Harness().registered()
    frames = h.send(
        encode(
            Kind.NOTIFICATION,
            *LINK_SESSION_OPENED,
            0,
            {"sessionId": "s1", "user": "agent1", "station": None},
        )
    )
    assert frames == []
    assert [s["sessionId"] for s in h.notifier.state()["sessions"]] == ["s1"]


def test_bad_frame_answers_and_closes() -> None:
    """A bad version gets error bad-frame echoing the requestId, then the link closes."""
    h = Harness().registered()
    raw = bytearray(encode(Kind.REQUEST, *LINK_PING, 55, {}))
    raw[4] = 9
    (err,) = h.send(bytes(raw))
    assert (err.kind, err.request_id, err.parsed()["code"]) == (Kind.ERROR, 55, "bad-frame")
    assert h.transport.disconnecting is True
    assert h.send(encode(Kind.REQUEST, *LINK_PING, 56, {})) == []


def test_connection_lost_drops_subscriptions_and_bridge() -> None:
    """When the link drops its subscriptions go and its bridge is marked disconnected."""
    h = Harness().registered()
    h.request(LINK_SUBSCRIBE, 2, {"topic": "queue:Sales", "sub": 1})
    h.proto.connectionLost(Failure(ConnectionError("gone")))
    assert h.notifier.subscriber_count("queue:Sales") == 0
    assert h.notifier.state()["bridges"][0]["connected"] is False


def test_unexpected_exception_is_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in the core becomes an internal-error answer and a logged failure."""
    h = Harness().registered()
    logged = EventLoggingObserver()
    globalLogPublisher.addObserver(logged)

    def boom(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(h.notifier, "authenticate", boom)
    try:
        answer = h.request(LINK_AUTHENTICATE, 6, {"user": "agent1", "password": "demo"})
    finally:
        globalLogPublisher.removeObserver(logged)
    assert (answer.kind, answer.request_id, answer.parsed()["code"]) == (
        Kind.ERROR,
        6,
        "internal-error",
    )
    failures = [e for e in logged if e.get("event") == "notifier.link.internal-error"]
    assert len(failures) == 1
    assert "demo" not in repr({k: v for k, v in failures[0].items() if k != "log_failure"})
    assert isinstance(h.proto, NotifierLink)

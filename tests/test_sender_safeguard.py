"""The memory safeguard under a Clock: suppression, coalescing, suspension and recovery."""

from __future__ import annotations

import json

from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from smbridge.codec import Kind, encode_raw
from smbridge.codec.catalog import (
    DIRECTORY_CHANGED,
    NOTIFICATION_SUPPRESSED,
    QUEUE_CHANGED,
    QUEUE_SUSPENDED,
    QUEUE_UNSUSPENDED,
    STATUS_CHANGED,
    WATCH_QUEUE,
)
from smbridge.sender import parameters as p
from smbridge.sender.sender import MEMORY_CHECK_SECONDS, SUPPRESSED_NOTICE_SECONDS
from smbridge.testing import RouterHarness, decode_all
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory

LIMIT = 10_000


def frame(kind: int, message: tuple[int, int], size: int, rid: int = 0, **body: str) -> bytes:
    """A frame of exactly ``size`` bytes whose JSON payload holds ``body`` plus padding."""
    head = json.dumps(body, separators=(",", ":"))[1:-1]
    head = head + "," if head else ""
    pad = size - 14 - len(head) - len('{"p":""}')
    return encode_raw(kind, *message, rid, ("{" + head + '"p":"' + "x" * pad + '"}').encode())


def setup() -> tuple[RouterHarness, ClientConnectionFactory, ClientConnection, StringTransport]:
    """A bridge with a low memory limit, one paused client holding more than it, one reader."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher, max_held_bytes=1 << 20)
    factory.sender.configure({p.MAX_PRIVATE_BYTES: str(LIMIT), p.SMALL_MESSAGE: "2000"})
    stalled = factory.connection("tls")
    stalled.makeConnection(StringTransport())  # type: ignore[no-untyped-call]
    conn = factory.connection("tls")
    transport = StringTransport()
    conn.makeConnection(transport)  # type: ignore[no-untyped-call]
    stalled.pauseProducing()
    for _ in range(4):
        stalled.send(frame(Kind.NOTIFICATION, STATUS_CHANGED, 3000))
    h.clock.advance(MEMORY_CHECK_SECONDS)  # the held bytes are recounted within a check period
    return h, factory, conn, transport


def received(h: RouterHarness, transport: StringTransport) -> list[tuple[int, int, int, int, dict]]:
    h.clock.advance(0)
    frames = decode_all(transport.value())
    out = [(f.kind, f.object_type, f.event_id, f.request_id, f.body) for f in frames]
    transport.clear()
    return out


def test_the_safeguard_switches_on_above_the_limit_and_off_under_it_with_one_log_each():
    """Held bytes over the limit turn the safeguard on once; back under, off once; both logged."""
    events: list[str] = []

    def observe(e: dict) -> None:
        if str(e.get("event", "")).startswith("sender.safeguard"):
            events.append(e["event"])

    globalLogPublisher.addObserver(observe)
    try:
        h, factory, conn, _ = setup()
        sender = factory.sender
        assert sender.held_bytes() == 12000
        h.clock.advance(MEMORY_CHECK_SECONDS)
        assert sender.safeguard_active and events == ["sender.safeguard_on"]
        assert "send" in conn.__dict__  # every connection takes the guarded path
        assert sender.status()["safeguardActive"] is True
        stalled = next(c for c in factory.connections if c is not conn)
        stalled.resumeProducing()
        stalled.transport.clear()  # type: ignore[union-attr]
        h.clock.advance(MEMORY_CHECK_SECONDS)
        assert not sender.safeguard_active
        assert events == ["sender.safeguard_on", "sender.safeguard_off"]
        assert "send" not in conn.__dict__
        assert sender.status()["safeguardActive"] is False
    finally:
        globalLogPublisher.removeObserver(observe)


def test_small_frames_and_high_priority_frames_pass():
    """While the safeguard is on, frames up to the small limit and high frames go unchanged."""
    h, factory, conn, transport = setup()
    assert factory.sender.safeguard_active
    small = frame(Kind.NOTIFICATION, DIRECTORY_CHANGED, 2000, name="d")
    high = frame(Kind.NOTIFICATION, STATUS_CHANGED, 5000)
    conn.send(small)
    conn.send(high)
    h.clock.advance(0)
    assert transport.value() == small + high
    assert factory.sender.status()["suppressed"]["high"] == {"frames": 0, "bytes": 0}


def test_a_large_response_becomes_server_overloaded_with_the_same_request_id():
    """A large medium response is replaced by error server-overloaded for the same requestId."""
    h, factory, conn, transport = setup()
    conn.send(frame(Kind.RESPONSE, WATCH_QUEUE, 3000, rid=77))
    [(kind, ot, ev, rid, body)] = received(h, transport)
    assert (kind, (ot, ev), rid, body["code"]) == (Kind.ERROR, WATCH_QUEUE, 77, "server-overloaded")
    assert factory.sender.status()["suppressed"]["medium"] == {"frames": 1, "bytes": 3000}


def test_suppressed_notifications_are_coalesced_per_type_per_second_and_flushed_at_recovery():
    """One NotificationSuppressed per session, type and second; the rest are counted and sent."""
    h, factory, conn, transport = setup()
    for _ in range(5):
        conn.send(frame(Kind.NOTIFICATION, DIRECTORY_CHANGED, 3000, name="d"))
    got = received(h, transport)
    assert got == [(Kind.NOTIFICATION, *NOTIFICATION_SUPPRESSED, 0,
                    {"objectType": 174, "eventId": 3, "count": 1})]  # fmt: skip
    h.clock.advance(SUPPRESSED_NOTICE_SECONDS)
    conn.send(frame(Kind.NOTIFICATION, DIRECTORY_CHANGED, 3000, name="d"))
    assert received(h, transport)[0][4]["count"] == 5  # four held back plus this one
    conn.send(frame(Kind.NOTIFICATION, DIRECTORY_CHANGED, 3000, name="d"))
    assert received(h, transport) == []
    stalled = next(c for c in factory.connections if c is not conn)
    stalled.resumeProducing()
    stalled.transport.clear()  # type: ignore[union-attr]
    h.clock.advance(MEMORY_CHECK_SECONDS)
    got = received(h, transport)
    assert got == [(Kind.NOTIFICATION, *NOTIFICATION_SUPPRESSED, 0,
                    {"objectType": 174, "eventId": 3, "count": 1})]  # fmt: skip
    assert factory.sender.status()["suppressed"]["low"]["frames"] == 7
    mine = factory.sender.session_status(conn)  # per session too, and only this session's
    assert (mine["suppressedFrames"], mine["suppressedBytes"]) == (7, 21000)
    assert factory.sender.session_status(stalled)["suppressedFrames"] == 0


def test_queue_updates_suspend_the_queue_once_and_recovery_sends_a_fresh_snapshot():
    """A large QueueChanged suspends its queue once; recovery unsuspends and sends a snapshot."""
    h, factory, conn, transport = setup()
    snapshot = {"queue": "Sales", "interactions": [{"id": "i1"}, {"id": "i2"}]}
    factory.sender.queue_snapshot = lambda name: snapshot if name == "Sales" else None
    for _ in range(3):
        conn.send(frame(Kind.NOTIFICATION, QUEUE_CHANGED, 3000, queue="Sales"))
    assert received(h, transport) == [(Kind.NOTIFICATION, *QUEUE_SUSPENDED, 0, {"queue": "Sales"})]
    assert factory.sender.status()["suspendedQueues"] == 1
    small = frame(Kind.NOTIFICATION, QUEUE_CHANGED, 500, queue="Sales")
    conn.send(small)  # small frames still pass
    assert received(h, transport)[0][4]["queue"] == "Sales"
    stalled = next(c for c in factory.connections if c is not conn)
    stalled.resumeProducing()
    stalled.transport.clear()  # type: ignore[union-attr]
    h.clock.advance(MEMORY_CHECK_SECONDS)
    assert received(h, transport) == [
        (Kind.NOTIFICATION, *QUEUE_UNSUSPENDED, 0, {"queue": "Sales"}),
        (Kind.NOTIFICATION, *QUEUE_CHANGED, 0,
         {"queue": "Sales", "reset": True, "interactions": [{"id": "i1"}, {"id": "i2"}]}),
    ]  # fmt: skip
    assert factory.sender.status()["suspendedQueues"] == 0
    conn.send(frame(Kind.NOTIFICATION, QUEUE_CHANGED, 3000, queue="Sales"))
    assert received(h, transport)[0][1:3] == QUEUE_CHANGED  # large frames flow again


def test_held_bytes_count_the_limiters_queues_too():
    """Bytes waiting in the limiter's queues count toward the safeguard as well as held frames."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    sender = factory.sender
    errors = sender.configure({p.ENABLED: "Yes", p.TOTAL: "60000", p.INTERVAL: "1000",
                               p.MAX_PRIVATE_BYTES: "100000"})  # fmt: skip
    assert errors == []
    conn = factory.connection("tls")
    conn.makeConnection(StringTransport())  # type: ignore[no-untyped-call]
    for _ in range(5):
        conn.send(frame(Kind.NOTIFICATION, STATUS_CHANGED, 30000))
    # The first two went out at once; the other three wait for the turn's end (the
    # sender's inbox), then in the limiter's queues: held either way.
    assert sender.check_memory() == 90000 + 60000 and sender.safeguard_active
    h.clock.advance(0)  # the two released frames are written; the transport took them
    assert sender.scheduler.queued_bytes == 90000
    assert sender.check_memory() == 90000 and not sender.safeguard_active
    sender.stop()


def test_suppression_is_logged_once_per_session_and_safeguard_episode():
    """The first suppressed frame of a session logs sender.suppressing; the rest do not."""
    events: list[dict] = []

    def observe(e: dict) -> None:
        if e.get("event") == "sender.suppressing":
            events.append(e)

    globalLogPublisher.addObserver(observe)
    try:
        h, factory, conn, transport = setup()
        h.clock.advance(MEMORY_CHECK_SECONDS)
        assert factory.sender.safeguard_active
        for _ in range(3):
            conn.send(frame(Kind.NOTIFICATION, DIRECTORY_CHANGED, 3000, name="d"))
        received(h, transport)
        assert len(events) == 1 and events[0]["remote"] == conn.remote
        assert "session_id" in events[0]
    finally:
        globalLogPublisher.removeObserver(observe)

"""Linger and ResumeSession through the router (PROTOCOL §4.5), against a scripted Notifier."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.session.session import State
from smbridge.testing import RouterHarness
from smbridge.transports.connection import ClientConnectionFactory


def logon(h: RouterHarness, user: str = "agent1", client_id: str = "pc1") -> tuple[Any, Any, dict]:
    """CreateSession with a clientId; answer the Notifier; return (conn, transport, reply)."""
    conn, t = h.client()
    h.send(conn, c.CREATE_SESSION, 1, {"user": user, "password": "demo", "clientId": client_id})
    (auth,) = h.upstream()
    h.notifier.answer(auth, {"user": {"id": user}, "location": "Indianapolis"})
    for frame in h.upstream():
        if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
            h.user_subs[user] = h.serve(frame, {"user": user, "interactions": []})
    (reply,) = h.received(t)
    assert reply.kind == Kind.RESPONSE, reply.parsed()
    return conn, t, reply.parsed()


def watch_sales(h: RouterHarness, conn: Any, t: Any) -> int:
    """WatchQueue Sales; return the subscription id its events use."""
    h.send(conn, c.WATCH_QUEUE, 2, {"queue": "Sales"})
    (sub,) = h.upstream()
    sid = h.serve(sub, {"queue": "Sales", "interactions": []})
    h.received(t)
    return sid


def event(h: RouterHarness, sid: int, n: int) -> None:
    h.notifier.event(c.QUEUE_CHANGED, sid, {"queue": "Sales", "added": [{"id": f"i{n}"}]})


def added(frames: list) -> list[str]:
    return [
        f.parsed()["added"][0]["id"]
        for f in frames
        if (f.object_type, f.event_id) == c.QUEUE_CHANGED and "added" in f.parsed()
    ]


def resume(h: RouterHarness, reply: dict, received: int, kind: str = "tls", **extra: Any):
    conn = h.router_conn(kind) if hasattr(h, "router_conn") else None

    conn = ClientConnectionFactory(h.router, h.batcher).connection(kind)
    t = StringTransport()
    conn.makeConnection(t)
    body = {"sessionId": reply["sessionId"], "resumeToken": reply["resumeToken"]}
    body["received"] = received
    body.update(extra)
    h.send(conn, c.RESUME_SESSION, 9, body)
    return conn, t, h.received(t)


def test_drop_lingers_and_resume_replays_the_missed_notifications():
    """Events sent while the client was away are replayed after the reply, in order, once."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    sid = watch_sales(h, conn, t)
    for n in range(1, 4):
        event(h, sid, n)
    assert added(h.received(t)) == ["i1", "i2", "i3"]
    conn.connectionLost(None)
    session = h.registry.get(reply["sessionId"])
    assert session is not None and session.state is State.LINGERING
    for n in range(4, 7):
        event(h, sid, n)
    _, t2, frames = resume(h, reply, received=2)  # the client saw i1, i2 only
    answer = frames[0]
    assert answer.kind == Kind.RESPONSE and answer.request_id == 9
    body = answer.parsed()
    assert body["resumed"] is True and body["gap"] is False and body["position"] == 2
    assert body["sessionId"] == reply["sessionId"] and body["sessionTimeout"] == 1800
    assert body["heartbeatInterval"] == 300 and body["server"]["name"] == "sm1"
    assert body["cic"] == {"name": "cic1", "role": "primary"} and body["roster"] == [
        {"name": "sm1"}
    ]
    assert "resumeToken" not in body
    assert added(frames[1:]) == ["i3", "i4", "i5", "i6"] and len(frames) == 5
    assert (
        session.state is State.ACTIVE and h.router.counters.get("resumes", outcome="resumed") == 1
    )
    event(h, sid, 7)  # live again, numbered 7
    assert added(h.received(t2)) == ["i7"] and session.replay.count == 7


def test_resume_with_everything_received_replays_nothing():
    """received == sent: just the reply, position unchanged."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    sid = watch_sales(h, conn, t)
    event(h, sid, 1)
    conn.connectionLost(None)
    _, _, frames = resume(h, reply, received=1)
    assert len(frames) == 1 and frames[0].parsed()["position"] == 1


def test_gap_sends_fresh_snapshots_numbered_after_position():
    """Buffer short of the gap: the reply says so and a reset snapshot of each watch follows."""
    h = RouterHarness()
    h.registry.replay_bytes = 200  # the new session keeps about two events
    conn, t, reply = logon(h)
    sid = watch_sales(h, conn, t)
    conn.connectionLost(None)
    for n in range(1, 8):
        event(h, sid, n)
    session = h.registry.get(reply["sessionId"])
    assert session is not None and session.replay.count == 7 and session.replay.first > 1
    _, _, frames = resume(h, reply, received=0)
    body = frames[0].parsed()
    assert body["gap"] is True and body["position"] == 7
    resets = [f for f in frames[1:]]
    keys = [(f.object_type, f.event_id) for f in resets]
    assert keys == [c.QUEUE_CHANGED, c.MY_INTERACTIONS_CHANGED]  # queue:Sales, user:agent1
    sales = resets[0].parsed()
    assert sales["reset"] is True and sales["queue"] == "Sales"
    assert [i["id"] for i in sales["interactions"]] == [f"i{n}" for n in range(1, 8)]
    assert resets[1].parsed() == {"user": "agent1", "interactions": [], "reset": True}
    assert session.replay.count == 9  # the snapshots are numbered 8 and 9
    assert h.router.counters.get("resumes", outcome="gap") == 1


def test_unknown_and_ended_sessions_are_refused():
    """An id the bridge does not hold, or a session already ended, gets unknown-session."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    _, _, frames = resume(h, {**reply, "sessionId": "sm1-0-0000"}, received=0)
    assert frames[0].kind == Kind.ERROR and frames[0].parsed()["code"] == "unknown-session"
    h.send(conn, c.DESTROY_SESSION, 3)
    _, _, frames = resume(h, reply, received=0)
    assert frames[0].parsed()["code"] == "unknown-session"
    assert h.router.counters.get("resumes", outcome="refused") == 2


def test_wrong_token_is_a_logon_failure_and_is_not_logged():
    """A wrong token: logon-failed/bad-resume-token, counted as a failed logon, token not logged."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    conn.connectionLost(None)
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        bad = "A" * len(reply["resumeToken"])
        _, _, frames = resume(h, {**reply, "resumeToken": bad}, received=0)
    finally:
        globalLogPublisher.removeObserver(observer)
    error = frames[0].parsed()
    assert frames[0].kind == Kind.ERROR
    assert (error["code"], error["reason"]) == ("logon-failed", "bad-resume-token")
    assert h.router.counters.get("logon_failures") == 1
    refused = [e for e in observer if e.get("event") == "session.resume_refused"]
    assert len(refused) == 1
    text = repr([dict(e) for e in observer])
    assert bad not in text and reply["resumeToken"] not in text
    assert h.registry.get(reply["sessionId"]).state is State.LINGERING  # still resumable


def test_received_beyond_what_was_sent_is_a_bad_request():
    """received larger than the notification count is refused with bad-request."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    conn.connectionLost(None)
    _, _, frames = resume(h, reply, received=5)
    assert frames[0].parsed()["code"] == "bad-request"
    _, _, frames = resume(h, reply, received=-1)
    assert frames[0].parsed()["code"] == "bad-request"
    _, _, frames = resume(h, reply, received=True)
    assert frames[0].parsed()["code"] == "bad-request"


def test_resume_takes_over_a_still_attached_connection():
    """Resuming while the old connection looks alive closes it and moves the session."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    sid = watch_sales(h, conn, t)
    event(h, sid, 1)
    h.received(t)
    new, t2, frames = resume(h, reply, received=0, kind="ws")
    assert added(frames[1:]) == ["i1"]
    assert t.disconnecting and conn.session is None and new.session is not None
    conn.connectionLost(None)  # the old connection's close arrives: no linger
    session = h.registry.get(reply["sessionId"])
    assert session.state is State.ACTIVE and session.transport == "ws"
    event(h, sid, 2)
    assert added(h.received(t2)) == ["i2"] and t.value().count(b"i2") == 0


def test_resume_on_a_connection_with_a_session_is_refused():
    """A connection that already has a session cannot resume another."""
    h = RouterHarness()
    conn, t, reply = logon(h, "agent1")
    conn2, t2, reply2 = logon(h, "agent2")
    conn.connectionLost(None)
    body = {"sessionId": reply["sessionId"], "resumeToken": reply["resumeToken"], "received": 0}
    h.send(conn2, c.RESUME_SESSION, 4, body)
    (frame,) = h.received(t2)
    assert frame.parsed()["code"] == "session-exists"


def test_linger_expiry_destroys_and_releases_upstream():
    """Not resumed within the linger time: ended 'disconnected', subscriptions released."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    watch_sales(h, conn, t)
    conn.connectionLost(None)
    h.clock.advance(h.registry.linger - 1)
    assert h.upstream() == []
    h.clock.advance(1)
    kinds = [(f.object_type, f.event_id) for f in h.upstream()]
    assert kinds.count(c.LINK_UNSUBSCRIBE) == 2 and c.LINK_SESSION_CLOSED in kinds
    assert len(h.registry) == 0
    assert h.router.counters.get("sessions_ended", reason="disconnected") == 1
    _, _, frames = resume(h, reply, received=0)
    assert frames[0].parsed()["code"] == "unknown-session"


def test_second_logon_of_same_client_replaces_the_lingering_session():
    """CreateSession for the same user and clientId ends the lingering one (logout)."""
    h = RouterHarness()
    conn, t, first = logon(h, client_id="pc1")
    conn.connectionLost(None)
    other, _, third = logon(h, "agent1", client_id="pc2")
    other.connectionLost(None)  # a different client's lingering session stays
    replaced = h.registry.get(first["sessionId"])
    _, _, second = logon(h, client_id="pc1")
    assert h.registry.get(first["sessionId"]) is None and replaced.state is State.CLOSED
    assert replaced.replay.count == 1  # SessionTerminated {logout}, numbered though unread
    assert h.registry.get(third["sessionId"]).state is State.LINGERING
    assert h.registry.get(second["sessionId"]).state is State.ACTIVE
    assert h.router.counters.get("sessions_ended", reason="logout") == 1


def test_every_request_but_get_version_restarts_the_timer():
    """Heartbeat, a forwarded request and ResumeSession move the deadline; GetVersion does not."""
    h = RouterHarness()
    conn, t, reply = logon(h)
    session = h.registry.get(reply["sessionId"])
    start = session.timer.deadline
    h.clock.advance(100)
    h.send(conn, c.GET_VERSION, 5)
    assert session.timer.deadline == start
    h.send(conn, c.HEARTBEAT, 6)
    assert session.timer.deadline == start + 100
    h.clock.advance(50)
    h.send(conn, c.SET_STATUS, 7, {"status": "Away"})
    assert session.timer.deadline == start + 150
    conn.connectionLost(None)
    h.clock.advance(50)
    resume(h, reply, received=0)
    assert session.timer.deadline == start + 200


def test_replay_follows_the_wire_when_the_limiter_holds_and_reorders_frames():
    """Numbering as frames are written keeps resume exact under the limiter's reordering."""
    from smbridge.codec import encode
    from smbridge.sender import parameters as p
    from smbridge.testing import decode_all

    h = RouterHarness()
    conn, t, reply = logon(h)
    sid = watch_sales(h, conn, t)
    conn.factory.sender.configure({p.ENABLED: "Yes", p.TOTAL: "60000", p.INTERVAL: "1000"})
    session = h.registry.get(reply["sessionId"])
    assert session is not None
    for n in range(1, 7):  # six ~20 KB low-priority frames: the budget takes about three
        h.notifier.event(
            c.QUEUE_CHANGED, sid, {"queue": "Sales", "added": [{"id": f"i{n}", "p": "x" * 20000}]}
        )
    h.clock.advance(0)
    session.send(encode(Kind.NOTIFICATION, *c.STATUS_CHANGED, 0, {"user": "agent9", "n": "hi"}))
    h.clock.advance(1.0)  # the next interval: the high frame overtakes the waiting low ones
    got = decode_all(t.value())
    sent_ids = added(got)
    assert 0 < len(sent_ids) < 6  # some low frames still wait...
    assert any(f.object_type == c.STATUS_CHANGED[0] for f in got)  # ...the later high one not
    conn.connectionLost(None)  # the rest was never written: numbered after what was
    _, _, frames = resume(h, reply, received=len(got))
    answer, *replayed = frames
    assert answer.parsed()["gap"] is False and answer.parsed()["position"] == len(got)
    missing = [f"i{n}" for n in range(1, 7) if f"i{n}" not in sent_ids]
    assert added(replayed) == missing  # exactly what the client did not get, in order, once
    assert len(replayed) == len(missing)
